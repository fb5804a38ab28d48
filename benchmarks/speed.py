"""How fast a NAC runs, beside the models a user would pick instead at a similar FLOP count.

    python -m benchmarks.speed --preset paper-tiny-imagenet --batch_size 32 --output speed.json
        [--image_size S] [--config_overrides "stochastic_kernel=false"] [--repeats 5] [--baselines vit,perceiver]
        [--compile] [--keep_freed_memory true]
        [--device cuda --dtype bfloat16 [--peak_tflops T]]

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
step. Each model runs in a fresh process of its own, one after the other, so that its peak memory is its own. With
`--compile`, also the compiled training step. Every process keeps the memory a step frees for the next, as
`scripts/train.py` does on CPUs (`--keep_freed_memory false`: glibc's defaults, which hand it back to the operating
system).

`--config_overrides` changes fields of the NAC's preset, as in `scripts/train.py` (the baselines are sized to the
changed NAC's FLOPs): to time a variant, such as the NAC without its stochastic kernel.

On a GPU (`--device cuda`), each call waits for the device, and the peak GPU memory is reported too. `--dtype
bfloat16` runs the forward passes under `torch.autocast` in bf16 (mixed precision, as `Trainer`'s `--bf16`), the GEMM
rate in bf16; with a peak rate (`--peak_tflops`, by default the data sheet's dense bf16 peak of a known GPU), the model
FLOP utilisation (MFU) of the eval forward and the training step, compiled too with `--compile`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers.hf_argparser import string_to_bool
from transformers import (
    PerceiverConfig,
    PerceiverForImageClassificationLearned,
    ViTConfig,
    ViTForImageClassification,
)

from nac_hf import NACConfig, NACForClassification
from nac_hf.training import keep_freed_memory, parse_config_overrides

from .common import flop_counter_mode, flops_per_example, median_time, timed_turns, train_flops_per_example


BASELINES = ("vit", "perceiver")
# Training steps before the timed ones: the first few run slower (the allocator is still growing its pools).
TRAIN_WARMUP = 3

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


def synchronize(device) -> None:
    """Wait for the device's queued work (a no-op on a CPU, whose operations return when done)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


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


def nac_model(preset: str, image_size: int | None = None, overrides: dict | None = None) -> NACForClassification:
    """A NAC of `preset`, at `image_size` when given, with the config fields in `overrides` changed."""
    fields = {**(overrides or {}), **({"image_size": image_size} if image_size else {})}
    return NACForClassification(NACConfig.from_preset(preset, **fields))


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


def measure(
    model, pixel_values: torch.Tensor, labels: torch.Tensor, repeats: int, compile: bool = False,
    dtype: torch.dtype = torch.float32, peak_tflops: float | None = None,
) -> dict:
    """Eval forward and training step (AdamW, fused, as `Trainer` runs it by default) of `model` on one batch, timed
    in turns after warm-up (`timed_turns`) together with a matrix product of the device in `dtype` (`gemm`), so that
    all three see the same machine: the median seconds of each and the median of the turns' ratio of step to eval, the
    product's median rate, and the eval forward's time over the time its FLOPs would take at the product's rate in
    the same turn (median over the turns; 1 would be the GEMM's rate). Also the FLOPs per example and achieved GFLOP/s
    of both, the step in its parts (its forward pass in training mode and its backward pass, timed apart in every eager
    step of the turns: medians, and the median ratio of the two), the process's peak resident memory (after the warm-up
    steps, before the product's matrices are made) and the memory faulted in per training step (averaged over the
    warm-up and all later steps, the product's matrices left out). With `compile`, the training step of
    `torch.compile(model)` too (its first call, the compilation, reported apart).

    The model and the batch are on one device; on a GPU each call waits for the device's work, and its peak memory is
    reported too. `dtype` other than float32: forward passes under `torch.autocast` in that dtype (mixed precision,
    as `Trainer`'s `--bf16`). `peak_tflops`: the device's peak rate in that dtype, against which the model FLOP
    utilisation (MFU) of both is reported."""
    device = pixel_values.device

    def precision():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    with precision():
        flops = flops_per_example(model, pixel_values)  # per example at this batch: a NAC modulates once per batch
        train_flops = train_flops_per_example(model, pixel_values, labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # Trainer's adamw_torch_fused

    def evaluate():
        model.eval()
        with torch.no_grad(), precision():
            model(pixel_values=pixel_values)
        synchronize(device)

    parts = []  # (forward, backward) seconds of each eager training step

    def train_step(forward=model):
        model.train()
        start = time.perf_counter()
        with precision():
            loss = forward(pixel_values=pixel_values, labels=labels).loss
        synchronize(device)
        middle = time.perf_counter()
        loss.backward()
        synchronize(device)
        if forward is model:
            parts.append((middle - start, time.perf_counter() - middle))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)

    evaluate()
    faults_before = minor_page_faults()
    for _ in range(TRAIN_WARMUP):
        train_step()
    # The model's peak memory, and the memory the product's matrices fault in once: neither counts the matrices.
    peak = {"peak_rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        peak["peak_device_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    gemm_faults = minor_page_faults()
    matmul, matmul_flops = gemm(device, dtype)
    gemm_faults = minor_page_faults() - gemm_faults
    # In turns, so that a slower spell of the machine slows all three: ratios are medians of the turns' ratios.
    parts.clear()
    turns = timed_turns((train_step, evaluate, matmul), repeats, warmup=0, block=1)
    steps = TRAIN_WARMUP + 2 * repeats  # each turn runs one untimed call of each before the timed one
    faulted = (minor_page_faults() - faults_before - gemm_faults) * resource.getpagesize() / 2**20 / steps
    batch = len(pixel_values)
    train_s, eval_s = (statistics.median(turn[index] for turn in turns) for index in (0, 1))
    result = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(dtype).removeprefix("torch."),
        "eval_s": eval_s,
        "train_s": train_s,
        "train_over_eval": statistics.median(train / evaluation for train, evaluation, _ in turns),
        "gflop_per_example": flops / 1e9,
        "eval_gflops": flops * batch / eval_s / 1e9,
        "gemm_gflops": statistics.median(matmul_flops / product for _, _, product in turns) / 1e9,
        # the eval forward's time over its FLOPs' time at the product's rate in the same turn: 1 at the GEMM's rate
        "eval_over_gemm_bound": statistics.median(
            evaluation / (flops * batch / (matmul_flops / product)) for _, evaluation, product in turns
        ),
        # the training step's FLOPs (forward and backward) over the eval forward's: what the time ratio would be if
        # the step ran at the forward's rate
        "train_gflop_per_example": train_flops / 1e9,
        "train_over_eval_flops": train_flops / flops,
        "train_gflops": train_flops * batch / train_s / 1e9,
        # the step in its parts: the forward pass in training mode (with what only training does, such as sampling)
        # and the backward pass, whose FLOPs are the step's less the forward's (train_over_eval_flops − 1)
        "train_forward_s": statistics.median(forward for forward, _ in parts),
        "backward_s": statistics.median(backward for _, backward in parts),
        "backward_over_train_forward": statistics.median(backward / forward for forward, backward in parts),
        **peak,
        # memory faulted in afresh per training step, warm-up included (first touches of pages from the system); the
        # eval passes between them fault next to nothing
        "train_page_faults_mb": faulted,
    }
    if compile:
        compiled = torch.compile(model)
        start = time.perf_counter()
        train_step(compiled)
        result["compile_s"] = time.perf_counter() - start
        result["train_compiled_s"] = median_time(lambda: train_step(compiled), repeats, warmup=TRAIN_WARMUP)
        result["train_compiled_gflops"] = train_flops * batch / result["train_compiled_s"] / 1e9
    if peak_tflops:
        result["peak_tflops"] = peak_tflops
        for key in ("eval", "train", "train_compiled"):
            if f"{key}_gflops" in result:
                result[f"{key}_mfu"] = result[f"{key}_gflops"] / (peak_tflops * 1e3)
    return result


def minor_page_faults() -> int:
    """Minor page faults of this process so far: each a page the system hands it (zeroed) on its first touch."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def measure_one(args) -> dict:
    if args.keep_freed_memory:  # as scripts/train.py does on CPUs
        keep_freed_memory()
    torch.manual_seed(0)
    nac = nac_model(args.preset, args.image_size, parse_config_overrides(args.config_overrides))
    config = nac.config
    pixels, labels = (t.to(args.device) for t in example_batch(config, args.batch_size, config.image_size))
    dtype = getattr(torch, args.dtype)

    def timed(model) -> dict:
        return measure(model.to(args.device), pixels, labels, args.repeats, args.compile, dtype, args.peak_tflops)

    if args.model == "nac":
        changed = f" ({args.config_overrides})" if args.config_overrides else ""
        return {"model": f"NAC {args.preset}{changed}", **timed(nac)}
    target = args.target_gflop * 1e9
    del nac
    model, layers = matched_baseline(args.model, target, config.num_labels, config.num_channels, config.image_size,
                                     config.patch_size)
    name = {"vit": "ViTForImageClassification", "perceiver": "PerceiverForImageClassificationLearned"}[args.model]
    return {"model": f"{name}, {layers} layers", **timed(model)}


def child(args, model: str, target_gflop: float | None = None) -> dict:
    command = [sys.executable, "-m", "benchmarks.speed", "--preset", args.preset, "--batch_size", str(args.batch_size), "--repeats",
               str(args.repeats), "--model", model]
    if args.image_size:
        command += ["--image_size", str(args.image_size)]
    if args.config_overrides:
        command += ["--config_overrides", args.config_overrides]
    if target_gflop is not None:
        command += ["--target_gflop", str(target_gflop)]
    if args.compile:
        command.append("--compile")
    command += ["--device", args.device, "--dtype", args.dtype]
    if args.peak_tflops:
        command += ["--peak_tflops", str(args.peak_tflops)]
    command += ["--keep_freed_memory", str(args.keep_freed_memory).lower()]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ, cwd=Path(__file__).parents[1])
    if done.returncode != 0:
        raise SystemExit(f"measuring {model} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper-tiny-imagenet")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=None, help="Default: the preset's.")
    parser.add_argument(
        "--config_overrides", default="",
        help='NAC config fields to change, as in scripts/train.py, e.g. "stochastic_kernel=false".',
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baselines", default=",".join(BASELINES), help="Comma-separated, or empty for none.")
    parser.add_argument("--compile", action="store_true", help="Also time the torch.compile'd training step.")
    parser.add_argument("--output", default=None, help="Write the results as JSON here.")
    parser.add_argument(
        "--keep_freed_memory", type=string_to_bool, default=True, metavar="{true,false}",
        help="Keep the memory a step frees for the next, in every model's process, as scripts/train.py does on CPUs "
        "(nac_hf.training.keep_freed_memory); false: glibc's defaults.",
    )
    parser.add_argument("--device", default="cpu", help="cpu, or a GPU such as cuda or cuda:0.")
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"],
        help="bfloat16: forward passes under torch.autocast in bf16 (mixed precision, as Trainer's --bf16).",
    )
    parser.add_argument(
        "--peak_tflops", type=float, default=None,
        help="The device's peak rate in --dtype, for the model FLOP utilisation (MFU). Default: on a GPU in bf16, its "
        "data sheet's dense peak when nac_hf.speed.DENSE_BF16_PEAK_TFLOPS knows it.",
    )
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)  # one model, in a child process
    parser.add_argument("--target_gflop", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:  # a bad preset or field is named here, before any model is built
        NACConfig.from_preset(args.preset, **parse_config_overrides(args.config_overrides))
    except ValueError as error:
        parser.error(str(error))
    on_gpu = torch.device(args.device).type == "cuda"
    if on_gpu and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no GPU here (torch.cuda.is_available() is False)")
    if args.peak_tflops is None and on_gpu and args.dtype == "bfloat16":
        args.peak_tflops = dense_bf16_peak_tflops(torch.cuda.get_device_name(args.device))
    if args.model is not None:
        print(json.dumps(measure_one(args)))
        return 0
    baselines = [name for name in args.baselines.split(",") if name]
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        parser.error(f"unknown baselines {unknown}; choose from {list(BASELINES)}")
    result = {
        "preset": args.preset,
        "config_overrides": args.config_overrides,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(args.device) if on_gpu else "cpu",
        "dtype": args.dtype,
        "keep_freed_memory": args.keep_freed_memory,
    }
    result.update(child(args, "nac"))
    result["baselines"] = [child(args, name, result["gflop_per_example"]) for name in baselines]
    rows = [result, *result["baselines"]]
    print(f"{args.dtype} on {result['device']} ({result['threads']} CPU threads), batch {args.batch_size}; each model's "
          f"GEMM rate timed in turns with it")
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
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
