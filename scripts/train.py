"""Train a Neural Attentive Circuit with Trainer.

With no data argument it trains the `digits` preset on the handwritten digits that ship with scikit-learn (no
download) and evaluates on a fixed held-out 20 %. Runs unchanged under

    python scripts/train.py [--output_dir DIR]
    accelerate launch scripts/train.py
    accelerate launch --multi_gpu --num_processes N scripts/train.py
    accelerate launch --config_file accelerate_configs/fsdp.yaml --num_processes N scripts/train.py
    torchrun --nproc_per_node N scripts/train.py

Data: --dataset_name (a Hub image or text classification dataset), --train_dir/--validation_dir (image folders) or
--train_file/--validation_file (csv, json, parquet texts). A dataset without a validation split has
--validation_split_percentage of its training split held out for evaluation, and its test split (CIFAR's) is
evaluated once, at the end (test_results.json). --shots_per_label K trains on K examples of each label. Model:
--model_name_or_path, or --preset with --config_overrides "k=v,...". --recipe cifar or --recipe paper-tiny-imagenet
(nac_hf.recipes) sets the preset, schedule, augmentation (mixup, cutmix, repeated augmentation) and weight averaging
(--ema_decay) of a from-scratch run, as defaults that explicit flags still override:

    accelerate launch scripts/train.py --recipe cifar --dataset_name uoft-cs/cifar10

Any TrainingArguments flag works (--bf16, --activation_checkpointing, --resume_from_checkpoint last, --report_to,
...). --push_to_hub --hub_model_id org/name publishes the trained model at the end, through the same assembly and
load check as scripts/push_to_hub.py. On CPUs every core is used (--cpu_threads to choose), and memory a step frees
is kept for the next (--keep_freed_memory false not to). See --help.
"""

import argparse
import logging
import sys

import transformers
from transformers import HfArgumentParser, set_seed

from nac_hf.hub import publish, run_repo_id
from nac_hf.recipes import RECIPES, recipe_defaults
from nac_hf.training import (
    DataArguments,
    ModelArguments,
    NACTrainingArguments,
    build_model,
    build_processor,
    end_distributed,
    evaluate_model,
    evaluate_test,
    keep_freed_memory,
    load_run_data,
    make_trainer,
    record_run,
    resolve_resume,
    set_cpu_threads,
    train_model,
    training_arguments_defaults,
)


def run(model_args: ModelArguments, data_args: DataArguments, training_args: NACTrainingArguments) -> dict:
    """One run: data → model → train → evaluate (and test) → record → publish. Returns the metrics."""
    repo_id = run_repo_id(training_args) if training_args.push_to_hub else None  # no token: stop before training
    set_cpu_threads(training_args)
    if training_args.use_cpu and getattr(training_args, "keep_freed_memory", True):  # plain TrainingArguments too
        keep_freed_memory()
    set_seed(training_args.seed)
    data = load_run_data(data_args, training_args, cache_dir=model_args.cache_dir)
    model = build_model(model_args, data)
    processor = build_processor(model_args, model.config, data)
    trainer = make_trainer(model, processor, data, data_args, training_args)
    metrics = {}
    if training_args.do_train:
        metrics.update(train_model(trainer, resume_from_checkpoint=resolve_resume(training_args)))
    if training_args.do_eval:
        metrics.update(evaluate_model(trainer))
    if training_args.do_predict:
        metrics.update(evaluate_test(trainer))
    if trainer.is_world_process_zero():
        record_run(trainer, data, model_args, data_args, metrics)
        if repo_id is not None:
            url = publish(training_args.output_dir, repo_id, private=bool(training_args.hub_private_repo),
                          revision=training_args.hub_revision, token=training_args.hub_token)
            logging.getLogger(__name__).info("published %s: %s", repo_id, url)
    return metrics


def parse(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, NACTrainingArguments]:
    """The run's arguments: the script's defaults, then those of `--recipe` when one is named, then the flags given."""
    parser = HfArgumentParser((ModelArguments, DataArguments, NACTrainingArguments))
    parser.set_defaults(**training_arguments_defaults())
    named = argparse.ArgumentParser(add_help=False)
    named.add_argument("--recipe")
    named.add_argument("--dataset_name", "--dataset-name")
    chosen, _ = named.parse_known_args(argv)
    if chosen.recipe is not None:
        if chosen.recipe not in RECIPES:
            parser.error(f"--recipe takes one of {sorted(RECIPES)}, got {chosen.recipe!r}")
        parser.set_defaults(**recipe_defaults(chosen.recipe, chosen.dataset_name))
    return parser.parse_args_into_dataclasses(args=argv)


def main() -> None:
    model_args, data_args, training_args = parse()
    level = logging.INFO if training_args.should_log else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level, stream=sys.stdout)
    transformers.utils.logging.set_verbosity(level)
    run(model_args, data_args, training_args)
    end_distributed()


if __name__ == "__main__":
    main()
