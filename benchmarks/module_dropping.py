"""Accuracy and speed of a trained NAC with modules dropped, for every order, in one run.

    python -m benchmarks.module_dropping CHECKPOINT --output_dir DIR [--batch_size 256] [--repeats 7]
        [--keep 1,0.5,0.25,0.125] [--keep_input 1,0.5] [--random_seeds 0,1,2] [--order_examples 512]
        [--dataset_name ... as in train.py]

Evaluates the checkpoint on its evaluation data (the held-out digits when no data is named, as for the main job) as
it is, then with processor modules dropped to each `--keep` fraction and input modules to each `--keep_input`
fraction, by each order of `nac_hf.module_dropping.ORDERS` (`random` once per seed; `loss` on the first
`--order_examples` examples of the training split, never on the evaluation data); each order ranks the modules once
(`ranking_seconds` in its rows) and every fraction keeps the best of that ranking. For a model whose processors
read the input themselves (`processors_read_in`), each processor's input module goes with it and `--keep_input` is
not used. Each row: top-1 accuracy on the whole evaluation set, GFLOPs per example (`FlopCounterMode`) and
throughput (examples per second of the model's forward on one evaluation batch, median of `--repeats` after a
warm-up, in this process) and speed-up over the full model (timed in turns with it on the same batch, each turn a
warm-up call and 3 timed calls of each model: the median of the per-turn ratios, so that both see the same machine
and each runs warm, as it does alone). Writes
DIR/module_dropping.json ({"baseline": {...}, "rows": [...]}) and, with matplotlib, DIR/module_dropping.png (accuracy
against measured speed-up, one line per order at the full set of input modules).
"""

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import HfArgumentParser

import nac_hf  # noqa: F401  (registers NAC with the Auto classes)
from nac_hf.data import DataArguments
from nac_hf.module_dropping import ORDERS, drop_modules, kept_modules, module_scores

from .common import flops_per_example, load_evaluation_set, load_for_evaluation, median_seconds, paired_seconds, predict


def measure(model, evaluation, repeats: int, full=None) -> dict:
    """Top-1, GFLOPs per example and throughput of `model`; beside `full`, timed in turns with it on the same batch,
    also its speed-up over `full` (the median of the per-turn ratios) and `full`'s throughput in those turns."""
    batch = evaluation.batches[0]
    size = len(next(iter(batch.values())))
    row = {
        "accuracy": (predict(model, evaluation).argmax(-1) == evaluation.labels).float().mean().item(),
        "gflops": flops_per_example(model, batch[model.main_input_name]) / 1e9,
    }
    if full is None:
        return {**row, "throughput": size / median_seconds(model, batch, repeats=repeats)}
    full_seconds, seconds, speedup = paired_seconds(full, model, batch, repeats=repeats)
    return {**row, "throughput": size / seconds, "speedup": speedup, "baseline_throughput": size / full_seconds}


def training_examples(checkpoint: str, data_args: DataArguments, count: int) -> dict:
    """The first `count` examples of the checkpoint's training split as one labelled batch, read as evaluation reads
    (no augmentation): what the `loss` order measures the loss on."""
    training = load_evaluation_set(checkpoint, data_args, batch_size=count, split="train", max_examples=count)
    return {**training.batches[0], "labels": training.labels}


def plot(baseline: dict, rows: list[dict], path: Path, tied: bool = False) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(6, 4))
    for order in ORDERS:
        points = {}
        for row in rows:
            if row["order"] == order and (tied or row["keep_input"] == 1.0):
                points.setdefault(row["keep_processor"], []).append(row)
        if not points:
            continue
        keeps = sorted(points, reverse=True)
        speedup = [statistics.mean(r["speedup"] for r in points[k]) for k in keeps]
        accuracy = [100 * statistics.mean(r["accuracy"] for r in points[k]) for k in keeps]
        axes.plot(speedup, accuracy, marker="o", label=order)
    axes.axhline(100 * baseline["accuracy"] - 3, color="grey", linestyle=":", label="3 points below the full model")
    axes.set_xlabel("measured speed-up of the forward pass (×)")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.set_xscale("log", base=2)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--keep", default="1,0.5,0.25,0.125", help="Fractions of processor modules to keep.")
    parser.add_argument("--keep_input", default="1,0.5", help="Fractions of input modules to keep.")
    parser.add_argument("--random_seeds", default="0,1,2")
    parser.add_argument("--order_examples", type=int, default=512,
                        help="Training examples on which the `loss` order measures the loss (never evaluation ones).")
    args, rest = parser.parse_known_args()
    (data_args,) = HfArgumentParser(DataArguments).parse_args_into_dataclasses(rest)
    torch.manual_seed(0)
    full, evaluation = load_for_evaluation(args.checkpoint, data_args, args.batch_size)
    baseline = {**measure(full, evaluation, args.repeats), "input_modules": full.config.num_input_modules,
                "processor_modules": full.config.num_processor_modules}
    # With processors_read_in each processor reads the input through its own input module: they go together.
    tied = full.config.processors_read_in
    examples = training_examples(args.checkpoint, data_args, args.order_examples)
    rows = []
    for order in ORDERS:
        for seed in ([int(s) for s in args.random_seeds.split(",")] if order == "random" else [0]):
            tick = time.perf_counter()
            input_scores, processor_scores = module_scores(full, order, seed, examples)  # once per order
            ranked = round(time.perf_counter() - tick, 1)
            for keep_input in [None] if tied else (float(k) for k in args.keep_input.split(",")):
                for keep_processor in (float(k) for k in args.keep.split(",")):
                    processors = kept_modules(processor_scores, keep_processor, "processor").tolist()
                    inputs = None if tied else kept_modules(input_scores, keep_input, "input").tolist()
                    model = copy.deepcopy(full)
                    kept = drop_modules(model, keep_processor=processors, keep_input=inputs)
                    row = {"order": order, "seed": seed, "keep_input": keep_processor if tied else keep_input,
                           "keep_processor": keep_processor, "ranking_seconds": ranked,
                           "input_modules": len(kept["input"]), "processor_modules": len(kept["processor"]),
                           **measure(model, evaluation, args.repeats, full)}
                    rows.append(row)
                    print(f"{order:11s} seed {seed} inputs {row['input_modules']:3d} processors "
                          f"{row['processor_modules']:3d}: top-1 {100 * row['accuracy']:.2f} %, "
                          f"{row['gflops']:.3f} GFLOP, {row['speedup']:.2f}x", flush=True)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    results = {"checkpoint": args.checkpoint, "data": evaluation.source, "examples": len(evaluation.labels),
               "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
               "inputs_follow_processors": tied, "baseline": baseline, "rows": rows}
    (output / "module_dropping.json").write_text(json.dumps(results, indent=2) + "\n")
    drew = plot(baseline, rows, output / "module_dropping.png", tied)
    print(f"full model: top-1 {100 * baseline['accuracy']:.2f} %, {baseline['gflops']:.3f} GFLOP, "
          f"{baseline['throughput']:.0f} examples/s; wrote {output / 'module_dropping.json'}"
          + (" and module_dropping.png" if drew else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
