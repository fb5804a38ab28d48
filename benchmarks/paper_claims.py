"""python -m benchmarks.paper_claims --output_dir outputs/claims [--results docs/results/claims.json]
    [--benchmarks glyphs,digits] [--tuning_trials 3] [--pretrain_seeds 3] [--adapt_seeds 5] [--shots 1,5,10]

The paper's claims re-measured under the fair protocol (`benchmarks.protocol`), against a ViT and a Perceiver of the
same size, on two benchmarks built from packages, in one command. Writes `--results` (`benchmarks.claims`' rows, the
protocol, every measurement) and prints the table. Every trained model and every adaptation is kept in
`--output_dir`; a rerun into the same folder goes on where it stopped.

- **glyphs** (`benchmarks.glyphs`): pre-trained on 26 capital letters drawn from 12 fonts (each family tuned, then
  trained from --pretrain_seeds seeds); adapted to 10 lower-case letters never seen (low-shot); tested on the
  letters drawn from 8 fonts of families never trained on and on the test letters corrupted (out of distribution);
  modules dropped and early exit on the pre-trained NACs.
- **digits** (scikit-learn's): pre-trained on the digits 0-4 (tuned there), adapted to 5-9; models of the chosen
  settings trained on all ten digits, tested on digits drawn from matplotlib's fonts, on corrupted digits and on
  MNIST, and models trained on MNIST tested on scikit-learn's digits (`benchmarks.robustness`); dropping and early
  exit on the all-digits NACs.

Validation splits are carved from the training data; the test splits are read once, at the end.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict
from transformers import AutoModelForImageClassification

from nac_hf import NACImageProcessor
from nac_hf.data import DataArguments, digits_dataset
from nac_hf.evaluation import load_evaluation_set, predict
from nac_hf.module_dropping import drop_modules, kept_modules, module_scores

from . import protocol
from .claims import RESULTS_FILE, accuracy_on, claims_table, row
from .common import argument_parser, quiet_libraries, top1, write_json
from .early_exit import measure as measure_exit
from .glyphs import NEW_CHARACTERS, OOD_FONTS, PRETRAIN_CHARACTERS, TRAIN_FONTS, glyph_split
from .module_dropping import measure as measure_dropping
from .robustness import corrupted_digits, font_digits, mnist_digits


MAX_LOSS = 0.03  # operating points keep validation top-1 within 3 points of the full model's
EXIT_THRESHOLDS = (0.6, 0.8, 0.9, 0.95, 0.99)  # the cheapest first
DROPPING_KEEP = (2, 4, 8, 16)  # processor modules kept, the fewest first


@dataclass
class ClaimsArguments:
    output_dir: str = field(default="outputs/claims", metadata={"help": "Models, adaptations and results."})
    results: str = field(default=f"docs/results/{RESULTS_FILE}", metadata={"help": "Where claims.json goes."})
    benchmarks: str = field(default="glyphs,digits", metadata={"help": "Benchmarks to run, comma-separated."})
    baselines: str = field(default="vit,perceiver", metadata={"help": "Baseline families, comma-separated."})
    tuning_trials: int = field(default=3, metadata={"help": "Random-search trials per family (the same for all)."})
    pretrain_seeds: int = field(default=3, metadata={"help": "Pre-training seeds per family."})
    adapt_seeds: int = field(default=5, metadata={"help": "Adaptation seeds per pre-trained model."})
    shots: str = field(default="1,5,10", metadata={"help": "Examples per new class, comma-separated."})
    adapt_steps: int = field(default=50, metadata={"help": "Optimizer steps of each adaptation."})
    glyph_renders: int = field(default=16, metadata={"help": "Training drawings of each letter in each font."})
    glyph_epochs: float = field(default=6, metadata={"help": "Epochs of pre-training on the letters."})
    digit_epochs: float = field(default=30, metadata={"help": "Epochs of pre-training on the digits 0-4."})
    all_digit_epochs: float = field(default=15, metadata={"help": "Epochs of training on all ten digits."})
    mnist_epochs: float = field(default=6, metadata={"help": "Epochs of training on MNIST."})
    mnist_train: int = field(default=3000, metadata={"help": "MNIST digits trained on (500 validate, the rest test)."})
    repeats: int = field(default=5, metadata={"help": "Timed turns of each speed measurement."})
    seed: int = field(default=42, metadata={"help": "The first pre-training seed (tuning runs at it)."})


def split_three(dataset: Dataset, validation: int | float, test: int | float, seed: int = 0) -> DatasetDict:
    """Train / validation / test, stratified by label, fixed by `seed`."""
    first = dataset.train_test_split(test_size=test, seed=seed, stratify_by_column="label")
    second = first["train"].train_test_split(test_size=validation, seed=seed, stratify_by_column="label")
    return DatasetDict(train=second["train"], validation=second["test"], test=first["test"])


def glyph_tasks(args: ClaimsArguments, folder: Path) -> dict:
    """The glyph benchmark's tasks (written as data folders) and its out-of-distribution sets."""
    letters = DatasetDict(
        train=glyph_split("train", PRETRAIN_CHARACTERS, TRAIN_FONTS, args.glyph_renders),
        validation=glyph_split("validation", PRETRAIN_CHARACTERS, TRAIN_FONTS, 1),
        test=glyph_split("test", PRETRAIN_CHARACTERS, TRAIN_FONTS, 2),
    )
    new = DatasetDict(
        train=glyph_split("train", NEW_CHARACTERS, TRAIN_FONTS, 4),
        validation=glyph_split("validation", NEW_CHARACTERS, TRAIN_FONTS, 1),
        test=glyph_split("test", NEW_CHARACTERS, TRAIN_FONTS, 3),
    )
    ood = {"ood_fonts": glyph_split("ood", PRETRAIN_CHARACTERS, OOD_FONTS, 2),
           "ood_corruptions": corrupted_digits(letters["test"].select_columns(["image", "label"]), seed=0)}
    return {"pretrain": protocol.write_task(letters, folder / "data" / "letters"), "epochs": args.glyph_epochs,
            "new": protocol.write_task(new, folder / "data" / "new-letters"), "ood": ood}


def digit_tasks(args: ClaimsArguments, folder: Path) -> dict:
    """The digits benchmark's tasks: scikit-learn's digits with 15 % of the training split held out for validation,
    0-4 to pre-train on, 5-9 to adapt to; and MNIST, split three ways."""
    digits = digits_dataset()
    held = digits["train"].train_test_split(test_size=0.15, seed=0, stratify_by_column="label")
    digits = DatasetDict(train=held["train"], validation=held["test"], test=digits["test"])
    all_digits = protocol.write_task(digits, folder / "data" / "digits")
    mnist = mnist_digits()
    mnist = split_three(mnist, validation=500, test=len(mnist) - args.mnist_train - 500)
    ood = {"ood_fonts": font_digits(variants=2, seed=0), "ood_corruptions": corrupted_digits(digits["test"], seed=0),
           "ood_mnist": mnist["test"]}
    return {"pretrain": DataArguments(dataset_name=all_digits.dataset_name, keep_labels="0,1,2,3,4"),
            "new": DataArguments(dataset_name=all_digits.dataset_name, keep_labels="5,6,7,8,9"),
            "epochs": args.digit_epochs, "all": all_digits,
            "mnist": protocol.write_task(mnist, folder / "data" / "mnist"), "ood": ood,
            "reverse": digits["test"]}


def pretrained(args: ClaimsArguments, families: list[str], task: dict, folder: Path) -> dict:
    """Each family tuned on the pre-training task, then trained from every pre-training seed."""
    trial_list = protocol.trials(args.tuning_trials)
    seeds = [args.seed + index for index in range(args.pretrain_seeds)]
    result = {}
    for name in families:
        family = protocol.FAMILIES[name]
        print(f"  tuning the {family.display}: {len(trial_list)} trials", flush=True)
        tuned = protocol.tune(family, trial_list, task["pretrain"], task["epochs"], seeds[0], folder / "pretrained")
        runs = {seeds[0]: tuned["best"]}
        for seed in seeds[1:]:
            runs[seed] = protocol.train_family(family, tuned["trial"], task["pretrain"], task["epochs"], seed,
                                               folder / "pretrained" / f"{name}-chosen-seed{seed}")
        result[name] = {"trial": asdict(tuned["trial"]), "tuning": tuned["runs"],
                        "models": {seed: run["folder"] for seed, run in runs.items()},
                        "validation": float(np.mean([run["validation"] for run in runs.values()])),
                        "parameters": tuned["best"]["parameters"]}
    return result


def low_shot(args: ClaimsArguments, families: list[str], task: dict, models: dict, folder: Path) -> dict:
    """Per family and shot count: the mode chosen on the new classes' validation split (first pre-trained model,
    `SELECTION_SEEDS`), then test top-1 of every pre-trained model × adaptation seed in that mode."""
    splits = {name: protocol.adaptation_data(task["new"], name) for name in ("validation", "test")}
    adapt_seeds = list(range(args.adapt_seeds))
    results = {}
    for name in families:
        family, checkpoints = protocol.FAMILIES[name], models[name]["models"]
        first = next(iter(checkpoints.values()))
        results[name] = {}
        for shots in (int(k) for k in args.shots.split(",")):
            def run(split, checkpoint, mode, seed, tag):
                path = folder / "adapt" / name / f"{split}-{mode}-{shots}shot-{tag}-a{seed}.json"
                return protocol.adapt_once(checkpoint, family, splits[split], task["new"], mode, shots, seed,
                                           args.adapt_steps, path)

            selection = {mode: float(np.mean([run("validation", first, mode, seed, "first")
                                              for seed in protocol.SELECTION_SEEDS])) for mode in family.modes}
            mode = max(selection, key=selection.get)
            test = {str(p): [run("test", checkpoint, mode, seed, f"p{p}") for seed in adapt_seeds]
                    for p, checkpoint in checkpoints.items()}
            results[name][str(shots)] = {"selection": selection, "mode": mode, "test": test}
            print(f"  {family.display} {shots}-shot: mode {mode} (validation {selection}), test top-1 "
                  f"{100 * np.mean(sum(test.values(), [])):.1f} %", flush=True)
    return results


def evaluate_sets(checkpoint: str, sets: dict) -> dict:
    """Top-1 of a saved model on each set (a `Dataset`, or a `DatasetDict` whose splits are averaged); kept in the
    model's folder."""

    def compute() -> dict:
        model = AutoModelForImageClassification.from_pretrained(checkpoint)
        processor = NACImageProcessor.from_pretrained(checkpoint)
        scores = {}
        for name, data in sets.items():
            splits = data.values() if isinstance(data, DatasetDict) else [data]
            scores[name] = float(np.mean([accuracy_on(model, processor, split) for split in splits]))
        return scores

    return protocol.cached(Path(checkpoint) / f"evaluation-{'-'.join(sets)}.json", compute)


def learned(models: dict, name: str) -> tuple[float, float]:
    """The NAC's and a baseline's mean validation top-1 on the pre-training task."""
    return models["nac"]["validation"], models[name]["validation"]


def comparison_rows(claim_ids: list[str], benchmark: str, scores: dict, models: dict) -> list[dict]:
    """Rows comparing the NAC with each baseline from per-seed scores: scores[family][seed][claim_id]."""
    rows = []
    for claim_id in claim_ids:
        for name in list(models)[1:]:
            paired = protocol.paired_interval({s: [v[claim_id]] for s, v in scores["nac"].items()},
                                              {s: [v[claim_id]] for s, v in scores[name].items()})
            rows.append(row(claim_id, benchmark, protocol.FAMILIES[name].display, paired,
                            learned=learned(models, name)))
    return rows


def low_shot_rows(benchmark: str, results: dict, models: dict) -> list[dict]:
    rows = []
    for shots, nac in results["nac"].items():
        for name in list(models)[1:]:
            baseline = results[name][shots]
            rows.append(row(f"low_shot_{shots}", benchmark, protocol.FAMILIES[name].display,
                            protocol.paired_interval(nac["test"], baseline["test"]), learned=learned(models, name),
                            nac_mode=nac["mode"], baseline_mode=baseline["mode"]))
    return rows


def dropping_point(checkpoint: str, data_args: DataArguments, repeats: int) -> dict:
    """The fewest processor modules (kernel-mass order) whose validation top-1 is within 3 points of the full
    model's, then measured on the test split: top-1 of both and the speed-up, timed beside the full model."""
    full = AutoModelForImageClassification.from_pretrained(checkpoint).eval()
    validation, test = (load_evaluation_set(checkpoint, data_args, split=split) for split in ("validation", "test"))
    full_validation = top1(predict(full, validation), validation.labels)
    _, scores = module_scores(full, "kernel_mass")
    for count in [*DROPPING_KEEP, full.config.num_processor_modules]:
        model = copy.deepcopy(full)
        drop_modules(model, keep_processor=kept_modules(scores, count, "processor").tolist())
        if top1(predict(model, validation), validation.labels) >= full_validation - MAX_LOSS:
            break
    measured = measure_dropping(model, test, repeats, full)
    return {"processor_modules": count, "accuracy": measured["accuracy"], "speedup": measured["speedup"],
            "gflops": measured["gflops"], "full_accuracy": top1(predict(full, test), test.labels)}


def exit_point(checkpoint: str, data_args: DataArguments, repeats: int) -> dict:
    """The lowest exit threshold whose validation top-1 is within 3 points of the full model's, then measured on the
    test split: top-1 of both, the mean layers run and the speed-up (batch 256), timed beside the full model."""
    full = AutoModelForImageClassification.from_pretrained(checkpoint).eval()
    validation, test = (load_evaluation_set(checkpoint, data_args, split=split) for split in ("validation", "test"))
    full_validation = top1(predict(full, validation), validation.labels)
    model = copy.deepcopy(full)
    for threshold in EXIT_THRESHOLDS:
        model.config.exit_threshold = threshold
        if top1(predict(model, validation), validation.labels) >= full_validation - MAX_LOSS:
            break
    measured = measure_exit(model, test, single_examples=8, repeats=repeats, full=full)
    return {"threshold": threshold, "accuracy": measured["accuracy"], "speedup": measured["speedup"],
            "mean_layers": measured["mean_layers"], "full_accuracy": top1(predict(full, test), test.labels)}


def operating_point_rows(benchmark: str, checkpoints: dict, data_args: DataArguments, repeats: int) -> tuple:
    """The dropping and early-exit rows of the NACs in `checkpoints` (by seed), each at its own operating point."""
    rows, details = [], {}
    for claim_id, measure in (("dropping", dropping_point), ("early_exit", exit_point)):
        points = {seed: measure(checkpoint, data_args, repeats) for seed, checkpoint in checkpoints.items()}
        paired = protocol.paired_interval({s: [p["accuracy"]] for s, p in points.items()},
                                          {s: [p["full_accuracy"]] for s, p in points.items()})
        rows.append(row(claim_id, benchmark, "the same NAC, whole", paired,
                        speedups=[round(p["speedup"], 2) for p in points.values()]))
        details[claim_id] = points
        print(f"  {claim_id}: {points}", flush=True)
    return rows, details


def run_glyphs(args: ClaimsArguments, families: list[str], folder: Path) -> tuple[list[dict], dict]:
    task = glyph_tasks(args, folder)
    models = pretrained(args, families, task, folder)
    adapted = low_shot(args, families, task, models, folder)
    scores = {name: {str(s): evaluate_sets(c, task["ood"]) for s, c in models[name]["models"].items()}
              for name in families}
    rows = low_shot_rows("glyphs", adapted, models)
    rows += comparison_rows(list(task["ood"]), "glyphs", scores, models)
    point_rows, points = operating_point_rows("glyphs", models["nac"]["models"], task["pretrain"], args.repeats)
    return rows + point_rows, {"pretrained": models, "low_shot": adapted, "ood": scores, "operating_points": points}


def run_digits(args: ClaimsArguments, families: list[str], folder: Path) -> tuple[list[dict], dict]:
    task = digit_tasks(args, folder)
    models = pretrained(args, families, task, folder)
    adapted = low_shot(args, families, task, models, folder)
    trained = {"all": {}, "mnist": {}}
    scores = {}
    for name in families:  # the setting tuned on 0-4, trained on all ten digits and on MNIST
        family, trial = protocol.FAMILIES[name], protocol.Trial(**models[name]["trial"])
        scores[name] = {}
        for seed in models[name]["models"]:
            runs = {kind: protocol.train_family(family, trial, task[kind], epochs, seed,
                                                folder / kind / f"{name}-seed{seed}")["folder"]
                    for kind, epochs in (("all", args.all_digit_epochs), ("mnist", args.mnist_epochs))}
            for kind, checkpoint in runs.items():
                trained[kind].setdefault(name, {})[seed] = checkpoint
            scores[name][str(seed)] = {**evaluate_sets(runs["all"], task["ood"]),
                                       "ood_mnist_reverse": evaluate_sets(runs["mnist"], {"reverse": task["reverse"]})["reverse"]}
    rows = low_shot_rows("digits", adapted, models)
    rows += comparison_rows([*task["ood"], "ood_mnist_reverse"], "digits", scores, models)
    point_rows, points = operating_point_rows("digits", trained["all"]["nac"], task["all"], args.repeats)
    return rows + point_rows, {"pretrained": models, "low_shot": adapted, "trained": trained, "ood": scores,
                               "operating_points": points}


BENCHMARKS = {"glyphs": run_glyphs, "digits": run_digits}


def main(argv: list[str] | None = None) -> None:
    (args,) = argument_parser(__doc__, ClaimsArguments).parse_args_into_dataclasses(argv)
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.WARNING, stream=sys.stdout)
    quiet_libraries()
    families = ["nac", *args.baselines.split(",")]
    unknown = sorted(set(families) - set(protocol.FAMILIES)) + sorted(set(args.benchmarks.split(",")) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"unknown {unknown}: families are {sorted(protocol.FAMILIES)}, benchmarks {sorted(BENCHMARKS)}")
    start, rows, details = time.perf_counter(), [], {}
    for benchmark in args.benchmarks.split(","):
        print(f"{benchmark}:", flush=True)
        benchmark_rows, details[benchmark] = BENCHMARKS[benchmark](args, families, Path(args.output_dir) / benchmark)
        rows += benchmark_rows
    table = claims_table(rows)
    seconds = time.perf_counter() - start
    summary = {
        "command": " ".join(["python", "-m", "benchmarks.paper_claims", *(sys.argv[1:] if argv is None else argv)]),
        "protocol": {"tuning_trials": {name: args.tuning_trials for name in families},
                     "pretrain_seeds": args.pretrain_seeds, "adapt_seeds": args.adapt_seeds,
                     "selection": "validation", "trials": [asdict(t) for t in protocol.trials(args.tuning_trials)],
                     "interval": "Student-t 95 % over pre-training seeds of the within-seed mean paired differences"},
        "arguments": asdict(args), "rows": rows, "table": table, "details": details, "wall_seconds": round(seconds, 1),
    }
    write_json(args.results, summary)
    print(f"\n{table}\n\nwall time: {seconds / 60:.1f} min; wrote {args.results}")


if __name__ == "__main__":
    main()
