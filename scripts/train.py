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
the end, through the same assembly and load check as scripts/push_to_hub.py. See --help.
"""

import logging
import sys

import transformers
from transformers import HfArgumentParser, TrainingArguments

from nac_hf.training import DataArguments, ModelArguments, train, training_arguments_defaults


def main() -> None:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    parser.set_defaults(**training_arguments_defaults())
    model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if training_args.should_log else logging.WARNING,
        stream=sys.stdout,
    )
    transformers.utils.logging.set_verbosity(logging.INFO if training_args.should_log else logging.WARNING)
    train(model_args, data_args, training_args)


if __name__ == "__main__":
    main()
