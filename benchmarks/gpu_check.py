"""python -m benchmarks.gpu_check --output_dir DIR [--steps tests,train,speed] [--train_steps 300]
    [--speed_preset paper-tiny-imagenet] [--speed_batch_size 32] [--speed_baselines vit]

The checks that need a CUDA GPU, in one command, sized to finish in under 8 minutes on one H100 (an estimate, not yet
measured; the steps' time limits allow 11 minutes in all):

1. `tests`: `python -m pytest tests/test_cuda.py` with NAC_REQUIRE_CUDA=1, so that a missing GPU fails the tests
   instead of skipping them: the model on the GPU computes the CPU's function with its gradients, trains in bf16,
   compiles to one graph, and the speed benchmark runs there. Results in DIR/test_cuda.xml (JUnit).
2. `train`: a short bf16 + `torch.compile` training of the CIFAR recipe (`scripts/train.py --recipe cifar`) on synthetic CIFAR-shaped data written to DIR/synthetic-cifar
   (32×32 RGB images, 10 labels, each label's images tinted by a colour of its own, so that they can be told apart);
   the run's folder is DIR/train.
3. `speed`: `python -m benchmarks.speed --device cuda --dtype bfloat16 --compile` (eval forward, training step and
   compiled step of the NAC beside a ViT of its FLOPs, with the GPU's bf16 GEMM rate and the MFU), to DIR/speed.json.

`--steps` runs some of them (e.g. `--steps speed` to measure again). Each step's output goes to DIR/logs/<step>.log;
DIR/gpu_check.json holds the GPU, torch's versions and per step its command, exit status, seconds and figures (the
tests' counts, the training's metrics, the speed figures). Exits 0 when every step passed (a skipped test counts as a
failure), 1 when one failed or ran past its time limit (`TIME_LIMITS`), and 2 without a CUDA GPU ("needs a CUDA
GPU"), before running anything.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .common import argument_parser, write_json


ROOT = Path(__file__).resolve().parents[1]
STEPS = ("tests", "train", "speed")
# Seconds each step may take before it counts as failed. Most of each step is compilation (the tests' compiled
# models, the training's, the benchmark's compiled steps of the NAC and its baseline): on one H100 the three steps
# should take 6 to 8 minutes in all.
TIME_LIMITS = {"tests": 240, "train": 180, "speed": 240}
# The environment under which tests/test_cuda.py fails without a GPU instead of skipping.
REQUIRE_CUDA = {"NAC_REQUIRE_CUDA": "1"}
CIFAR_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Images per label: 2560 training images (20 batches of 128), 640 evaluation images (2 batches of 320).
TRAIN_PER_LABEL, EVAL_PER_LABEL = 256, 64
# The speed figures gpu_check.json repeats from speed.json, for the NAC and each baseline.
SPEED_FIGURES = ("model", "eval_s", "train_s", "train_compiled_s", "compile_s", "peak_device_mb", "eval_mfu",
                 "train_mfu", "train_compiled_mfu")


@dataclass
class GPUCheckArguments:
    output_dir: str = field(metadata={"help": "Where the logs, the runs and gpu_check.json go."})
    steps: str = field(default=",".join(STEPS), metadata={"help": f"Which checks to run, of {','.join(STEPS)}."})
    train_steps: int = field(default=300, metadata={"help": "Optimizer steps of the bf16 + compiled training."})
    speed_preset: str = field(default="paper-tiny-imagenet", metadata={"help": "The NAC preset the speed step times."})
    speed_batch_size: int = field(default=32, metadata={"help": "The speed step's batch."})
    speed_baselines: str = field(default="vit", metadata={"help": "The speed step's baselines (vit, perceiver)."})


def missing_gpu() -> str | None:
    """Why this machine cannot run the checks, or None when it can."""
    if torch.cuda.is_available():
        return None
    return (f"benchmarks.gpu_check needs a CUDA GPU: torch {torch.__version__} (CUDA build: {torch.version.cuda}) "
            "sees none (torch.cuda.is_available() is False). Run it on a machine with an NVIDIA GPU and a CUDA build "
            "of torch.")


def run_step(name: str, command: list[str], output_dir: Path, env: dict | None = None) -> dict:
    """Run one step's command from the repository's root, its output to DIR/logs/<name>.log: the command, its exit
    status (124 when it ran past `TIME_LIMITS[name]`) and its seconds."""
    log = output_dir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[gpu_check] {name}: {' '.join(command)}", flush=True)
    start = time.perf_counter()
    with log.open("w") as handle:
        try:
            returncode = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=handle,
                                        stderr=subprocess.STDOUT, timeout=TIME_LIMITS[name]).returncode
        except subprocess.TimeoutExpired:
            returncode = 124
            handle.write(f"\n[gpu_check] {name} ran past its {TIME_LIMITS[name]} s\n")
    seconds = time.perf_counter() - start
    print(f"[gpu_check] {name}: exit status {returncode} after {seconds:.0f} s (log: {log})", flush=True)
    return {"command": command, "returncode": returncode, "seconds": round(seconds, 1), "log": str(log)}


def junit_counts(junit: Path) -> dict:
    """The counts of a pytest JUnit report: tests, failures, errors, skipped."""
    if not junit.exists():
        return {}
    suite = ElementTree.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}


def tests_step(args: GPUCheckArguments, output_dir: Path) -> dict:
    junit = output_dir / "test_cuda.xml"
    command = [sys.executable, "-m", "pytest", "tests/test_cuda.py", "-q", "-rfEs", "-p", "no:cacheprovider",
               f"--junitxml={junit}"]
    result = run_step("tests", command, output_dir, env=REQUIRE_CUDA)
    result["counts"] = junit_counts(junit)
    counts = result["counts"]
    result["passed"] = result["returncode"] == 0 and counts.get("tests", 0) > 0 and counts.get("skipped", 1) == 0
    return result


def write_synthetic_cifar(folder: Path, train_per_label: int = TRAIN_PER_LABEL, eval_per_label: int = EVAL_PER_LABEL,
                          seed: int = 0) -> Path:
    """CIFAR-shaped image folders, `folder/train/<label>/*.png` and `folder/validation/<label>/*.png`: 32×32 RGB
    noise, tinted by a colour of each label's own."""
    rng = np.random.default_rng(seed)
    tints = rng.uniform(-48, 48, size=(len(CIFAR_LABELS), 3))
    for split, count in (("train", train_per_label), ("validation", eval_per_label)):
        for label, tint in zip(CIFAR_LABELS, tints):
            (folder / split / label).mkdir(parents=True, exist_ok=True)
            pixels = rng.normal(128, 40, size=(count, 32, 32, 3)) + tint  # (N, H, W, C)
            for index, image in enumerate(pixels.clip(0, 255).astype(np.uint8)):
                Image.fromarray(image).save(folder / split / label / f"{index:04d}.png")
    return folder


def train_command(args: GPUCheckArguments, data: Path, output: Path) -> list[str]:
    """scripts/train.py on the synthetic data for `args.train_steps` steps, in bf16 and compiled: the CIFAR recipe
    (its batch, augmentation and weight average, the average's decay shortened to the run). No checkpoints, one
    evaluation at the end."""
    return [sys.executable, "scripts/train.py", "--recipe", "cifar", "--ema_decay", "0.99", "--train_dir", str(data / "train"),
            "--validation_dir", str(data / "validation"), "--output_dir", str(output), "--max_steps",
            str(args.train_steps), "--per_device_eval_batch_size", "320", "--dataloader_drop_last", "true",
            "--bf16", "true", "--torch_compile", "true", "--eval_strategy", "no", "--save_strategy", "no",
            "--load_best_model_at_end", "false", "--logging_steps", "50", "--dataloader_num_workers", "4",
            "--disable_tqdm", "true", "--report_to", "none", "--seed", "0"]


def train_step(args: GPUCheckArguments, output_dir: Path) -> dict:
    data = write_synthetic_cifar(output_dir / "synthetic-cifar")
    output = output_dir / "train"
    result = run_step("train", train_command(args, data, output), output_dir)
    metrics_file, state_file = output / "all_results.json", output / "trainer_state.json"
    result["metrics"] = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    result["steps"] = json.loads(state_file.read_text())["global_step"] if state_file.exists() else 0
    loss = result["metrics"].get("train_loss")
    result["passed"] = (result["returncode"] == 0 and result["steps"] == args.train_steps and loss is not None
                        and math.isfinite(loss) and loss > 0)
    return result


def speed_command(args: GPUCheckArguments, output: Path) -> list[str]:
    return [sys.executable, "-m", "benchmarks.speed", "--preset", args.speed_preset, "--batch_size",
            str(args.speed_batch_size), "--repeats", "3", "--device", "cuda", "--dtype", "bfloat16", "--compile",
            "--baselines", args.speed_baselines, "--output", str(output)]


def speed_step(args: GPUCheckArguments, output_dir: Path) -> dict:
    output = output_dir / "speed.json"
    result = run_step("speed", speed_command(args, output), output_dir)
    figures = json.loads(output.read_text()) if output.exists() else None
    if figures is not None:
        rows = [figures, *figures["baselines"]]
        result["figures"] = [{key: row[key] for key in SPEED_FIGURES if key in row} for row in rows]
        result["json"] = str(output)
    result["passed"] = result["returncode"] == 0 and figures is not None
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, GPUCheckArguments)
    (args,) = parser.parse_args_into_dataclasses(argv)
    steps = [name for name in args.steps.split(",") if name]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; choose from {list(STEPS)}")
    reason = missing_gpu()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    output_dir = Path(args.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
               "steps": {}}
    run = {"tests": tests_step, "train": train_step, "speed": speed_step}
    for name in steps:
        summary["steps"][name] = run[name](args, output_dir)
        write_json(output_dir / "gpu_check.json", summary)  # what has run so far, should a later step hang
    failed = [name for name, result in summary["steps"].items() if not result["passed"]]
    summary["passed"] = not failed
    write_json(output_dir / "gpu_check.json", summary)
    print(f"[gpu_check] {'FAILED: ' + ', '.join(failed) if failed else 'all passed'} ({output_dir / 'gpu_check.json'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
