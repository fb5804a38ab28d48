"""python -m benchmarks.speed --preset paper-tiny-imagenet --batch_size 32 --output speed.json
    [--image_size S] [--config_overrides "stochastic_kernel=false"] [--repeats 5] [--baselines vit,perceiver]
    [--compile] [--keep_freed_memory true] [--device cuda --dtype bfloat16 [--peak_tflops T]]

How fast a NAC runs, beside the models a user would pick instead at a similar FLOP count.

In one run, for the NAC and each baseline (transformers' `ViTForImageClassification`, 384 wide, patch = the preset's
patch size, and `PerceiverForImageClassificationLearned`, 256 latents of 384; each with the number of layers whose
FLOPs per example come closest to the NAC's): the median eval forward and training step (forward, backward, AdamW as
`Trainer` runs it), timed in `--repeats` turns after a warm-up (their ratio: the median of the turns' ratios)
together with the machine's GEMM rate (a 2048³ matmul on a CPU, 8192³ on a GPU, in --dtype) and the eval forward's
time over the time its FLOPs would take at that rate (in each turn, median); the FLOPs per example of both
(`FlopCounterMode`, the training step's without the optimizer's elementwise update) and their ratio, which is what the
time ratio would be if the step ran at the forward's rate; the step in its parts (its forward pass in training mode
against the eval forward, its backward pass against that forward, in time and in FLOPs, the training forward's FLOPs
taken as the eval forward's); achieved GFLOP/s of both, peak resident memory and the memory faulted in per training
step. `FIGURES` names each figure of a model's entry in the results. Each model runs in a fresh process of its own,
one after the other, so that its peak memory is its own. With `--compile`, also the compiled training step. Every
process keeps the memory a step frees for the next, as `scripts/train.py` does on CPUs (`--keep_freed_memory false`:
glibc's defaults, which hand it back to the operating system).

`--config_overrides` changes fields of the NAC's preset, as in `scripts/train.py` (the baselines are sized to the
changed NAC's FLOPs): to time a variant, such as the NAC without its stochastic kernel.

On a GPU (`--device cuda`), each call waits for the device, and the peak GPU memory is reported too. `--dtype
bfloat16` runs the forward passes under `torch.autocast` in bf16 (mixed precision, as `Trainer`'s `--bf16`), the GEMM
rate in bf16; with a peak rate (`--peak_tflops`, by default the data sheet's dense bf16 peak of a known GPU), the model
FLOP utilisation (MFU) of the eval forward and the training step, compiled too with `--compile`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    PerceiverConfig,
    PerceiverForImageClassificationLearned,
    ViTConfig,
    ViTForImageClassification,
)

from nac_hf import NACConfig, NACForClassification
from nac_hf.training import keep_freed_memory, parse_config_overrides

from .common import (
    argument_parser,
    flops_per_example,
    median_time,
    synchronize,
    timed_turns,
    train_flops_per_example,
    write_json,
)


BASELINES = ("vit", "perceiver")
# Training steps before the timed ones: the first few run slower (the allocator is still growing its pools).
TRAIN_WARMUP = 3

# The figures of each model's entry in the results (the NAC's at the top level, each baseline's in "baselines").
# Only some runs add: with --compile `compile_s` (the first call), `train_compiled_s` and `train_compiled_gflops`; on a
# GPU `peak_device_mb`; with a peak rate `peak_tflops` and the model FLOP utilisation `eval_mfu`, `train_mfu` (and
# `train_compiled_mfu`), fractions of that rate.
FIGURES = {
    "model": "the model, a baseline with its number of layers",
    "parameters": "its parameter count",
    "dtype": "float32, or the dtype of torch.autocast",
    "eval_s": "median seconds of an eval forward of the batch",
    "train_s": "median seconds of a training step (forward, backward, AdamW)",
    "train_over_eval": "median over the turns of the step's time over the eval forward's",
    "gflop_per_example": "GFLOPs of the eval forward per example",
    "eval_gflops": "achieved GFLOP/s of the eval forward",
    "gemm_gflops": "the device's matmul rate in the same turns, GFLOP/s",
    "eval_over_gemm_bound": "the eval forward's time over its FLOPs' time at the matmul's rate (median of the turns)",
    "train_gflop_per_example": "GFLOPs of a training step per example (forward and backward)",
    "train_over_eval_flops": "the step's FLOPs over the eval forward's: the time ratio at the forward's rate",
    "train_gflops": "achieved GFLOP/s of the training step",
    "train_forward_s": "median seconds of the step's forward pass (training mode)",
    "backward_s": "median seconds of the step's backward pass",
    "backward_over_train_forward": "median ratio of the two",
    "peak_rss_mb": "peak resident memory of the model's process after the warm-up steps, MiB",
    "train_page_faults_mb": "memory faulted in afresh per training step, MiB",
}


@dataclass
class SpeedArguments:
    preset: str = field(default="paper-tiny-imagenet", metadata={"help": "The NAC's NACConfig preset."})
    batch_size: int = field(default=32, metadata={"help": "Examples per forward and training step."})
    image_size: int | None = field(default=None, metadata={"help": "Default: the preset's."})
    config_overrides: str = field(
        default="", metadata={"help": 'NAC config fields to change, as in scripts/train.py: "stochastic_kernel=false".'}
    )
    repeats: int = field(default=5, metadata={"help": "Timed turns."})
    baselines: str = field(default=",".join(BASELINES), metadata={"help": "Comma-separated, or empty for none."})
    compile: bool = field(default=False, metadata={"help": "Also time the torch.compile'd training step."})
    output: str | None = field(default=None, metadata={"help": "Write the results as JSON here."})
    keep_freed_memory: bool = field(
        default=True,
        metadata={"help": "Keep the memory a step frees for the next, in every model's process, as scripts/train.py "
                          "does on CPUs (nac_hf.training.keep_freed_memory); false: glibc's defaults."},
    )
    device: str = field(default="cpu", metadata={"help": "cpu, or a GPU such as cuda or cuda:0."})
    dtype: Literal["float32", "bfloat16"] = field(
        default="float32",
        metadata={"help": "bfloat16: forward passes under torch.autocast in bf16 (mixed precision, as --bf16)."},
    )
    peak_tflops: float | None = field(
        default=None,
        metadata={"help": "The device's peak rate in --dtype, for the model FLOP utilisation (MFU). Default: on a GPU "
                          "in bf16, its data sheet's dense peak when benchmarks.speed.DENSE_BF16_PEAK_TFLOPS knows it."},
    )
    # What the run passes to the process of each model.
    model: str | None = field(default=None, metadata={"help": argparse.SUPPRESS})
    target_gflop: float | None = field(default=None, metadata={"help": argparse.SUPPRESS})


def gemm(device, dtype: torch.dtype = torch.float32) -> tuple[Callable[[], None], float]:
    """A square matrix product in `dtype` that shows the device's matmul rate (2048³ on a CPU, 8192³ on a GPU, which
    reaches its rate only on larger products), as a call that waits for it, and its FLOPs."""
    size = 2048 if torch.device(device).type == "cpu" else 8192
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    product = a @ b  # written again by every call: the calls allocate nothing

    def matmul():
        torch.matmul(a, b, out=product)
        synchronize(device)

    return matmul, 2.0 * size**3


# Dense (not sparse) bf16 tensor-core peaks of the GPUs in NVIDIA's data sheets, in TFLOP/s, by a part of the name
# `torch.cuda.get_device_name` gives: what the model FLOP utilisation (MFU) of a bf16 run is measured against.
DENSE_BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "H200 NVL": 835.0, "H200": 989.4}


def dense_bf16_peak_tflops(device_name: str) -> float | None:
    """The data sheet's dense bf16 peak of a GPU named `device_name` (the first entry whose key it contains), or None
    for a device not in `DENSE_BF16_PEAK_TFLOPS`."""
    return next((peak for part, peak in DENSE_BF16_PEAK_TFLOPS.items() if part in device_name), None)


def example_batch(config, batch_size: int, image_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch_size, config.num_channels, image_size, image_size, generator=generator)
    return pixels, torch.randint(0, config.num_labels, (batch_size,), generator=generator)


def nac_config(preset: str, image_size: int | None = None, overrides: dict | None = None) -> NACConfig:
    """The config of `preset`, at `image_size` when given, with the fields in `overrides` changed."""
    fields = {**(overrides or {}), **({"image_size": image_size} if image_size else {})}
    return NACConfig.from_preset(preset, **fields)


def nac_model(preset: str, image_size: int | None = None, overrides: dict | None = None) -> NACForClassification:
    """A NAC of `preset`, at `image_size` when given, with the config fields in `overrides` changed."""
    return NACForClassification(nac_config(preset, image_size, overrides))


def vit_model(num_labels: int, num_channels: int, image_size: int, patch_size: int, num_layers: int):
    """A ViT-S-wide model (384 wide, 6 heads, MLP 4×) of `num_layers` layers."""
    config = ViTConfig(
        image_size=image_size, patch_size=patch_size, num_channels=num_channels, hidden_size=384,
        num_hidden_layers=num_layers, num_attention_heads=6, intermediate_size=1536, num_labels=num_labels,
    )
    return ViTForImageClassification(config)


def perceiver_model(num_labels: int, num_channels: int, image_size: int, num_layers: int):
    """transformers' Perceiver with learned positions: 256 latents of 384, `num_layers` latent self-attention layers."""
    if num_channels != 3:
        raise ValueError("PerceiverForImageClassificationLearned reads RGB images (num_channels=3)")
    config = PerceiverConfig(
        num_latents=256, d_latents=384, num_blocks=1, num_self_attends_per_block=num_layers,
        num_self_attention_heads=6, num_cross_attention_heads=1, image_size=image_size, num_labels=num_labels,
    )
    return PerceiverForImageClassificationLearned(config)


def matched_baseline(name: str, target_flops: float, num_labels: int, num_channels: int, image_size: int,
                     patch_size: int):
    """The baseline `name` with the number of layers whose FLOPs per example come closest to `target_flops`."""

    def build(layers: int):
        if name == "vit":
            return vit_model(num_labels, num_channels, image_size, patch_size, layers)
        return perceiver_model(num_labels, num_channels, image_size, layers)

    pixels = torch.randn(1, num_channels, image_size, image_size)
    one, two = (flops_per_example(build(layers), pixels) for layers in (1, 2))
    layers = max(1, round(1 + (target_flops - one) / max(two - one, 1.0)))
    return build(layers), layers


class Workload:
    """The eval forward and the training step (AdamW, fused, as `Trainer` runs it by default) of a model on one batch,
    as calls that wait for the device. `dtype` other than float32: forward passes under `torch.autocast` in that
    dtype. Every eager training step records the seconds of its forward and of its backward pass in `parts`."""

    def __init__(self, model, pixel_values: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype):
        self.model, self.pixel_values, self.labels, self.dtype = model, pixel_values, labels, dtype
        self.device = pixel_values.device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # Trainer's adamw_torch_fused
        self.parts: list[tuple[float, float]] = []

    def precision(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def evaluate(self) -> None:
        self.model.eval()
        with torch.no_grad(), self.precision():
            self.model(pixel_values=self.pixel_values)
        synchronize(self.device)

    def train_step(self, model=None) -> None:
        """One step of `model` (default: the model itself; a compiled one is not split into parts)."""
        self.model.train()
        start = time.perf_counter()
        with self.precision():
            loss = (self.model if model is None else model)(pixel_values=self.pixel_values, labels=self.labels).loss
        synchronize(self.device)
        middle = time.perf_counter()
        loss.backward()
        synchronize(self.device)
        if model is None:
            self.parts.append((middle - start, time.perf_counter() - middle))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        synchronize(self.device)


def minor_page_faults() -> int:
    """Minor page faults of this process so far: each a page the system hands it (zeroed) on its first touch."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def timed_beside_gemm(work: Workload, repeats: int) -> tuple[list, float, dict]:
    """The training step, the eval forward and the device's matrix product timed in turns after warm-up
    (`timed_turns`), so that all three see the same machine: the turns, the product's FLOPs, and the memory figures
    (the peak after the warm-up steps, the memory faulted in per step), neither counting the product's matrices."""
    work.evaluate()
    faults_before = minor_page_faults()
    for _ in range(TRAIN_WARMUP):
        work.train_step()
    memory = {"peak_rss_mb": peak_rss_mb()}
    if work.device.type == "cuda":
        memory["peak_device_mb"] = torch.cuda.max_memory_allocated(work.device) / 2**20
    gemm_faults = minor_page_faults()
    matmul, matmul_flops = gemm(work.device, work.dtype)
    gemm_faults = minor_page_faults() - gemm_faults
    work.parts.clear()
    turns = timed_turns((work.train_step, work.evaluate, matmul), repeats, warmup=0, block=1)
    steps = TRAIN_WARMUP + 2 * repeats  # each turn runs one untimed call of each before the timed one
    faulted = minor_page_faults() - faults_before - gemm_faults
    # memory faulted in afresh per training step, warm-up included; the eval passes between them fault next to nothing
    memory["train_page_faults_mb"] = faulted * resource.getpagesize() / 2**20 / steps
    return turns, matmul_flops, memory


def rates(turns: list, parts: list, matmul_flops: float, flops: float, train_flops: float, batch: int) -> dict:
    """The times, ratios and rates of `FIGURES` from the turns (train step, eval forward, product) and the steps'
    parts; `flops` and `train_flops` per example."""
    train_s, eval_s = (statistics.median(turn[index] for turn in turns) for index in (0, 1))
    return {
        "eval_s": eval_s,
        "train_s": train_s,
        "train_over_eval": statistics.median(train / evaluation for train, evaluation, _ in turns),
        "gflop_per_example": flops / 1e9,
        "eval_gflops": flops * batch / eval_s / 1e9,
        "gemm_gflops": statistics.median(matmul_flops / product for _, _, product in turns) / 1e9,
        "eval_over_gemm_bound": statistics.median(
            evaluation / (flops * batch / (matmul_flops / product)) for _, evaluation, product in turns
        ),
        "train_gflop_per_example": train_flops / 1e9,
        "train_over_eval_flops": train_flops / flops,
        "train_gflops": train_flops * batch / train_s / 1e9,
        # the step's forward pass in training mode (with what only training does, such as sampling) and its backward
        # pass, whose FLOPs are the step's less the forward's (train_over_eval_flops − 1)
        "train_forward_s": statistics.median(forward for forward, _ in parts),
        "backward_s": statistics.median(backward for _, backward in parts),
        "backward_over_train_forward": statistics.median(backward / forward for forward, backward in parts),
    }


def measure(
    model, pixel_values: torch.Tensor, labels: torch.Tensor, repeats: int, compile: bool = False,
    dtype: torch.dtype = torch.float32, peak_tflops: float | None = None,
) -> dict:
    """The figures of `FIGURES` (all but the model's name) of `model` on one batch: its eval forward and training step
    timed in turns beside the device's matrix product in `dtype` (`timed_beside_gemm`), their FLOPs per example
    (counted first; counting leaves no gradients) and memory. With `compile`, the training step of
    `torch.compile(model)` too (its first call, the compilation, reported apart); with `peak_tflops` (the device's
    peak rate in `dtype`), the model FLOP utilisation of each. The model and the batch are on one device."""
    work = Workload(model, pixel_values, labels, dtype)
    with work.precision():
        flops = flops_per_example(model, pixel_values)  # per example at this batch: a NAC modulates once per batch
        train_flops = train_flops_per_example(model, pixel_values, labels)
    turns, matmul_flops, memory = timed_beside_gemm(work, repeats)
    batch = len(pixel_values)
    result = {"parameters": sum(p.numel() for p in model.parameters()), "dtype": str(dtype).removeprefix("torch."),
              **rates(turns, work.parts, matmul_flops, flops, train_flops, batch), **memory}
    if compile:
        compiled = torch.compile(model)
        start = time.perf_counter()
        work.train_step(compiled)
        result["compile_s"] = time.perf_counter() - start
        result["train_compiled_s"] = median_time(lambda: work.train_step(compiled), repeats, warmup=TRAIN_WARMUP)
        result["train_compiled_gflops"] = train_flops * batch / result["train_compiled_s"] / 1e9
    if peak_tflops:
        result["peak_tflops"] = peak_tflops
        for key in ("eval", "train", "train_compiled"):
            if f"{key}_gflops" in result:
                result[f"{key}_mfu"] = result[f"{key}_gflops"] / (peak_tflops * 1e3)
    return result


def measure_one(args: SpeedArguments) -> dict:
    """The entry of one model (`args.model`), in this process: the NAC, or a baseline sized to `args.target_gflop`."""
    if args.keep_freed_memory:  # as scripts/train.py does on CPUs
        keep_freed_memory()
    torch.manual_seed(0)
    config = nac_config(args.preset, args.image_size, parse_config_overrides(args.config_overrides))
    pixels, labels = (t.to(args.device) for t in example_batch(config, args.batch_size, config.image_size))
    dtype = getattr(torch, args.dtype)

    def timed(model) -> dict:
        return measure(model.to(args.device), pixels, labels, args.repeats, args.compile, dtype, args.peak_tflops)

    if args.model == "nac":
        changed = f" ({args.config_overrides})" if args.config_overrides else ""
        return {"model": f"NAC {args.preset}{changed}", **timed(NACForClassification(config))}
    model, layers = matched_baseline(args.model, args.target_gflop * 1e9, config.num_labels, config.num_channels,
                                     config.image_size, config.patch_size)
    name = {"vit": "ViTForImageClassification", "perceiver": "PerceiverForImageClassificationLearned"}[args.model]
    return {"model": f"{name}, {layers} layers", **timed(model)}


def command_line(args: SpeedArguments) -> list[str]:
    """The flags that give `args` again."""
    flags = []
    for name, value in dataclasses.asdict(args).items():
        if value is not None:
            flags += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
    return flags


def child(args: SpeedArguments, model: str, target_gflop: float | None = None) -> dict:
    """The entry of `model`, measured in a fresh process of its own."""
    one = dataclasses.replace(args, model=model, target_gflop=target_gflop, output=None)
    command = [sys.executable, "-m", "benchmarks.speed", *command_line(one)]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ, cwd=Path(__file__).parents[1])
    if done.returncode != 0:
        raise SystemExit(f"measuring {model} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check(parser, args: SpeedArguments) -> list[str]:
    """Refuse what cannot run, before any model is built; the baselines to measure. Fills in the peak rate of a known
    GPU in bf16."""
    try:
        NACConfig.from_preset(args.preset, **parse_config_overrides(args.config_overrides))
    except ValueError as error:
        parser.error(str(error))
    on_gpu = torch.device(args.device).type == "cuda"
    if on_gpu and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no GPU here (torch.cuda.is_available() is False)")
    if args.peak_tflops is None and on_gpu and args.dtype == "bfloat16":
        args.peak_tflops = dense_bf16_peak_tflops(torch.cuda.get_device_name(args.device))
    baselines = [name for name in args.baselines.split(",") if name]
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        parser.error(f"unknown baselines {unknown}; choose from {list(BASELINES)}")
    return baselines


def print_tables(result: dict) -> None:
    """The Markdown tables of the NAC and its baselines, and what only some runs measure."""
    rows = [result, *result["baselines"]]
    print(f"{result['dtype']} on {result['device']} ({result['threads']} CPU threads), batch {result['batch_size']}; "
          f"each model's GEMM rate timed in turns with it")
    print("| model | params | GFLOP/example | eval s | train step s | train / eval | train / eval FLOPs | "
          "eval GFLOP/s | train GFLOP/s | GEMM GFLOP/s | eval / GEMM bound | peak MiB | faulted MiB / step |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['parameters'] / 1e6:.2f} M | {row['gflop_per_example']:.2f} | "
              f"{row['eval_s']:.3f} | {row['train_s']:.3f} | {row['train_over_eval']:.2f} | "
              f"{row['train_over_eval_flops']:.2f} | {row['eval_gflops']:.1f} | {row['train_gflops']:.1f} | "
              f"{row['gemm_gflops']:.0f} | {row['eval_over_gemm_bound']:.2f} | {row['peak_rss_mb']:.0f} | "
              f"{row['train_page_faults_mb']:.0f} |")
    print("\n| model | train forward s | backward s | train forward / eval | backward / train forward | "
          "backward / forward FLOPs |")
    print("|---|---|---|---|---|---|")
    for row in rows:  # the step in its parts; the training forward's FLOPs taken as the eval forward's
        print(f"| {row['model']} | {row['train_forward_s']:.3f} | {row['backward_s']:.3f} | "
              f"{row['train_forward_s'] / row['eval_s']:.2f} | {row['backward_over_train_forward']:.2f} | "
              f"{row['train_over_eval_flops'] - 1:.2f} |")
    for row in rows:  # what only some runs measure
        extra = [f"{name} {row[key]:{form}}{unit}" for key, name, form, unit in (
            ("train_compiled_s", "compiled step", ".3f", " s"), ("compile_s", "compilation", ".0f", " s"),
            ("eval_mfu", "eval MFU", ".1%", ""), ("train_mfu", "train MFU", ".1%", ""),
            ("train_compiled_mfu", "compiled train MFU", ".1%", ""),
            ("peak_device_mb", "peak GPU memory", ".0f", " MiB"),
        ) if key in row]
        if extra:
            print(f"{row['model']}: " + ", ".join(extra))


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, SpeedArguments)
    (args,) = parser.parse_args_into_dataclasses(argv)
    baselines = check(parser, args)
    if args.model is not None:
        print(json.dumps(measure_one(args)))
        return 0
    on_gpu = torch.device(args.device).type == "cuda"
    result = {
        "preset": args.preset,
        "config_overrides": args.config_overrides,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(args.device) if on_gpu else "cpu",
        "dtype": args.dtype,
        "keep_freed_memory": args.keep_freed_memory,
        **child(args, "nac"),
    }
    result["baselines"] = [child(args, name, result["gflop_per_example"]) for name in baselines]
    print_tables(result)
    if args.output:
        write_json(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
