"""Adapt a pretrained classifier to a new label set from a few examples per label, and save the adapted model.

    python scripts/few_shot.py --model_name_or_path outputs/nac-digits-0-4 --keep_labels 5,6,7,8,9 \\
        --shots 5 --modes codes --seed 0 --output_dir outputs/nac-digits-5-9-5shot

Samples --shots training examples per label (stratified, fixed by --seed), loads the checkpoint with a new classifier
for the labels, trains in one mode — `full` (everything), `head` (linear probe), `codes` (a NAC's module codes and
the head), `lora` (PEFT LoRA adapters on the attention projections, and the head; merged into the weights before
saving) or `extend` (--extend_modules new processor modules and the head) — for --max_steps steps at the mode's
learning rate, evaluates top-1 on the full evaluation split, and saves the adapted model, its image processor or
tokenizer and `few_shot.json` (base checkpoint, mode, shots, seed, accuracy) to --output_dir, where `from_pretrained`
and `pipeline(..., model=output_dir)` read them and from which `scripts/push_to_hub.py` (or `nac_hf.hub.publish`)
makes a repository whose card states them. --push_to_hub --hub_model_id org/name publishes it at the end, through the
same assembly and load check as scripts/train.py (without a token it stops before adapting). Data arguments are those
of scripts/train.py (with none, the digits of scikit-learn). To repeat adaptations over modes, shot counts and seeds:
`python -m benchmarks.few_shot`.
"""

import json
import logging
import sys
from pathlib import Path

import transformers
from transformers import AutoConfig, HfArgumentParser, TrainingArguments

from nac_hf.data import DIGITS_DATASET_ID, DIGITS_SOURCE, DataArguments, load_classification_data
from nac_hf.few_shot import FewShotArguments, adapt, few_shot_training_defaults
from nac_hf.hub import publish, run_repo_id
from nac_hf.training import ModelArguments, build_processor, end_distributed, make_compute_metrics

logger = logging.getLogger(__name__)


def parse() -> tuple[FewShotArguments, DataArguments, TrainingArguments]:
    parser = HfArgumentParser((FewShotArguments, DataArguments, TrainingArguments))
    parser.set_defaults(**few_shot_training_defaults(), shots="5", modes="codes")
    args, data_args, training_args = parser.parse_args_into_dataclasses()
    if len(args.shot_counts) != 1 or len(args.mode_list) != 1:
        parser.error(f"scripts/few_shot.py adapts once: give one --shots count and one --modes entry (got "
                     f"{args.shots!r}, {args.modes!r}); python -m benchmarks.few_shot repeats over several")
    if args.mode_list == ["prototype"]:
        parser.error("mode 'prototype' trains nothing and has no model to save; choose full, head, codes, lora or "
                     "extend")
    return args, data_args, training_args


def main() -> None:
    args, data_args, training_args = parse()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, stream=sys.stdout)
    transformers.utils.logging.set_verbosity_warning()
    repo_id = run_repo_id(training_args) if training_args.push_to_hub else None  # no token: stop before adapting
    data = load_classification_data(data_args, seed=training_args.seed, cache_dir=args.cache_dir)
    config = AutoConfig.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    model_args = ModelArguments(model_name_or_path=args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    processor = build_processor(model_args, config, data)
    mode, shots = args.mode_list[0], args.shot_counts[0]
    model, record = adapt(args, data, data_args, training_args, processor, mode, shots, training_args.seed,
                          make_compute_metrics(len(data.label_names)))
    end_distributed()
    if training_args.process_index != 0:
        return
    if mode == "lora":
        model = model.merge_and_unload()
    for parameter in model.parameters():  # saved as a model that trains whole again when loaded
        parameter.requires_grad_(True)
    output_dir = Path(training_args.output_dir)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    record = {
        "model_name_or_path": args.model_name_or_path, "data": data.source, "labels": data.label_names,
        "dataset_id": data_args.dataset_name or (DIGITS_DATASET_ID if data.source == DIGITS_SOURCE else None),
        "modality": data.modality, "eval_split": data.eval_split, "eval_examples": len(data.dataset["validation"]),
        "mode": mode, "shots": shots, "learning_rate": args.learning_rate(mode),
        **record,
    }
    (output_dir / "few_shot.json").write_text(json.dumps(record, indent=2))
    print(f"{mode}, {shots}-shot, seed {record['seed']}: top-1 {100 * record['top1_accuracy']:.2f} % on "
          f"{record['eval_examples']} evaluation examples; model saved to {output_dir}")
    if repo_id is not None:
        url = publish(output_dir, repo_id, private=bool(training_args.hub_private_repo),
                      revision=training_args.hub_revision, token=training_args.hub_token)
        logger.info("published %s: %s", repo_id, url)


if __name__ == "__main__":
    main()
