"""python -m benchmarks.few_shot_demo --output_dir outputs/few-shot-demo [--seeds 5] [--shots 1,5,10]
    [--pretrain_epochs 40] [--seed 42]

The few-shot demo of the README, offline on two CPU cores: does a NAC adapt better from few examples than a
non-modular model of the same size?

1. Pre-train, on the digits 0-4 of scikit-learn's handwritten digits and with the same Trainer settings (those of
   scripts/train.py, --pretrain_epochs epochs), a NAC (the `digits` preset) and a ViT of about as many parameters
   (16x16 gray images in patches of 4, hidden size 128, 6 layers of 4 heads, MLP 448).
2. Adapt each to the digits 5-9 from 1, 5 and 10 examples per digit, for --seeds seeds, in every mode
   (NAC: full, head, codes; ViT: full, head), with the settings of scripts/few_shot.py, and evaluate top-1 on all
   180 test images of 5-9.
3. Print a Markdown table of mean ± std top-1 (%) and write everything to few_shot_demo.json in --output_dir.
"""

import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .common import argument_parser, quiet_libraries, write_json
from .few_shot import NEW_LABELS, PRETRAIN_LABELS, pretrain_and_adapt, results_table


MODES = {"nac": "full,head,codes", "vit": "full,head"}
NAMES = {"nac": "NAC", "vit": "ViT"}


@dataclass
class DemoArguments:
    output_dir: str = field(default="outputs/few-shot-demo", metadata={"help": "Where models and results go."})
    seeds: int = field(default=5, metadata={"help": "Few-shot runs per model, mode and shot count."})
    shots: str = field(default="1,5,10", metadata={"help": "Examples per new label, comma-separated."})
    pretrain_epochs: float = field(default=40, metadata={"help": "Pre-training epochs of both models."})
    seed: int = field(default=42, metadata={"help": "Seed of pre-training; few-shot seeds are 0 .. seeds - 1."})


def main(argv: list[str] | None = None) -> None:
    (args,) = argument_parser(__doc__, DemoArguments).parse_args_into_dataclasses(argv)
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.WARNING, stream=sys.stdout)
    logging.getLogger("benchmarks.few_shot").setLevel(logging.INFO)  # one line per run
    quiet_libraries()
    output_dir = Path(args.output_dir)
    start = time.perf_counter()
    pretraining, results = pretrain_and_adapt(output_dir, MODES, args.shots, args.seeds, args.pretrain_epochs,
                                              args.seed)
    rows = {f"{NAMES[name]}, {mode}": entry for name in MODES for mode, entry in results[name]["modes"].items()}
    table = results_table(rows, [int(k) for k in args.shots.split(",")])
    seconds = time.perf_counter() - start
    pre = ", ".join(f"{NAMES[name]} {100 * p['top1_accuracy']:.1f} %" for name, p in pretraining.items())
    print(f"\nTop-1 accuracy (%) on the {results['nac']['eval_examples']} test images of digits {NEW_LABELS} after "
          f"k-shot adaptation, mean ± std over {args.seeds} seeds (pre-trained on {PRETRAIN_LABELS}: {pre}):\n")
    print(table)
    print(f"\nwall time: {seconds / 60:.1f} min", flush=True)
    summary = {
        "command": " ".join(["python", "-m", "benchmarks.few_shot_demo", *sys.argv[1:]]),
        "arguments": asdict(args),
        "pretraining": pretraining,
        "few_shot": results,
        "table": table,
        "wall_seconds": round(seconds, 1),
    }
    write_json(output_dir / "few_shot_demo.json", summary)


if __name__ == "__main__":
    main()
