"""Few-shot adaptation of a pretrained classifier to a new label set, reported as mean ± std over seeds.

    python -m benchmarks.few_shot --model_name_or_path outputs/nac-digits-0-4 --keep_labels 5,6,7,8,9 \\
        --shots 1,5,10 --seeds 5 --modes full,head,codes,lora,extend --output_dir outputs/few-shot

For every mode, shot count and seed: sample that many training examples per label (fixed by the seed), load the
checkpoint with a new classifier for the labels, train in the mode — `full` (everything), `head` (linear probe) or
`codes` (a NAC's module codes and the head), `lora` (PEFT LoRA adapters on the attention projections, and the
head) or `extend` (--extend_modules new processor modules, --extend_init mirror or random, and the head; the rest
frozen) — for --max_steps steps at the mode's learning rate (--full_learning_rate, --head_learning_rate,
--codes_learning_rate, --lora_learning_rate, --extend_learning_rate), and evaluate top-1 on the full evaluation
split; or, in `prototype` mode, train nothing and classify by the nearest class mean of the shots' features.
Writes few_shot_results.json to --output_dir. Data arguments are those of scripts/train.py (with none, the digits
of scikit-learn); any TrainingArguments flag works except --learning_rate, which each mode sets.
"""

import json
import logging
import sys
from pathlib import Path

import transformers
from transformers import AutoConfig, HfArgumentParser, PreTrainedModel, TrainingArguments

from nac_hf.data import DataArguments, load_classification_data
from nac_hf.few_shot import FewShotArguments, few_shot_run, few_shot_training_defaults
from nac_hf.training import ModelArguments, build_processor, end_distributed, make_compute_metrics, make_trainer

from .common import mean_std


logger = logging.getLogger(__name__)

RESULTS_FILE = "few_shot_results.json"


def run_few_shot(
    args: FewShotArguments, data_args: DataArguments, training_args: TrainingArguments
) -> dict:
    """Every mode × shot count × seed; writes `few_shot_results.json` to `training_args.output_dir` and returns it.

    The results hold, per mode, its settings and, per shot count, the top-1 accuracy of each seed with their mean and
    standard deviation (fractions in [0, 1]).
    """
    data = load_classification_data(data_args, seed=training_args.seed, cache_dir=args.cache_dir)
    if "validation" not in data.dataset:
        raise ValueError("few-shot evaluation needs an evaluation split")
    config = AutoConfig.from_pretrained(
        args.model_name_or_path, cache_dir=args.cache_dir, trust_remote_code=args.trust_remote_code
    )
    model_args = ModelArguments(
        model_name_or_path=args.model_name_or_path, cache_dir=args.cache_dir, trust_remote_code=args.trust_remote_code
    )
    processor = build_processor(model_args, config, data)
    compute_metrics = make_compute_metrics(len(data.label_names))
    seeds = [training_args.seed + offset for offset in range(args.seeds)]
    for mode in ("codes", "extend"):
        if mode in args.mode_list and config.model_type != "nac":
            raise ValueError(
                f"mode {mode!r} works on the modules of a NAC, and {args.model_name_or_path} is a "
                f"{config.model_type!r} model; leave {mode!r} out of --modes"
            )

    scheduler = training_args.lr_scheduler_type  # an enum member
    results = {
        "model_name_or_path": args.model_name_or_path,
        "model_type": config.model_type,
        "data": data.source,
        "labels": data.label_names,
        "eval_examples": len(data.dataset["validation"]),
        "seeds": seeds,
        "settings": {
            "max_steps": training_args.max_steps,
            "per_device_train_batch_size": training_args.per_device_train_batch_size,
            "lr_scheduler_type": getattr(scheduler, "value", scheduler),
            "warmup_steps": training_args.warmup_steps,
            "weight_decay": training_args.weight_decay,
        },
        "modes": {},
    }
    name = Path(args.model_name_or_path).name or args.model_name_or_path
    for mode in args.mode_list:
        per_shots = {}
        trainable = None
        for shots in args.shot_counts:
            runs = []
            for seed in seeds:
                run = few_shot_run(args, data, data_args, training_args, processor, mode, shots, seed, compute_metrics)
                logger.info("%s, %s, %d-shot, seed %d: top-1 %.4f", name, mode, shots, seed, run["top1_accuracy"])
                runs.append(run)
                trainable = run["trainable_parameters"]
            accuracies = [run["top1_accuracy"] for run in runs]
            mean, std = mean_std(accuracies)
            per_shots[str(shots)] = {"accuracies": accuracies, "mean": mean, "std": std, "runs": runs}
            logger.info("%s, %s, %d-shot: top-1 %.2f ± %.2f %%", name, mode, shots, 100 * mean, 100 * std)
        settings = {"learning_rate": args.learning_rate(mode), "trainable_parameters": trainable}
        if mode == "extend":
            settings.update(added_modules=args.extend_modules, init=args.extend_init)
        results["modes"][mode] = {
            "settings": settings,
            "shots": per_shots,
        }

    if training_args.process_index == 0:
        output_dir = Path(training_args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
    return results


def pretrain(model: PreTrainedModel, processor, data_args: DataArguments, training_args: TrainingArguments) -> dict:
    """Train a ready-made classifier (a baseline that is not a NAC, or a NAC built by hand) on the data of
    `data_args` exactly as `scripts/train.py` trains a NAC: same data, transforms, collator, metrics and
    `Trainer`. Saves the model and its processor to `training_args.output_dir`; returns the final evaluation
    metrics. Seed before building the model: its initialisation draws from the global RNG."""
    data = load_classification_data(data_args, seed=training_args.seed)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if names != data.label_names:
        raise ValueError(f"the model's labels {names} are not the data's {data.label_names}; build it with "
                         "num_labels, id2label and label2id of the data")
    trainer = make_trainer(model, processor, data, data_args, training_args)
    trainer.train()
    trainer.save_model()
    return trainer.evaluate()


def results_table(rows: dict[str, dict], shot_counts: list[int]) -> str:
    """A Markdown table of top-1 accuracy (%): one row per name (e.g. 'NAC, codes'), one column per shot count.

    `rows` maps a row name to a mode's entry of `run_few_shot`'s results (its `"shots"` mapping is read).
    """
    header = "| model, mode | " + " | ".join(f"{k}-shot" for k in shot_counts) + " |"
    lines = [header, "|---|" + "---|" * len(shot_counts)]
    for name, entry in rows.items():
        cells = []
        for k in shot_counts:
            cell = entry["shots"].get(str(k))
            cells.append("—" if cell is None else f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = HfArgumentParser((FewShotArguments, DataArguments, TrainingArguments))
    parser.set_defaults(**few_shot_training_defaults())
    if any(arg == "--learning_rate" or arg.startswith("--learning_rate=") for arg in sys.argv[1:]):
        parser.error("each mode has its own learning rate: use --full_learning_rate, --head_learning_rate, "
                     "--codes_learning_rate, --lora_learning_rate, --extend_learning_rate")
    few_shot_args, data_args, training_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if training_args.should_log else logging.WARNING,
        stream=sys.stdout,
    )
    # One model is loaded per run: keep transformers' per-load reports (the new classifier) out of the log.
    transformers.utils.logging.set_verbosity_error()
    results = run_few_shot(few_shot_args, data_args, training_args)
    end_distributed()
    if training_args.process_index == 0:
        rows = {mode: entry for mode, entry in results["modes"].items()}
        print(f"\ntop-1 accuracy (%) on {results['eval_examples']} evaluation examples, mean ± std over "
              f"{len(results['seeds'])} seeds:\n")
        print(results_table(rows, few_shot_args.shot_counts))


if __name__ == "__main__":
    main()
