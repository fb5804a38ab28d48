"""A saved classifier's evaluation data, prepared as `scripts/train.py` evaluates: for scoring a changed model (dropped
modules, int8, early exit) against the one it came from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from datasets import DatasetDict
from transformers import AutoConfig

from .data import DataArguments, load_classification_data
from .modalities import MODALITIES
from .training import ModelArguments, build_processor, prepare_datasets


@dataclass
class EvaluationSet:
    """The evaluation split as model inputs (one dict of batched tensors per batch) and its labels."""

    batches: list[dict]
    labels: torch.Tensor
    source: str


def load_evaluation_set(
    checkpoint: str,
    data_args: DataArguments,
    batch_size: int = 256,
    trust_remote_code: bool = False,
    split: str = "validation",
    max_examples: int | None = None,
) -> EvaluationSet:
    """The evaluation split of `data_args` (the digits when none is named, as for the main job), prepared with the
    checkpoint's own processor or tokenizer exactly as `scripts/train.py` evaluates. `split="train"` or
    `split="test"`: that split instead, prepared the same way (no augmentation). `max_examples`: the first that many only."""
    config = AutoConfig.from_pretrained(checkpoint, trust_remote_code=trust_remote_code)
    data = load_classification_data(data_args, seed=0)
    if split not in ("validation", "train", "test"):
        raise ValueError(f"split must be 'validation', 'train' or 'test', got {split!r}")
    if split not in data.dataset:
        raise ValueError(f"{data.source} has no {split} split; name one (--{split}_split) or a file")
    chosen = data.dataset[split]
    if max_examples is not None:
        chosen = chosen.select(range(min(max_examples, len(chosen))))
    # The chosen split read as the evaluation split is read.
    data = dataclasses.replace(data, dataset=DatasetDict(train=data.dataset["train"], validation=chosen))
    model_args = ModelArguments(model_name_or_path=checkpoint, trust_remote_code=trust_remote_code)
    processor = build_processor(model_args, config, data)
    _, evaluation, collator = prepare_datasets(data, processor, data_args, config)
    batches, labels = [], []
    for start in range(0, len(evaluation), batch_size):
        batch = collator([evaluation[i] for i in range(start, min(start + batch_size, len(evaluation)))])
        labels.append(batch.pop("labels"))
        batches.append(dict(batch))
    return EvaluationSet(batches=batches, labels=torch.cat(labels), source=data.source)


def load_for_evaluation(checkpoint: str, data_args: DataArguments, batch_size: int = 256):
    """A saved classifier in evaluation mode (an image or a text classifier, by the data) and its evaluation set, as
    `load_evaluation_set` prepares it."""
    evaluation = load_evaluation_set(checkpoint, data_args, batch_size)
    reads = next(reads for reads in MODALITIES.values() if reads.main_input_name in evaluation.batches[0])
    return reads.auto_model().from_pretrained(checkpoint).eval(), evaluation


@torch.no_grad()
def predict(model, evaluation: EvaluationSet) -> torch.Tensor:
    """Logits of `model` (in evaluation mode) over the whole evaluation set."""
    model.eval()
    return torch.cat([model(**batch).logits.float() for batch in evaluation.batches])


__all__ = ["EvaluationSet", "load_evaluation_set", "load_for_evaluation", "predict"]
