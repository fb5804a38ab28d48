"""python -m benchmarks.paper_claims --output_dir outputs/paper-claims [--seeds 5] [--shots 1,5,10]
    [--pretrain_epochs 40] [--train_epochs 60] [--font_variants 4] [--module_dropping FILE]
    [--config_overrides "processors_read_in=true,num_input_modules=32"]

The paper's claims, side by side, in one command: a NAC (the `digits` preset) against a ViT of about as many
parameters, same data, same training, several seeds, on two CPU cores.

1. Low-shot adaptation: both models pre-trained on digits 0-4 (scripts/train.py's settings, --pretrain_epochs), then
   adapted to 5-9 from k examples per digit in every mode (NAC: full, head, codes, extend, prototype; ViT: full,
   head, prototype) with scripts/few_shot.py's settings, --seeds adaptation seeds; each model's best mode per shot
   count (`benchmarks.few_shot.pretrain_and_adapt`).
2. Out of distribution: both models trained on all digits (scripts/train.py's settings, --train_epochs), once per
   seed, then evaluated on the held-out test digits, on the digits rendered from matplotlib's fonts
   (`benchmarks.robustness.font_digits`, --font_variants drawings per digit and font) and on the test digits under
   every corruption at every severity (`benchmarks.robustness.corrupted_digits`). Nothing is tuned on these sets.
3. With --module_dropping (module_dropping.json files of benchmarks.module_dropping, one per trained model,
   comma-separated), the module-dropping row.

--config_overrides changes fields of the NAC's `digits` preset, as in scripts/train.py; the ViT stays as it is.

Writes DIR/paper_claims.json ({"rows": [{"id", "claim", "paper", "nac", "baseline", "nac_std", "baseline_std"}, ...],
"table": ..., and every measurement}) and prints the Markdown table "the paper's claims and this implementation".
"""

import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nac_hf.data import DataArguments, digits_dataset

from .claims import RESULTS_FILE, accuracy_on, accuracy_row, best_mode, claims_table, dropping_row
from .common import argument_parser, mean_std, quiet_libraries, write_json
from .few_shot import pretrain_and_adapt, train_nac_and_vit
from .module_dropping import load as load_dropping
from .robustness import corrupted_digits, font_digits


MODES = {"nac": "full,head,codes,extend,prototype", "vit": "full,head,prototype"}


@dataclass
class ClaimsArguments:
    output_dir: str = field(default="outputs/paper-claims", metadata={"help": "Where models and results go."})
    seeds: int = field(default=5, metadata={"help": "Adaptation seeds, and training seeds of the OOD models."})
    shots: str = field(default="1,5,10", metadata={"help": "Examples per new label, comma-separated."})
    pretrain_epochs: float = field(default=40, metadata={"help": "Epochs of pre-training on digits 0-4."})
    train_epochs: float = field(default=60, metadata={"help": "Epochs of training on all digits (OOD models)."})
    font_variants: int = field(default=4, metadata={"help": "Drawings of each digit in each font."})
    module_dropping: str | None = field(
        default=None,
        metadata={"help": "module_dropping.json files (or folders holding one), one per trained model, comma-separated."},
    )
    seed: int = field(default=42, metadata={"help": "Seed of pre-training and of the first OOD model."})
    config_overrides: str | None = field(default=None, metadata={"help": "NAC fields to change, as in train.py."})


def low_shot(args: ClaimsArguments, output_dir: Path) -> tuple[list[dict], dict]:
    """The low-shot rows: each model's best mode at each shot count."""
    print("low-shot:", flush=True)
    pretraining, results = pretrain_and_adapt(output_dir, MODES, args.shots, args.seeds, args.pretrain_epochs,
                                              args.seed, args.config_overrides)
    rows = []
    for shots in (int(k) for k in args.shots.split(",")):
        (nac_mode, *_), (vit_mode, *_) = best_mode(results["nac"], shots), best_mode(results["vit"], shots)
        cell = {name: results[name]["modes"][mode]["shots"][str(shots)]["accuracies"]
                for name, mode in (("nac", nac_mode), ("vit", vit_mode))}
        rows.append(accuracy_row(f"low_shot_{shots}", cell["nac"], cell["vit"], nac_mode=nac_mode,
                                 baseline_mode=vit_mode))
        print(f"  {shots}-shot: NAC {rows[-1]['nac']:.1f} ± {rows[-1]['nac_std']:.1f} % ({nac_mode}), "
              f"ViT {rows[-1]['baseline']:.1f} ± {rows[-1]['baseline_std']:.1f} % ({vit_mode})", flush=True)
    return rows, {"pretraining": pretraining, "few_shot": results}


def out_of_distribution(args: ClaimsArguments, output_dir: Path) -> tuple[list[dict], dict]:
    test, fonts = digits_dataset()["test"], font_digits(variants=args.font_variants, seed=0)
    corruptions = corrupted_digits(test, seed=0)
    accuracy = {name: {"test": [], "fonts": [], "corruptions": [], "per_corruption": []} for name in MODES}
    for index in range(args.seeds):
        seed = args.seed + index
        print(f"out of distribution: training on all digits, seed {seed}", flush=True)
        models, processor, _ = train_nac_and_vit(DataArguments(), args.train_epochs, seed,
                                                 output_dir / f"ood-{seed}", args.config_overrides)
        for name, model in models.items():
            per_split = {split: accuracy_on(model, processor, data) for split, data in corruptions.items()}
            accuracy[name]["test"].append(accuracy_on(model, processor, test))
            accuracy[name]["fonts"].append(accuracy_on(model, processor, fonts))
            accuracy[name]["corruptions"].append(sum(per_split.values()) / len(per_split))
            accuracy[name]["per_corruption"].append(per_split)
            print(f"  {name}: test {100 * accuracy[name]['test'][-1]:.2f} %, fonts "
                  f"{100 * accuracy[name]['fonts'][-1]:.2f} %, corruptions "
                  f"{100 * accuracy[name]['corruptions'][-1]:.2f} %", flush=True)
    rows = [
        accuracy_row("ood", accuracy["nac"]["fonts"], accuracy["vit"]["fonts"]),
        accuracy_row("ood_corruptions", accuracy["nac"]["corruptions"], accuracy["vit"]["corruptions"]),
    ]
    in_distribution = {name: dict(zip(("mean", "std"), mean_std(accuracy[name]["test"]))) for name in MODES}
    return rows, {"accuracy": accuracy, "in_distribution": in_distribution, "font_examples": len(fonts),
                  "corruption_examples": len(corruptions["contrast_1"])}


def main(argv: list[str] | None = None) -> None:
    (args,) = argument_parser(__doc__, ClaimsArguments).parse_args_into_dataclasses(argv)
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.WARNING, stream=sys.stdout)
    quiet_libraries()
    output_dir = Path(args.output_dir)
    start = time.perf_counter()
    low_shot_rows, low_shot_details = low_shot(args, output_dir)
    ood_rows, ood_details = out_of_distribution(args, output_dir)
    rows = low_shot_rows + ood_rows
    if args.module_dropping:
        rows.append(dropping_row([load_dropping(path) for path in args.module_dropping.split(",")]))
    table = claims_table(rows)
    seconds = time.perf_counter() - start
    print(f"\nThe paper's claims and this implementation (mean ± std over {args.seeds} seeds):\n\n{table}\n\n"
          f"wall time: {seconds / 60:.1f} min")
    summary = {
        "command": " ".join(["python", "-m", "benchmarks.paper_claims", *sys.argv[1:]]),
        "arguments": asdict(args), "rows": rows, "table": table, "low_shot": low_shot_details,
        "out_of_distribution": ood_details, "wall_seconds": round(seconds, 1),
    }
    write_json(output_dir / RESULTS_FILE, summary)


if __name__ == "__main__":
    main()
