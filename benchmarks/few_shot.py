"""python -m benchmarks.few_shot --model_name_or_path outputs/nac-digits-0-4 --keep_labels 5,6,7,8,9 \\
    --shots 1,5,10 --seeds 5 --modes full,head,codes,lora,extend --output_dir outputs/few-shot

Few-shot adaptation of a pretrained classifier to a new label set, reported as mean ± std top-1 over seeds.

For every mode, shot count and seed: sample that many training examples per label (fixed by the seed), load the
checkpoint with a new classifier for the labels, train in the mode — `full` (everything), `head` (linear probe) or
`codes` (a NAC's module codes and the head), `lora` (PEFT LoRA adapters on the attention projections, and the
head) or `extend` (--extend_modules new processor modules, --extend_init mirror or random, and the head; the rest
frozen) — for --max_steps steps at the mode's learning rate (--full_learning_rate, --head_learning_rate,
--codes_learning_rate, --lora_learning_rate, --extend_learning_rate), and evaluate top-1 on the full evaluation
split; or, in `prototype` mode, train nothing and classify by the nearest class mean of the shots' features.
Writes few_shot_results.json to --output_dir. Data arguments are those of scripts/train.py (with none, the digits
of scikit-learn); any TrainingArguments flag works except --learning_rate, which each mode sets. To adapt once and
keep the adapted model: scripts/few_shot.py.

This module also holds what the few-shot experiments share (`benchmarks.few_shot_demo`, `benchmarks.paper_claims`):
the non-modular baseline (`vit_baseline`), training it and a NAC alike (`pretrain`, `train_nac_and_vit`) and
pre-training both on some digits and adapting them to the others (`pretrain_and_adapt`).
"""

import logging
import sys
import time
from pathlib import Path

from transformers import AutoConfig, PreTrainedModel, TrainingArguments, ViTConfig, ViTForImageClassification
from transformers import set_seed

from nac_hf.data import DataArguments, load_classification_data
from nac_hf.few_shot import FewShotArguments, few_shot_run, few_shot_training_defaults
from nac_hf.training import (
    ModelArguments,
    build_model,
    build_processor,
    end_distributed,
    make_compute_metrics,
    make_trainer,
    training_arguments_defaults,
)

from .common import argument_parser, mean_std, quiet_libraries, write_json


logger = logging.getLogger(__name__)

RESULTS_FILE = "few_shot_results.json"
# The low-shot protocol of the experiments: pre-trained on these digits, adapted to those.
PRETRAIN_LABELS = "0,1,2,3,4"
NEW_LABELS = "5,6,7,8,9"


def results_header(args: FewShotArguments, config, data, training_args: TrainingArguments, seeds: list[int]) -> dict:
    """What the results of `run_few_shot` say besides the accuracies: the model, the data and the settings."""
    scheduler = training_args.lr_scheduler_type  # an enum member
    return {
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
    for mode in ("codes", "extend"):
        if mode in args.mode_list and config.model_type != "nac":
            raise ValueError(
                f"mode {mode!r} works on the modules of a NAC, and {args.model_name_or_path} is a "
                f"{config.model_type!r} model; leave {mode!r} out of --modes"
            )
    model_args = ModelArguments(
        model_name_or_path=args.model_name_or_path, cache_dir=args.cache_dir, trust_remote_code=args.trust_remote_code
    )
    processor = build_processor(model_args, config, data)
    compute_metrics = make_compute_metrics(len(data.label_names))
    seeds = [training_args.seed + offset for offset in range(args.seeds)]
    results = results_header(args, config, data, training_args, seeds)
    name = Path(args.model_name_or_path).name or args.model_name_or_path
    for mode in args.mode_list:
        per_shots = {}
        for shots in args.shot_counts:
            runs = []
            for seed in seeds:
                run = few_shot_run(args, data, data_args, training_args, processor, mode, shots, seed, compute_metrics)
                logger.info("%s, %s, %d-shot, seed %d: top-1 %.4f", name, mode, shots, seed, run["top1_accuracy"])
                runs.append(run)
            accuracies = [run["top1_accuracy"] for run in runs]
            mean, std = mean_std(accuracies)
            per_shots[str(shots)] = {"accuracies": accuracies, "mean": mean, "std": std, "runs": runs}
            logger.info("%s, %s, %d-shot: top-1 %.2f ± %.2f %%", name, mode, shots, 100 * mean, 100 * std)
        settings = {"learning_rate": args.learning_rate(mode), "trainable_parameters": runs[-1]["trainable_parameters"]}
        if mode == "extend":
            settings.update(added_modules=args.extend_modules, init=args.extend_init)
        results["modes"][mode] = {"settings": settings, "shots": per_shots}
    if training_args.process_index == 0:
        write_json(Path(training_args.output_dir) / RESULTS_FILE, results)
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


def vit_baseline(num_labels: int, id2label: dict, label2id: dict, dropout: float = 0.0) -> ViTForImageClassification:
    """A ViT with about as many parameters as the NAC `digits` preset (1.1 M), reading the same 16×16 gray images:
    patches of 4, hidden size 128, 6 layers of 4 heads, MLP 448; `dropout` on its hidden states and attention."""
    config = ViTConfig(
        image_size=16, patch_size=4, num_channels=1, hidden_size=128, num_hidden_layers=6, num_attention_heads=4,
        intermediate_size=448, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        num_labels=num_labels, id2label=id2label, label2id=label2id,
    )
    return ViTForImageClassification(config)


def train_nac_and_vit(
    data_args: DataArguments, epochs: float, seed: int, folder: Path, config_overrides: str | None = None
) -> tuple[dict, object, dict]:
    """A NAC (the `digits` preset, with `config_overrides`) and the ViT baseline (`vit_baseline`) trained alike on
    `data_args` (`pretrain`: scripts/train.py's settings, `epochs` epochs), each saved to `folder / "nac"` and
    `folder / "vit"`: the models (by those names), their shared processor and each one's parameters, held-out top-1
    and training seconds."""
    data = load_classification_data(data_args, seed=seed)
    set_seed(seed)
    nac = build_model(ModelArguments(preset="digits", config_overrides=config_overrides), data)
    processor = build_processor(ModelArguments(), nac.config, data)  # 16×16 gray pixel_values, read by both
    set_seed(seed)
    models = {"nac": nac, "vit": vit_baseline(len(data.label_names), data.id2label, data.label2id)}
    metrics = {}
    for name, model in models.items():
        settings = {
            **training_arguments_defaults(), "output_dir": str(folder / name), "num_train_epochs": epochs,
            "eval_strategy": "no", "save_strategy": "no", "logging_strategy": "no", "disable_tqdm": True,
            "seed": seed,
        }
        tick = time.perf_counter()
        result = pretrain(model, processor, data_args, TrainingArguments(**settings))
        metrics[name] = {"top1_accuracy": result["eval_top1_accuracy"], "parameters": model.num_parameters(),
                         "seconds": round(time.perf_counter() - tick, 1)}
        print(f"  {name}: {model.num_parameters():,} parameters, top-1 {100 * result['eval_top1_accuracy']:.2f} % "
              f"in {metrics[name]['seconds']:.0f} s", flush=True)
    return models, processor, metrics


def pretrain_and_adapt(
    output_dir: Path, modes: dict[str, str], shots: str, seeds: int, pretrain_epochs: float, seed: int,
    config_overrides: str | None = None,
) -> tuple[dict, dict]:
    """The low-shot protocol: a NAC and the ViT baseline pre-trained alike on the digits `PRETRAIN_LABELS`
    (`train_nac_and_vit`, into `output_dir / "pretrained"`), then each adapted to `NEW_LABELS` in its `modes`
    ({"nac": "full,head,codes", "vit": "full,head"}) at each of `shots`, `seeds` seeds each (`run_few_shot` with
    scripts/few_shot.py's settings, into `output_dir / "few-shot"`). Returns the pre-training metrics and the few-shot
    results, both by model."""
    print(f"pre-training on digits {PRETRAIN_LABELS}", flush=True)
    _, _, pretraining = train_nac_and_vit(DataArguments(keep_labels=PRETRAIN_LABELS), pretrain_epochs, seed,
                                          output_dir / "pretrained", config_overrides)
    results = {}
    for name, model_modes in modes.items():
        print(f"adapting the {name} to digits {NEW_LABELS}", flush=True)
        args = FewShotArguments(model_name_or_path=str(output_dir / "pretrained" / name), shots=shots, seeds=seeds,
                                modes=model_modes)
        settings = {**few_shot_training_defaults(), "output_dir": str(output_dir / "few-shot" / name)}
        results[name] = run_few_shot(args, DataArguments(keep_labels=NEW_LABELS), TrainingArguments(**settings))
    return pretraining, results


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


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__, FewShotArguments, DataArguments, TrainingArguments)
    parser.set_defaults(**few_shot_training_defaults())
    given = sys.argv[1:] if argv is None else argv
    if any(arg == "--learning_rate" or arg.startswith("--learning_rate=") for arg in given):
        parser.error("each mode has its own learning rate: use --full_learning_rate, --head_learning_rate, "
                     "--codes_learning_rate, --lora_learning_rate, --extend_learning_rate")
    few_shot_args, data_args, training_args = parser.parse_args_into_dataclasses(argv)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if training_args.should_log else logging.WARNING,
        stream=sys.stdout,
    )
    quiet_libraries()  # one model is loaded per run: keep transformers' per-load reports out of the log
    results = run_few_shot(few_shot_args, data_args, training_args)
    end_distributed()
    if training_args.process_index == 0:
        print(f"\ntop-1 accuracy (%) on {results['eval_examples']} evaluation examples, mean ± std over "
              f"{len(results['seeds'])} seeds:\n")
        print(results_table(results["modes"], few_shot_args.shot_counts))


if __name__ == "__main__":
    main()
