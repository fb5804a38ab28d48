"""Accuracy, depth and speed of a trained NAC with early exit over its propagator layers, at a grid of thresholds.

    python -m benchmarks.early_exit CHECKPOINT --output_dir DIR [--thresholds 1,0.99,0.95,0.9,0.8,0.6]
        [--min_exit_layer 1] [--batch_size 256] [--single_examples 64] [--repeats 5] [--dataset_name ... as in train.py]

Evaluates the checkpoint on its evaluation data (the held-out digits when no data is named, as for the main job)
as it is (`config.exit_threshold=None`: one read-out after the last layer), then with `config.exit_threshold` at each
threshold: an example stops after the first layer whose read-out's top softmax probability exceeds it. Each row:
top-1 accuracy on the whole evaluation set, the mean number of propagator layers the examples ran, the largest change
of a logit against the full model (`max_logit_difference`), and the
throughput (examples per second, median of `--repeats` after a warm-up, in this process) on one evaluation batch of
`--batch_size` and, one example at a time, on its first `--single_examples` examples, each timed in turns with the
model without early exit (the speed-ups are the medians of the per-turn ratios). Writes DIR/early_exit.json
({"baseline": {...}, "rows": [...]}) and, with matplotlib, DIR/early_exit.png (accuracy against mean layers and
against measured speed-up). The baseline also gives the share of the read-out's attention on the input modules
(`read_out_attention_on_inputs`): near 1, the propagator layers barely reach the prediction.
"""

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from transformers import HfArgumentParser

import nac_hf  # noqa: F401  (registers NAC with the Auto classes)
from nac_hf.data import DataArguments

from .common import load_for_evaluation, median_seconds, median_time, paired_seconds, paired_times


@torch.no_grad()
def measure(model, evaluation, single_examples: int, repeats: int, full=None) -> dict:
    """Top-1, mean layers and throughput of `model` (batch `--batch_size` and batch 1); beside `full` (the model
    without early exit), each timed in turns with it, also the speed-ups over it (medians of the per-turn ratios)."""
    logits, layers = [], []
    for batch in evaluation.batches:
        output = model(**batch)
        logits.append(output.logits)
        exit_layer = output.exit_layer
        size = len(output.logits)
        layers.append(exit_layer if exit_layer is not None else torch.full((size,), model.config.num_hidden_layers))
    batch = evaluation.batches[0]
    size = len(next(iter(batch.values())))
    singles = [{name: value[i : i + 1] for name, value in batch.items()} for i in range(min(single_examples, size))]

    def one_at_a_time(timed):
        def run():
            for example in singles:
                timed(**example)

        return run

    logits = torch.cat(logits)
    row = {
        "logits": logits,
        "accuracy": (logits.argmax(-1) == evaluation.labels).float().mean().item(),
        "mean_layers": torch.cat(layers).float().mean().item(),
    }
    if full is None:
        return {**row, "throughput": size / median_seconds(model, batch, repeats=repeats),
                "throughput_batch_1": len(singles) / median_time(one_at_a_time(model), repeats)}
    _, seconds, speedup = paired_seconds(full, model, batch, repeats=repeats)
    _, single_seconds, single_speedup = paired_times(one_at_a_time(full), one_at_a_time(model), repeats)
    return {**row, "throughput": size / seconds, "throughput_batch_1": len(singles) / single_seconds,
            "speedup": speedup, "speedup_batch_1": single_speedup}


@torch.no_grad()
def read_out_attention_on_inputs(model, evaluation) -> float:
    """The share of the read-out's attention that falls on the input modules (rather than the processors), the mean
    over the first evaluation batch, heads and output modules."""
    weights = model.nac(**evaluation.batches[0], output_attentions=True).attentions[-1]  # (B, H, O, S)
    return weights[..., : model.nac.input_senders].sum(-1).mean().item()  # 0 where the input modules send to no one


def plot(baseline: dict, rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, (depth, speed) = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    accuracy = [100 * row["accuracy"] for row in rows]
    depth.plot([row["mean_layers"] / baseline["layers"] for row in rows], accuracy, marker="o")
    for row, y in zip(rows, accuracy):
        depth.annotate(f"{row['threshold']:g}", (row["mean_layers"] / baseline["layers"], y), fontsize=7)
    depth.set_xlabel("mean fraction of propagator layers run")
    depth.set_ylabel("top-1 accuracy (%)")
    for key, label in (("speedup", "batch of the evaluation set"), ("speedup_batch_1", "batch 1")):
        speed.plot([row[key] for row in rows], accuracy, marker="o", label=label)
    speed.set_xlabel("measured speed-up of the forward pass (×)")
    for axes in (depth, speed):
        axes.axhline(100 * baseline["accuracy"] - 1, color="grey", linestyle=":", label="1 point below the full model")
    speed.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--thresholds", default="1,0.999,0.99,0.98,0.95,0.9,0.8,0.6,0")
    parser.add_argument("--min_exit_layer", type=int, default=None, help="Default: the checkpoint's config.")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--single_examples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args, rest = parser.parse_known_args()
    (data_args,) = HfArgumentParser(DataArguments).parse_args_into_dataclasses(rest)
    torch.manual_seed(0)
    model, evaluation = load_for_evaluation(args.checkpoint, data_args, args.batch_size)
    model.config.exit_threshold = None
    if args.min_exit_layer is not None:
        model.config.min_exit_layer = args.min_exit_layer
    baseline = {**measure(model, evaluation, args.single_examples, args.repeats),
                "layers": model.config.num_hidden_layers,
                "read_out_attention_on_inputs": read_out_attention_on_inputs(model, evaluation)}
    full_logits = baseline.pop("logits")
    print(f"full model: top-1 {100 * baseline['accuracy']:.2f} %, {baseline['layers']} layers, "
          f"{baseline['throughput']:.0f} examples/s (batch {args.batch_size}), "
          f"{baseline['throughput_batch_1']:.0f} examples/s (batch 1)", flush=True)
    full = copy.deepcopy(model)  # without early exit, timed in turns with each threshold's model
    rows = []
    for threshold in (float(t) for t in args.thresholds.split(",")):
        model.config.exit_threshold = threshold
        row = {"threshold": threshold, **measure(model, evaluation, args.single_examples, args.repeats, full)}
        row["max_logit_difference"] = (row.pop("logits") - full_logits).abs().max().item()  # against the full model
        rows.append(row)
        print(f"threshold {threshold:g}: top-1 {100 * row['accuracy']:.2f} %, {row['mean_layers']:.2f} layers "
              f"({100 * row['mean_layers'] / baseline['layers']:.0f} %), {row['speedup']:.2f}x "
              f"(batch {args.batch_size}), {row['speedup_batch_1']:.2f}x (batch 1)", flush=True)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    results = {"checkpoint": args.checkpoint, "data": evaluation.source, "examples": len(evaluation.labels),
               "batch_size": args.batch_size, "single_examples": args.single_examples,
               "min_exit_layer": model.config.min_exit_layer, "torch_threads": torch.get_num_threads(),
               "baseline": baseline, "rows": rows}
    (output / "early_exit.json").write_text(json.dumps(results, indent=2) + "\n")
    drew = plot(baseline, rows, output / "early_exit.png")
    print(f"wrote {output / 'early_exit.json'}" + (" and early_exit.png" if drew else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
