"""Few-shot adaptation of a pretrained classifier to a new label set, reported as mean ± std over seeds.

    python scripts/few_shot.py --model_name_or_path outputs/nac-digits-0-4 --keep_labels 5,6,7,8,9 \\
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

import logging
import sys

import transformers
from transformers import HfArgumentParser, TrainingArguments

from nac_hf.data import DataArguments
from nac_hf.few_shot import FewShotArguments, few_shot_training_defaults, results_table, run_few_shot
from nac_hf.training import end_distributed


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
