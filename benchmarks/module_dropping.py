"""python -m benchmarks.module_dropping --checkpoint CHECKPOINT --output_dir DIR [--batch_size 256] [--repeats 7]
    [--keep 1,0.5,0.25,0.125] [--keep_input 1,0.5] [--random_seeds 0,1,2] [--order_examples 512]
    [--dataset_name ... as in train.py]
python -m benchmarks.module_dropping --table DIR_OR_JSON [DIR_OR_JSON ...] [--orders kernel_mass,random]

Accuracy and speed of a trained NAC with modules dropped, for every order, in one run; or, with --table, the table
of several such runs.

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
and each runs warm, as it does alone). Writes DIR/module_dropping.json ({"baseline": {...}, "rows": [...]}) and,
with matplotlib, DIR/module_dropping.png (accuracy against measured speed-up, one line per order at the full set of
input modules).

--table prints, as Markdown, the results of several trained models (module_dropping.json files, or folders holding
one): for each order and kept fractions, top-1 (the mean over the models, and each model's), its loss against each
model's full top-1, the FLOP ratio and the measured speed-up (means over the models, and over the seeds of `random`).
"""

import copy
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nac_hf.data import DataArguments
from nac_hf.evaluation import load_evaluation_set, load_for_evaluation, predict
from nac_hf.module_dropping import ORDERS, drop_modules, kept_modules, module_scores

from .common import (
    argument_parser,
    batch_size_of,
    flops_per_example,
    forward,
    mark_loss,
    save_figure,
    throughput,
    top1,
    write_json,
)


RESULTS_FILE = "module_dropping.json"


@dataclass
class DroppingArguments:
    checkpoint: str | None = field(default=None, metadata={"help": "A trained NAC classifier: a folder or a Hub id."})
    output_dir: str | None = field(default=None, metadata={"help": "Where module_dropping.json and .png go."})
    batch_size: int = field(default=256, metadata={"help": "Evaluation batch size; the first batch is timed."})
    repeats: int = field(default=7, metadata={"help": "Timed turns of each measurement."})
    keep: str = field(default="1,0.5,0.25,0.125", metadata={"help": "Fractions of processor modules to keep."})
    keep_input: str = field(default="1,0.5", metadata={"help": "Fractions of input modules to keep."})
    random_seeds: str = field(default="0,1,2", metadata={"help": "Seeds of the `random` order."})
    order_examples: int = field(
        default=512,
        metadata={"help": "Training examples on which the `loss` order measures the loss (never evaluation ones)."},
    )
    table: list[str] = field(
        default_factory=list,
        metadata={"help": "Instead of measuring: table these module_dropping.json files (or folders holding one)."},
    )
    orders: str | None = field(
        default=None, metadata={"help": "With --table: orders to table, comma-separated (default: every one measured)."}
    )


def measure(model, evaluation, repeats: int, full=None) -> dict:
    """Top-1, GFLOPs per example and throughput of `model`; beside `full`, timed in turns with it on the same batch,
    also its speed-up over `full` (the median of the per-turn ratios) and `full`'s throughput in those turns."""
    batch = evaluation.batches[0]
    return {
        "accuracy": top1(predict(model, evaluation), evaluation.labels),
        "gflops": flops_per_example(model, batch[model.main_input_name]) / 1e9,
        **throughput(forward(model, batch), batch_size_of(batch), repeats,
                     None if full is None else forward(full, batch)),
    }


def training_examples(checkpoint: str, data_args: DataArguments, count: int) -> dict:
    """The first `count` examples of the checkpoint's training split as one labelled batch, read as evaluation reads
    (no augmentation): what the `loss` order measures the loss on."""
    training = load_evaluation_set(checkpoint, data_args, batch_size=count, split="train", max_examples=count)
    return {**training.batches[0], "labels": training.labels}


def plot(baseline: dict, rows: list[dict], path: Path, tied: bool = False) -> bool:
    """Accuracy against measured speed-up, one line per order (at the full set of input modules unless `tied`)."""

    def draw(axes):
        for order in ORDERS:
            points = {}
            for row in rows:
                if row["order"] == order and (tied or row["keep_input"] == 1.0):
                    points.setdefault(row["keep_processor"], []).append(row)
            keeps = sorted(points, reverse=True)
            if keeps:
                speedup = [statistics.mean(r["speedup"] for r in points[k]) for k in keeps]
                accuracy = [100 * statistics.mean(r["accuracy"] for r in points[k]) for k in keeps]
                axes.plot(speedup, accuracy, marker="o", label=order)
        mark_loss(axes, baseline["accuracy"], 3)
        axes.set_xlabel("measured speed-up of the forward pass (×)")
        axes.set_ylabel("top-1 accuracy (%)")
        axes.set_xscale("log", base=2)
        axes.legend(fontsize=8)

    return save_figure(path, draw, figsize=(6, 4))


def order_rows(full, evaluation, args: DroppingArguments, order: str, seed: int, examples: dict) -> list[dict]:
    """The rows of one order (and seed): the modules ranked once, then every kept fraction measured beside `full`."""
    tied = full.config.processors_read_in  # each processor reads the input through its own input module
    tick = time.perf_counter()
    input_scores, processor_scores = module_scores(full, order, seed, examples)
    ranked = round(time.perf_counter() - tick, 1)
    rows = []
    for keep_input in [None] if tied else (float(k) for k in args.keep_input.split(",")):
        for keep_processor in (float(k) for k in args.keep.split(",")):
            processors = kept_modules(processor_scores, keep_processor, "processor").tolist()
            inputs = None if tied else kept_modules(input_scores, keep_input, "input").tolist()
            model = copy.deepcopy(full)
            kept = drop_modules(model, keep_processor=processors, keep_input=inputs)
            rows.append({"order": order, "seed": seed, "keep_input": keep_processor if tied else keep_input,
                         "keep_processor": keep_processor, "ranking_seconds": ranked,
                         "input_modules": len(kept["input"]), "processor_modules": len(kept["processor"]),
                         **measure(model, evaluation, args.repeats, full)})
            row = rows[-1]
            print(f"{order:11s} seed {seed} inputs {row['input_modules']:3d} processors "
                  f"{row['processor_modules']:3d}: top-1 {100 * row['accuracy']:.2f} %, "
                  f"{row['gflops']:.3f} GFLOP, {row['speedup']:.2f}x", flush=True)
    return rows


def measure_dropping(args: DroppingArguments, data_args: DataArguments) -> None:
    torch.manual_seed(0)
    full, evaluation = load_for_evaluation(args.checkpoint, data_args, args.batch_size)
    baseline = {**measure(full, evaluation, args.repeats), "input_modules": full.config.num_input_modules,
                "processor_modules": full.config.num_processor_modules}
    examples = training_examples(args.checkpoint, data_args, args.order_examples)
    rows = []
    for order in ORDERS:
        for seed in ([int(s) for s in args.random_seeds.split(",")] if order == "random" else [0]):
            rows.extend(order_rows(full, evaluation, args, order, seed, examples))
    output = Path(args.output_dir)
    tied = full.config.processors_read_in
    results = {"checkpoint": args.checkpoint, "data": evaluation.source, "examples": len(evaluation.labels),
               "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
               "inputs_follow_processors": tied, "baseline": baseline, "rows": rows}
    write_json(output / RESULTS_FILE, results)
    drew = plot(baseline, rows, output / "module_dropping.png", tied)
    print(f"full model: top-1 {100 * baseline['accuracy']:.2f} %, {baseline['gflops']:.3f} GFLOP, "
          f"{baseline['throughput']:.0f} examples/s; wrote {output / RESULTS_FILE}"
          + (" and module_dropping.png" if drew else ""))


def load(path: str) -> dict:
    """A module_dropping.json, or the one in a folder."""
    path = Path(path)
    return json.loads((path / RESULTS_FILE if path.is_dir() else path).read_text())


def table(results: list[dict], orders: list[str]) -> str:
    """The Markdown table of several models' results: a line per order and kept fractions."""
    lines = ["| order | kept processors | input modules | top-1 (mean; each model) | loss (points) | FLOP ratio | "
             "measured speed-up |", "|---|---|---|---|---|---|---|"]
    for order in orders:
        keeps = {(row["keep_input"], row["keep_processor"]) for row in results[0]["rows"] if row["order"] == order}
        for keep in sorted(keeps, reverse=True):
            accuracy, loss, flops, speedup, counts = [], [], [], [], set()
            for result in results:
                rows = [r for r in result["rows"] if r["order"] == order
                        and (r["keep_input"], r["keep_processor"]) == keep]
                mean = statistics.mean(r["accuracy"] for r in rows)
                accuracy.append(100 * mean)
                loss.append(100 * (result["baseline"]["accuracy"] - mean))
                flops.append(result["baseline"]["gflops"] / rows[0]["gflops"])
                speedup.append(statistics.mean(r["speedup"] for r in rows))
                counts.add((rows[0]["processor_modules"], rows[0]["input_modules"]))
            (processors, inputs), = counts
            each = ", ".join(f"{a:.1f}" for a in accuracy)
            lines.append(f"| {order} | {processors} | {inputs} | {statistics.mean(accuracy):.2f} % ({each}) | "
                         f"{0.0 - statistics.mean(loss) + 0.0:+.2f} | {statistics.mean(flops):.2f}× | "
                         f"{statistics.mean(speedup):.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, DroppingArguments, DataArguments)
    args, data_args = parser.parse_args_into_dataclasses(argv)
    if args.table:
        results = [load(path) for path in args.table]
        measured = list(dict.fromkeys(row["order"] for result in results for row in result["rows"]))
        print(table(results, args.orders.split(",") if args.orders else measured))
        return 0
    if args.checkpoint is None or args.output_dir is None:
        parser.error("name the model to measure and where its results go (--checkpoint and --output_dir), or table "
                     "earlier results with --table")
    measure_dropping(args, data_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
