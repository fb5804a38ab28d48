"""Evaluating a saved classifier on its evaluation data, and timing its forward pass: shared by the benchmark
scripts (int8, and anything that compares a changed model with the one it came from)."""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass

import torch
from datasets import DatasetDict
from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification

from .data import DataArguments, load_classification_data
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
    checkpoint's own processor or tokenizer exactly as `scripts/train.py` evaluates. `split="train"`: the training
    split instead, prepared the same way (no augmentation). `max_examples`: the first that many only."""
    config = AutoConfig.from_pretrained(checkpoint, trust_remote_code=trust_remote_code)
    data = load_classification_data(data_args, seed=0)
    if split not in ("validation", "train"):
        raise ValueError(f"split must be 'validation' or 'train', got {split!r}")
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
    text = "input_ids" in evaluation.batches[0]
    auto = AutoModelForSequenceClassification if text else AutoModelForImageClassification
    return auto.from_pretrained(checkpoint).eval(), evaluation


@torch.no_grad()
def predict(model, evaluation: EvaluationSet) -> torch.Tensor:
    """Logits of `model` (in evaluation mode) over the whole evaluation set."""
    model.eval()
    return torch.cat([model(**batch).logits.float() for batch in evaluation.batches])


def median_time(function, repeats: int, warmup: int = 1) -> float:
    """Median wall time of `function()` over `repeats` calls, after `warmup` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def median_seconds(model, inputs: dict, repeats: int = 7, warmup: int = 2) -> float:
    """Median wall time of one forward pass over `inputs` in evaluation mode, after `warmup` passes."""
    model.eval()
    return median_time(lambda: model(**inputs), repeats, warmup)


def timed_turns(functions, repeats: int = 7, warmup: int = 2, block: int = 3) -> list[list[float]]:
    """Wall times of each of `functions`, timed in turns so that all see the same machine: one list per turn, the
    time of each function in it. In each turn each function runs once untimed and then `block` timed calls, its time
    in the turn being their median: each is timed as it runs when it runs alone (its memory and caches warm, not just
    left by the others), while the turns keep comparisons fair on a machine whose speed drifts."""
    for _ in range(warmup):
        for function in functions:
            function()
    return [[median_time(function, block) for function in functions] for _ in range(repeats)]


def paired_times(first, second, repeats: int = 7, warmup: int = 2, block: int = 3) -> tuple[float, float, float]:
    """Wall times of `first()` and `second()` in turns (`timed_turns`): the median time of each, and the median of the
    per-turn ratios `first / second` (how much faster `second` is)."""
    times = timed_turns((first, second), repeats, warmup, block)
    return (statistics.median(t[0] for t in times), statistics.median(t[1] for t in times),
            statistics.median(t[0] / t[1] for t in times))


@torch.no_grad()
def paired_seconds(
    reference, model, inputs: dict, repeats: int = 7, warmup: int = 2, block: int = 3
) -> tuple[float, float, float]:
    """`paired_times` of one forward pass of `reference` and of `model` over `inputs`, in evaluation mode."""
    reference.eval(), model.eval()
    return paired_times(lambda: reference(**inputs), lambda: model(**inputs), repeats, warmup, block)


def take(batch: dict, size: int) -> dict:
    """The first `size` examples of a batch of inputs."""
    return {name: value[:size] for name, value in batch.items()}


__all__ = [
    "EvaluationSet", "load_evaluation_set", "load_for_evaluation", "median_seconds", "median_time", "paired_seconds",
    "paired_times", "predict", "take", "timed_turns",
]
