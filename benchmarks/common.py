"""What the measurements share: their command lines, top-1, forward timing in turns, FLOP counting, figures, result
files and the mean and spread over seeds. A saved classifier's evaluation data comes from `nac_hf.evaluation`."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode
from transformers import HfArgumentParser


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """`--help`: the module's docstring as written, then each flag with its default."""


def argument_parser(description: str, *types) -> HfArgumentParser:
    """The parser of a command: its flags are the fields of the dataclasses `types`, its help the module's docstring
    (which starts with the command line, `python -m benchmarks.<name> ...`, whose first words name the program)."""
    prog = " ".join(description.split()[:3])
    return HfArgumentParser(types, prog=prog, description=description, formatter_class=HelpFormatter)


def write_json(path: str | Path, results: dict) -> Path:
    """Write `results` as indented JSON to `path`, making its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of examples whose highest logit is their label's."""
    return (logits.argmax(-1) == labels).float().mean().item()


def synchronize(device) -> None:
    """Wait for the device's queued work (a no-op on a CPU, whose operations return when done)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


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


def forward(model, inputs: dict):
    """One forward pass of `model` over `inputs` in evaluation mode, without gradients, as a call to time."""
    model.eval()

    @torch.no_grad()
    def run():
        model(**inputs)

    return run


def throughput(run, examples: int, repeats: int, full_run=None) -> dict:
    """Examples per second of `run()`, which runs `examples` examples: the median of `repeats` calls after two. Beside
    `full_run` (the same examples through the full model), timed in turns with it (`paired_times`): also the
    speed-up over it (the median of the per-turn ratios) and its throughput in those turns."""
    if full_run is None:
        return {"throughput": examples / median_time(run, repeats, warmup=2)}
    full_seconds, seconds, speedup = paired_times(full_run, run, repeats)
    return {"throughput": examples / seconds, "speedup": speedup, "baseline_throughput": examples / full_seconds}


def take(batch: dict, size: int) -> dict:
    """The first `size` examples of a batch of inputs."""
    return {name: value[:size] for name, value in batch.items()}


def batch_size_of(batch: dict) -> int:
    return len(next(iter(batch.values())))


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


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of an iterable of numbers; the deviation of a single value is 0."""
    values = np.asarray(list(values), dtype=float)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std


def save_figure(path: str | Path, draw, **subplots) -> bool:
    """Draw a figure with matplotlib (`draw(axes)` on `plt.subplots(**subplots)`) and save it to `path`; False, and
    nothing drawn, where matplotlib is not installed (the `viz` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(**subplots)
    draw(axes)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def mark_loss(axes, accuracy: float, points: float) -> None:
    """A dotted line `points` of top-1 (in %) below the full model's `accuracy` (a fraction)."""
    label = f"{points:g} point{'s' if points != 1 else ''} below the full model"
    axes.axhline(100 * accuracy - points, color="grey", linestyle=":", label=label)


def quiet_libraries() -> None:
    """Keep transformers' and datasets' per-load reports and progress bars out of a long run's log."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
