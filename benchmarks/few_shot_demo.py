"""The few-shot demo of the README, offline on two CPU cores: does a NAC adapt better from few examples than a
non-modular model of the same size?

    python -m benchmarks.few_shot_demo --output_dir outputs/few-shot-demo [--seeds 5] [--shots 1,5,10]

1. Pre-train, on the digits 0-4 of scikit-learn's handwritten digits and with the same Trainer settings (those of
   scripts/train.py, --pretrain_epochs epochs), a NAC (the `digits` preset) and a ViT of about as many parameters
   (16x16 gray images in patches of 4, hidden size 128, 6 layers of 4 heads, MLP 448).
2. Adapt each to the digits 5-9 from 1, 5 and 10 examples per digit, for --seeds seeds, in every mode
   (NAC: full, head, codes; ViT: full, head), with the settings of scripts/few_shot.py, and evaluate top-1 on all
   180 test images of 5-9.
3. Print a Markdown table of mean ± std top-1 (%) and write everything to few_shot_demo.json in --output_dir.
"""

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import transformers
from transformers import HfArgumentParser, TrainingArguments, set_seed

from nac_hf.data import DataArguments, load_classification_data
from nac_hf.few_shot import FewShotArguments, few_shot_training_defaults
from nac_hf.training import ModelArguments, build_model, build_processor, training_arguments_defaults

from .claims import vit_baseline
from .few_shot import pretrain, results_table, run_few_shot


PRETRAIN_LABELS = "0,1,2,3,4"
NEW_LABELS = "5,6,7,8,9"


@dataclass
class DemoArguments:
    output_dir: str = field(default="outputs/few-shot-demo", metadata={"help": "Where models and results go."})
    seeds: int = field(default=5, metadata={"help": "Few-shot runs per model, mode and shot count."})
    shots: str = field(default="1,5,10", metadata={"help": "Examples per new label, comma-separated."})
    pretrain_epochs: float = field(default=40, metadata={"help": "Pre-training epochs of both models."})
    seed: int = field(default=42, metadata={"help": "Seed of pre-training; few-shot seeds are 0 .. seeds - 1."})


def main() -> None:
    (args,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses()
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.WARNING, stream=sys.stdout)
    logging.getLogger("nac_hf.few_shot").setLevel(logging.INFO)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    output_dir = Path(args.output_dir)
    start = time.perf_counter()

    # 1. Pre-training on 0-4: the NAC as scripts/train.py builds it, the ViT by hand; one processor for both.
    pretrain_data_args = DataArguments(keep_labels=PRETRAIN_LABELS)
    data = load_classification_data(pretrain_data_args, seed=args.seed)
    set_seed(args.seed)
    nac = build_model(ModelArguments(preset="digits"), data)
    # The NACImageProcessor of scripts/train.py: 16x16 gray pixel_values, which the ViT reads as well.
    processor = build_processor(ModelArguments(), nac.config, data)
    set_seed(args.seed)
    vit = vit_baseline(len(data.label_names), data.id2label, data.label2id)
    models = {"NAC": ("nac", nac), "ViT": ("vit", vit)}
    pretraining = {}
    for name, (folder, model) in models.items():
        print(f"{name}: {model.num_parameters():,} parameters; pre-training on digits {PRETRAIN_LABELS}", flush=True)
        settings = {
            **training_arguments_defaults(),
            "output_dir": str(output_dir / f"pretrained-{folder}"),
            "num_train_epochs": args.pretrain_epochs,
            "eval_strategy": "no",
            "save_strategy": "no",
            "logging_strategy": "no",
            "disable_tqdm": True,
            "seed": args.seed,
        }
        tick = time.perf_counter()
        metrics = pretrain(model, processor, pretrain_data_args, TrainingArguments(**settings))
        seconds = time.perf_counter() - tick
        pretraining[name] = {
            "parameters": model.num_parameters(),
            "top1_accuracy": metrics["eval_top1_accuracy"],
            "seconds": round(seconds, 1),
        }
        print(f"{name}: top-1 {100 * metrics['eval_top1_accuracy']:.1f} % on the test images of {PRETRAIN_LABELS} "
              f"({seconds:.0f} s)", flush=True)

    # 2. Few-shot adaptation to 5-9.
    few_shot_data_args = DataArguments(keep_labels=NEW_LABELS)
    model_modes = {"NAC": "full,head,codes", "ViT": "full,head"}
    results, rows = {}, {}
    for name, (folder, model) in models.items():
        few_shot_args = FewShotArguments(
            model_name_or_path=str(output_dir / f"pretrained-{folder}"),
            shots=args.shots,
            seeds=args.seeds,
            modes=model_modes[name],
        )
        settings = {**few_shot_training_defaults(), "output_dir": str(output_dir / f"few-shot-{folder}")}
        tick = time.perf_counter()
        results[name] = run_few_shot(few_shot_args, few_shot_data_args, TrainingArguments(**settings))
        results[name]["seconds"] = round(time.perf_counter() - tick, 1)
        for mode, entry in results[name]["modes"].items():
            rows[f"{name}, {mode}"] = entry

    # 3. The table.
    shot_counts = [int(k) for k in args.shots.split(",")]
    table = results_table(rows, shot_counts)
    seconds = time.perf_counter() - start
    pre = ", ".join(f"{name} {100 * p['top1_accuracy']:.1f} %" for name, p in pretraining.items())
    print(
        f"\nTop-1 accuracy (%) on the {results['NAC']['eval_examples']} test images of digits {NEW_LABELS} after "
        f"k-shot adaptation, mean ± std over {args.seeds} seeds (pre-trained on {PRETRAIN_LABELS}: {pre}):\n"
    )
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
    (output_dir / "few_shot_demo.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
