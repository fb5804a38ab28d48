"""python -m benchmarks.early_exit --checkpoint CHECKPOINT --output_dir DIR [--thresholds 1,0.99,0.95,0.9,0.8,0.6]
    [--min_exit_layer 1] [--batch_size 256] [--single_examples 64] [--repeats 5] [--dataset_name ... as in train.py]

Accuracy, depth and speed of a trained NAC with early exit over its propagator layers, at a grid of thresholds.

Evaluates the checkpoint on its evaluation data (the held-out digits when no data is named, as for the main job)
as it is (`config.exit_threshold=None`: one read-out after the last layer), then with `config.exit_threshold` at each
threshold: an example stops after the first layer whose read-out's top softmax probability exceeds it. Each row:
top-1 accuracy on the whole evaluation set, the mean number of propagator layers the examples ran, the largest change
of a logit against the full model (`max_logit_difference`), and the throughput (examples per second, median of
`--repeats` after a warm-up, in this process) on one evaluation batch of `--batch_size` and, one example at a time,
on its first `--single_examples` examples, each timed in turns with the model without early exit (the speed-ups are
the medians of the per-turn ratios). Writes DIR/early_exit.json ({"baseline": {...}, "rows": [...]}) and, with
matplotlib, DIR/early_exit.png (accuracy against mean layers and against measured speed-up). The baseline also gives
the share of the read-out's attention on the input modules (`read_out_attention_on_inputs`): near 1, the propagator
layers barely reach the prediction.
"""

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nac_hf.data import DataArguments
from nac_hf.evaluation import load_for_evaluation

from .common import (
    argument_parser,
    batch_size_of,
    forward,
    mark_loss,
    save_figure,
    throughput,
    top1,
    write_json,
)


@dataclass
class EarlyExitArguments:
    checkpoint: str = field(metadata={"help": "A trained NAC classifier: a folder or a Hub id."})
    output_dir: str = field(metadata={"help": "Where early_exit.json and early_exit.png go."})
    thresholds: str = field(
        default="1,0.999,0.99,0.98,0.95,0.9,0.8,0.6,0", metadata={"help": "Exit thresholds, comma-separated."}
    )
    min_exit_layer: int | None = field(default=None, metadata={"help": "Default: the checkpoint's config."})
    batch_size: int = field(default=256, metadata={"help": "Evaluation batch size; the first batch is timed."})
    single_examples: int = field(default=64, metadata={"help": "Examples of the first batch timed one at a time."})
    repeats: int = field(default=5, metadata={"help": "Timed turns of each measurement."})


@torch.no_grad()
def exits(model, evaluation) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits `(N, C)` of the whole evaluation set and the number of propagator layers each example ran `(N,)`."""
    model.eval()
    logits, layers = [], []
    for batch in evaluation.batches:
        output = model(**batch)
        logits.append(output.logits)
        ran_all = torch.full((len(output.logits),), model.config.num_hidden_layers)
        layers.append(output.exit_layer if output.exit_layer is not None else ran_all)
    return torch.cat(logits), torch.cat(layers)


def one_at_a_time(model, batch: dict, count: int):
    """The first `count` examples of `batch` through `model` one after the other, as a call to time."""
    singles = [forward(model, {name: value[i : i + 1] for name, value in batch.items()}) for i in range(count)]

    def run():
        for single in singles:
            single()

    return run


def measure(model, evaluation, single_examples: int, repeats: int, full=None) -> dict:
    """Top-1, mean layers and throughput of `model` (batch `--batch_size` and batch 1); beside `full` (the model
    without early exit), each timed in turns with it, also the speed-ups over it (medians of the per-turn ratios)."""
    logits, layers = exits(model, evaluation)
    batch = evaluation.batches[0]
    singles = min(single_examples, batch_size_of(batch))
    beside = full is not None
    batched = throughput(forward(model, batch), batch_size_of(batch), repeats, forward(full, batch) if beside else None)
    single = throughput(one_at_a_time(model, batch, singles), singles, repeats,
                        one_at_a_time(full, batch, singles) if beside else None)
    return {"logits": logits, "accuracy": top1(logits, evaluation.labels), "mean_layers": layers.float().mean().item(),
            **batched, **{f"{key}_batch_1": value for key, value in single.items()}}


@torch.no_grad()
def read_out_attention_on_inputs(model, evaluation) -> float:
    """The share of the read-out's attention that falls on the input modules (rather than the processors), the mean
    over the first evaluation batch, heads and output modules."""
    weights = model.nac(**evaluation.batches[0], output_attentions=True).attentions[-1]  # (B, H, O, S)
    return weights[..., : model.nac.input_senders].sum(-1).mean().item()  # 0 where the input modules send to no one


def plot(baseline: dict, rows: list[dict], path: Path) -> bool:
    """Accuracy against the mean fraction of layers run, and against the measured speed-ups."""

    def draw(axes):
        depth, speed = axes
        accuracy = [100 * row["accuracy"] for row in rows]
        fractions = [row["mean_layers"] / baseline["layers"] for row in rows]
        depth.plot(fractions, accuracy, marker="o")
        for row, x, y in zip(rows, fractions, accuracy):
            depth.annotate(f"{row['threshold']:g}", (x, y), fontsize=7)
        depth.set_xlabel("mean fraction of propagator layers run")
        depth.set_ylabel("top-1 accuracy (%)")
        for key, label in (("speedup", "batch of the evaluation set"), ("speedup_batch_1", "batch 1")):
            speed.plot([row[key] for row in rows], accuracy, marker="o", label=label)
        speed.set_xlabel("measured speed-up of the forward pass (×)")
        for each in axes:
            mark_loss(each, baseline["accuracy"], 1)
        speed.legend(fontsize=8)

    return save_figure(path, draw, ncols=2, figsize=(9, 3.8), sharey=True)


def thresholds_rows(model, evaluation, args: EarlyExitArguments, baseline: dict, full_logits: torch.Tensor) -> list:
    """One row per threshold, each model timed in turns with the model without early exit."""
    full = copy.deepcopy(model)  # without early exit
    rows = []
    for threshold in (float(t) for t in args.thresholds.split(",")):
        model.config.exit_threshold = threshold
        row = {"threshold": threshold, **measure(model, evaluation, args.single_examples, args.repeats, full)}
        row["max_logit_difference"] = (row.pop("logits") - full_logits).abs().max().item()  # against the full model
        rows.append(row)
        print(f"threshold {threshold:g}: top-1 {100 * row['accuracy']:.2f} %, {row['mean_layers']:.2f} layers "
              f"({100 * row['mean_layers'] / baseline['layers']:.0f} %), {row['speedup']:.2f}x "
              f"(batch {args.batch_size}), {row['speedup_batch_1']:.2f}x (batch 1)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args, data_args = argument_parser(__doc__, EarlyExitArguments, DataArguments).parse_args_into_dataclasses(argv)
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
    rows = thresholds_rows(model, evaluation, args, baseline, full_logits)
    output = Path(args.output_dir)
    results = {"checkpoint": args.checkpoint, "data": evaluation.source, "examples": len(evaluation.labels),
               "batch_size": args.batch_size, "single_examples": args.single_examples,
               "min_exit_layer": model.config.min_exit_layer, "torch_threads": torch.get_num_threads(),
               "baseline": baseline, "rows": rows}
    write_json(output / "early_exit.json", results)
    drew = plot(baseline, rows, output / "early_exit.png")
    print(f"wrote {output / 'early_exit.json'}" + (" and early_exit.png" if drew else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
