"""What the measurements share: a saved classifier's evaluation data, forward timing in turns, FLOP counting, and
the mean and spread over seeds."""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode
from datasets import DatasetDict
from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification

from nac_hf.data import DataArguments, load_classification_data
from nac_hf.training import ModelArguments, build_processor, prepare_datasets


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


# On a CPU, scaled_dot_product_attention (in NACs, ViTs and Perceivers alike) runs as this flash-attention kernel and
# its backward pass, which torch's FLOP counter has no formulas for: without them, FLOPs per example would leave
# attention out. They get torch's formulas for the other SDPA kernels (already shape-wrapped, hence get_raw).
for _kernel, _formula in (
    (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu, flop_counter.sdpa_flop),
    (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward, flop_counter.sdpa_backward_flop),
):
    if _kernel not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(_kernel, get_raw=True)(_formula)


def convolution_backward_flops(
    grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed, _output_padding, _groups,
    output_mask, out_shape=None, **kwargs,
) -> int:
    """FLOPs of a convolution's backward pass: each gradient asked for (input, weight) takes the multiply-adds of the
    forward convolution. torch's own formula counts the weight's gradient as if the convolution had one group: 384
    times too many FLOPs for the depthwise 7×7 convolution of a ConvNeXt block of 384 channels."""
    forward = flop_counter.conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def flop_counter_mode() -> FlopCounterMode:
    """torch's FLOP counter, with the convolution's backward pass counted per group."""
    formulas = {torch.ops.aten.convolution_backward: convolution_backward_flops}
    return FlopCounterMode(display=False, custom_mapping=formulas)


def flops_per_example(model, inputs: torch.Tensor) -> float:
    """FLOPs of one eval forward pass per example; `inputs` is the model's main input (`model.main_input_name`)."""
    model.eval()
    with flop_counter_mode() as counter:  # under grad mode: the counter's hooks need autograd
        model(**{model.main_input_name: inputs})
    return counter.get_total_flops() / inputs.shape[0]


def train_flops_per_example(model, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """FLOPs of one training forward and backward pass per example (the optimizer's update, elementwise, left out).
    The gradients it leaves are cleared."""
    model.train()
    with flop_counter_mode() as counter:
        model(**{model.main_input_name: inputs}, labels=labels).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / inputs.shape[0]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the deviation of a single value is 0."""
    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std
