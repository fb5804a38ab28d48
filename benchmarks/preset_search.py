"""python -m benchmarks.preset_search --task {reviews,listops,shapes} --output_dir DIR
    --variants "NAME:FIELD=VALUE,...;NAME:..." [--learning_rate 5.5e-4] [--strength 0.03] [--epochs E] [--seed 42]
    [--data_seed 0] [--results docs/results/preset-search-TASK.json] [the task's flags]

How a task's NAC preset is chosen: variants of the preset (changes to its fields, as `scripts/train.py
--config_overrides` names them; the variant `preset` with no change is always tried first), each trained once as
`benchmarks.task_comparison` trains a NAC (the same data, `Trainer` settings and epochs) at one learning rate and
regularisation strength, and scored on the task's **validation** split; the test split is not read. Each variant's
parameters are given beside the baseline's: a variant more than 10 % away from it could not be compared as it stands.

Writes --results (default docs/results/preset-search-TASK.json): the setting, per variant its changes, parameters,
size gap to the baseline (`comparable` within 10 %), validation top-1 and training time, and the variant `chosen`: the
best on validation among the comparable ones. Every training is kept in DIR (a rerun resumes).
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from nac_hf.data import DataArguments
from nac_hf.training import parse_config_overrides

from . import protocol
from . import task_comparison as comparison
from .common import argument_parser, quiet_libraries, write_json


@dataclass
class SearchArguments:
    task: str = field(metadata={"help": "The task whose preset is searched.", "choices": list(comparison.TASKS)})
    output_dir: str = field(metadata={"help": "The task's data and every trained variant (a rerun resumes)."})
    variants: str = field(metadata={"help": "NAME:FIELD=VALUE,... variants separated by ';' (the preset is added)."})
    learning_rate: float = field(default=5.5e-4, metadata={"help": "The learning rate of every variant."})
    strength: float = field(default=0.03, metadata={"help": "The regularisation strength of every variant."})
    epochs: float | None = field(default=None, metadata={"help": "Epochs of each training (unset: the task's)."})
    seed: int = field(default=42, metadata={"help": "The training seed of every variant."})
    data_seed: int = field(default=0, metadata={"help": "Fixes the task's data and its splits."})
    results: str | None = field(default=None, metadata={"help": "The json (unset: docs/results/preset-search-TASK.json)."})


def parse_variants(text: str) -> dict[str, dict]:
    """`"ctx1:byte_context_layers=1;wide:hidden_size=128"` → {"preset": {}, "ctx1": {...}, "wide": {...}}."""
    variants = {"preset": {}}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, _, changes = item.partition(":")
        if not name or not changes:
            raise ValueError(f"--variants expects NAME:FIELD=VALUE,... separated by ';', got {item!r}")
        if name in variants:
            raise ValueError(f"--variants names {name!r} twice (and 'preset' is the unchanged preset)")
        overrides = parse_config_overrides(changes)
        fixed = sorted(set(overrides) & {*comparison.NAC_REGULARISERS, "num_labels", "tokenizer_type"})
        if fixed:
            raise ValueError(f"variant {name!r} sets {', '.join(fixed)}: the regularisers come from --strength and "
                             "the labels and input from the task; change other fields")
        variants[name] = overrides
    return variants


def search(args: SearchArguments, settings: dict) -> list[dict]:
    task = comparison.TASKS[args.task]
    folder = Path(args.output_dir)
    comparison.write_data(task, settings, args.data_seed, folder)
    data_args = DataArguments(dataset_name=str(folder / "data"))
    trial = protocol.Trial(args.learning_rate, args.strength)
    baseline = comparison.parameter_counts(task)[task.baseline.name]
    rows = []
    for name, overrides in parse_variants(args.variants).items():
        variant = dataclasses.replace(task, nac_overrides=overrides)
        run = comparison.train(comparison.NAC, variant, trial, args.seed, args.epochs or task.epochs, data_args,
                               task.name, folder / "variants" / name)
        parameters = run["parameters"]  # of the model trained (kept in DIR), whatever the preset has become since
        gap = baseline / parameters - 1
        rows.append({"name": name, "overrides": overrides, "parameters": parameters, "size_gap": round(gap, 4),
                     "comparable": abs(gap) <= comparison.MAX_SIZE_GAP, "validation": run["validation"],
                     "train_seconds": run["train_seconds"]})
        print(f"  {name}: {parameters:,} parameters ({task.baseline.display} {100 * rows[-1]['size_gap']:+.1f} %), "
              f"validation top-1 {100 * run['validation']:.2f} %", flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser(__doc__, SearchArguments, *(task.arguments for task in comparison.TASKS.values()))
    args, *all_settings = parser.parse_args_into_dataclasses(argv)
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.WARNING, stream=sys.stdout)
    quiet_libraries()
    task = comparison.TASKS[args.task]
    settings = dataclasses.asdict(next(s for s in all_settings if isinstance(s, task.arguments)))
    start = time.perf_counter()
    rows = search(args, settings)
    results = {
        "task": task.name,
        "command": shlex.join(["python", "-m", "benchmarks.preset_search", *(sys.argv[1:] if argv is None else argv)]),
        "setting": {"learning_rate": args.learning_rate, "strength": args.strength, "seed": args.seed,
                    "epochs": args.epochs or task.epochs, "data_seed": args.data_seed, "scored_on": "validation"},
        "baseline": task.baseline.display, "variants": rows, "wall_seconds": round(time.perf_counter() - start, 1),
    }
    results["chosen"] = chosen(rows)
    path = write_json(args.results or f"docs/results/preset-search-{task.name}.json", results)
    print(f"\nbest on validation within {100 * comparison.MAX_SIZE_GAP:.0f} % of the baseline's size: "
          f"{results['chosen']}; wrote {path}")
    return results


def chosen(rows: list[dict]) -> str:
    """The variant of the best validation top-1 among those of about the baseline's size (the preset if none)."""
    comparable = [row for row in rows if row["comparable"]] or rows[:1]
    return max(comparable, key=lambda row: row["validation"])["name"]


if __name__ == "__main__":
    main()
