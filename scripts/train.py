"""Train a Neural Attentive Circuit with Trainer.

With no data argument it trains the `digits` preset on the handwritten digits that ship with scikit-learn (no
download) and evaluates on a fixed held-out 20 %. Runs unchanged under

    python scripts/train.py [--output_dir DIR]
    accelerate launch scripts/train.py
    accelerate launch --multi_gpu --num_processes N scripts/train.py
    torchrun --nproc_per_node N scripts/train.py

Data: --dataset_name (a Hub image or text classification dataset), --train_dir/--validation_dir (image folders) or
--train_file/--validation_file (csv, json, parquet texts). Model: --model_name_or_path, or --preset with
--config_overrides "k=v,...". Any TrainingArguments flag works (--bf16, --activation_checkpointing,
--resume_from_checkpoint last, --report_to, ...). --push_to_hub --hub_model_id org/name publishes the trained model at
the end, through the same assembly and load check as scripts/push_to_hub.py. On CPUs every core is used
(--cpu_threads to choose), and memory a step frees is kept for the next (--keep_freed_memory false not to). See
--help.
"""

import logging
import sys

import transformers
from transformers import HfArgumentParser, set_seed

from nac_hf.hub import publish, run_repo_id
from nac_hf.training import (
    DataArguments,
    ModelArguments,
    NACTrainingArguments,
    build_model,
    build_processor,
    end_distributed,
    evaluate_model,
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
    """One run: data → model → train → evaluate → record → publish. Returns the metrics."""
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
    if trainer.is_world_process_zero():
        record_run(trainer, data, model_args, data_args, metrics)
        if repo_id is not None:
            url = publish(training_args.output_dir, repo_id, private=bool(training_args.hub_private_repo),
                          revision=training_args.hub_revision, token=training_args.hub_token)
            logging.getLogger(__name__).info("published %s: %s", repo_id, url)
    return metrics


def main() -> None:
    parser = HfArgumentParser((ModelArguments, DataArguments, NACTrainingArguments))
    parser.set_defaults(**training_arguments_defaults())
    model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    level = logging.INFO if training_args.should_log else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level, stream=sys.stdout)
    transformers.utils.logging.set_verbosity(level)
    run(model_args, data_args, training_args)
    end_distributed()


if __name__ == "__main__":
    main()
