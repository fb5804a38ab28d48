"""Drop processor modules from a trained NAC and save the smaller model, ready to serve or publish.

    python scripts/drop_modules.py --checkpoint outputs/nac-digits --keep_processor 4 --order loss \\
        --output_dir outputs/nac-digits-4-modules
    python scripts/drop_modules.py --checkpoint outputs/nac-digits --keep_processor 0.25 --order kernel_mass \\
        --output_dir outputs/nac-digits-quarter

--keep_processor (and --keep_input) take a count (`4`), a fraction (`0.25`) or indices (`0,3,7`). The modules that stay
are the best by --order: `kernel_mass` (default), `out_degree` or `in_degree` read the learned circuit and need no
data; `loss` ranks by what each module does for the predictions on --num_examples training examples of the data
arguments (those of scripts/train.py; with none, scikit-learn's digits); `random` uses --seed. The output folder holds
the model, its image processor or tokenizer and `dropped_modules.json` (which modules stayed, and the evaluation
top-1 before and after with --evaluate). `python -m benchmarks.module_dropping` measures the whole trade-off.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, HfArgumentParser

import nac_hf  # noqa: F401  (registers NAC with the Auto classes)
from nac_hf.data import DataArguments
from nac_hf.evaluation import load_evaluation_set, predict
from nac_hf.modalities import modality_of
from nac_hf.module_dropping import ORDERS, drop_modules


@dataclass
class DropArguments:
    checkpoint: str = field(metadata={"help": "Folder or Hub id of a trained NAC classifier."})
    output_dir: str = field(metadata={"help": "Where the smaller model is saved."})
    keep_processor: str = field(
        metadata={"help": "Processor modules that stay: a count ('4'), a fraction ('0.25') or indices ('0,3,7')."}
    )
    keep_input: str | None = field(
        default=None, metadata={"help": "Input modules that stay, as --keep_processor (not with processors_read_in)."}
    )
    order: str = field(default="kernel_mass", metadata={"help": "Which modules stay first.", "choices": list(ORDERS)})
    seed: int = field(default=0, metadata={"help": "Seed of the `random` order."})
    num_examples: int = field(default=512, metadata={"help": "Training examples that rank modules for `loss`."})
    evaluate: bool = field(default=False, metadata={"help": "Report top-1 on the evaluation split before and after."})


def parse_keep(text: str | None, flag: str) -> int | float | list[int] | None:
    """A count, a fraction or a list of indices, as `drop_modules` takes them."""
    if text is None:
        return None
    try:
        if "," in text:
            return [int(item) for item in text.split(",") if item.strip()]
        return float(text) if "." in text else int(text)
    except ValueError:
        raise ValueError(f"--{flag} takes a count ('4'), a fraction ('0.25') or indices ('0,3,7'), got {text!r}") from None


def top1(model, evaluation) -> float:
    return (predict(model, evaluation).argmax(-1) == evaluation.labels).float().mean().item()


def main() -> None:
    parser = HfArgumentParser((DropArguments, DataArguments), description=__doc__)
    args, data_args = parser.parse_args_into_dataclasses()
    keep_processor, keep_input = parse_keep(args.keep_processor, "keep_processor"), parse_keep(args.keep_input, "keep_input")
    config = AutoConfig.from_pretrained(args.checkpoint)
    if config.model_type != "nac":
        parser.error(f"{args.checkpoint} holds a {config.model_type!r} model; drop_modules needs a NAC checkpoint")
    reads = modality_of(config)
    model = reads.auto_model().from_pretrained(args.checkpoint).eval()
    examples = None
    if args.order == "loss":
        training = load_evaluation_set(args.checkpoint, data_args, args.num_examples, split="train",
                                       max_examples=args.num_examples)
        examples = {**training.batches[0], "labels": training.labels}
    evaluation = load_evaluation_set(args.checkpoint, data_args) if args.evaluate else None
    before = top1(model, evaluation) if evaluation else None
    kept = drop_modules(model, keep_processor=keep_processor, keep_input=keep_input, order=args.order, seed=args.seed,
                        examples=examples)
    record = {"checkpoint": args.checkpoint, "order": args.order, "kept": kept}
    if evaluation:
        record.update(top1_before=before, top1_after=top1(model, evaluation), evaluation=evaluation.source)
    output_dir = Path(args.output_dir)
    model.save_pretrained(output_dir)
    if reads.processor_auto_class:
        reads.auto_processor().from_pretrained(args.checkpoint).save_pretrained(output_dir)
    (output_dir / "dropped_modules.json").write_text(json.dumps(record, indent=2))
    print(f"kept {len(kept['processor'])} processor and {len(kept['input'])} input modules; saved to {output_dir}")
    if evaluation:
        print(f"top-1 on {evaluation.source}: {100 * before:.2f} % -> {100 * record['top1_after']:.2f} %")


if __name__ == "__main__":
    try:
        main()
    except ValueError as error:
        sys.exit(f"drop_modules: {error}")
