"""How fast a NAC runs, beside the models a user would pick instead at a similar FLOP count.

    python scripts/benchmark_speed.py --preset paper-tiny-imagenet --batch_size 32 --output speed.json
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

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from transformers.hf_argparser import string_to_bool

from nac_hf import NACConfig
from nac_hf.speed import (
    BASELINES, dense_bf16_peak_tflops, example_batch, matched_baseline, measure, nac_model,
)
from nac_hf.training import keep_freed_memory, parse_config_overrides


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
    command = [sys.executable, __file__, "--preset", args.preset, "--batch_size", str(args.batch_size), "--repeats",
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
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
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
