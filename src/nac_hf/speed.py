"""Measuring how fast a model runs: the eval forward and the training step (forward, backward, AdamW) after warm-up,
timed in turns with the machine's GEMM rate, the FLOPs per example of both (`torch.utils.flop_counter.FlopCounterMode`),
and the non-modular models a user would pick instead at a similar FLOP count (transformers' ViT and Perceiver).
`scripts/benchmark_speed.py` runs it."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    PerceiverConfig,
    PerceiverForImageClassificationLearned,
    ViTConfig,
    ViTForImageClassification,
)

from .configuration_nac import NACConfig
from .evaluation import median_time, timed_turns
from .modeling_nac import NACForClassification


BASELINES = ("vit", "perceiver")
# Training steps before the timed ones: the first few run slower (the allocator is still growing its pools).
TRAIN_WARMUP = 3

# On a CPU, scaled_dot_product_attention (in NACs, ViTs and Perceivers alike) runs as this flash-attention kernel and
# its backward pass, which torch's FLOP counter has no formulas for: without them, FLOPs per example would leave
# attention out. They get torch's formulas for the other SDPA kernels (already shape-wrapped, hence get_raw).
for _kernel, _formula in (
    (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu, flop_counter.sdpa_flop),
    (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward, flop_counter.sdpa_backward_flop),
):
    if _kernel not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(_kernel, get_raw=True)(_formula)


def gemm(device, dtype: torch.dtype = torch.float32) -> tuple[Callable[[], None], float]:
    """A square matrix product in `dtype` that shows the device's matmul rate (2048³ on a CPU, 8192³ on a GPU, which
    reaches its rate only on larger products), as a call that waits for it, and its FLOPs."""
    size = 2048 if torch.device(device).type == "cpu" else 8192
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    product = a @ b  # written again by every call: the calls allocate nothing

    def matmul():
        torch.matmul(a, b, out=product)
        synchronize(device)

    return matmul, 2.0 * size**3


def synchronize(device) -> None:
    """Wait for the device's queued work (a no-op on a CPU, whose operations return when done)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# Dense (not sparse) bf16 tensor-core peaks of the GPUs in NVIDIA's data sheets, in TFLOP/s, by a part of the name
# `torch.cuda.get_device_name` gives: what the model FLOP utilisation (MFU) of a bf16 run is measured against.
DENSE_BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "H200 NVL": 835.0, "H200": 989.4}


def dense_bf16_peak_tflops(device_name: str) -> float | None:
    """The data sheet's dense bf16 peak of a GPU named `device_name` (the first entry whose key it contains), or None
    for a device not in `DENSE_BF16_PEAK_TFLOPS`."""
    return next((peak for part, peak in DENSE_BF16_PEAK_TFLOPS.items() if part in device_name), None)


def example_batch(config, batch_size: int, image_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch_size, config.num_channels, image_size, image_size, generator=generator)
    return pixels, torch.randint(0, config.num_labels, (batch_size,), generator=generator)


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


def flops_per_example(model, pixel_values: torch.Tensor) -> float:
    """FLOPs of one eval forward pass per example."""
    model.eval()
    with flop_counter_mode() as counter:  # under grad mode: the counter's hooks need autograd
        model(pixel_values=pixel_values)
    return counter.get_total_flops() / pixel_values.shape[0]


def train_flops_per_example(model, pixel_values: torch.Tensor, labels: torch.Tensor) -> float:
    """FLOPs of one training forward and backward pass per example (the optimizer's update, elementwise, left out).
    The gradients it leaves are cleared."""
    model.train()
    with flop_counter_mode() as counter:
        model(pixel_values=pixel_values, labels=labels).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / pixel_values.shape[0]


def nac_model(preset: str, image_size: int | None = None, overrides: dict | None = None) -> NACForClassification:
    """A NAC of `preset`, at `image_size` when given, with the config fields in `overrides` changed."""
    fields = {**(overrides or {}), **({"image_size": image_size} if image_size else {})}
    return NACForClassification(NACConfig.from_preset(preset, **fields))


def vit_model(num_labels: int, num_channels: int, image_size: int, patch_size: int, num_layers: int):
    """A ViT-S-wide model (384 wide, 6 heads, MLP 4×) of `num_layers` layers."""
    config = ViTConfig(
        image_size=image_size, patch_size=patch_size, num_channels=num_channels, hidden_size=384,
        num_hidden_layers=num_layers, num_attention_heads=6, intermediate_size=1536, num_labels=num_labels,
    )
    return ViTForImageClassification(config)


def perceiver_model(num_labels: int, num_channels: int, image_size: int, num_layers: int):
    """transformers' Perceiver with learned positions: 256 latents of 384, `num_layers` latent self-attention layers."""
    if num_channels != 3:
        raise ValueError("PerceiverForImageClassificationLearned reads RGB images (num_channels=3)")
    config = PerceiverConfig(
        num_latents=256, d_latents=384, num_blocks=1, num_self_attends_per_block=num_layers,
        num_self_attention_heads=6, num_cross_attention_heads=1, image_size=image_size, num_labels=num_labels,
    )
    return PerceiverForImageClassificationLearned(config)


def matched_baseline(name: str, target_flops: float, num_labels: int, num_channels: int, image_size: int,
                     patch_size: int):
    """The baseline `name` with the number of layers whose FLOPs per example come closest to `target_flops`."""

    def build(layers: int):
        if name == "vit":
            return vit_model(num_labels, num_channels, image_size, patch_size, layers)
        return perceiver_model(num_labels, num_channels, image_size, layers)

    pixels = torch.randn(1, num_channels, image_size, image_size)
    one, two = (flops_per_example(build(layers), pixels) for layers in (1, 2))
    layers = max(1, round(1 + (target_flops - one) / max(two - one, 1.0)))
    return build(layers), layers


def measure(
    model, pixel_values: torch.Tensor, labels: torch.Tensor, repeats: int, compile: bool = False,
    dtype: torch.dtype = torch.float32, peak_tflops: float | None = None,
) -> dict:
    """Eval forward and training step (AdamW, fused, as `Trainer` runs it by default) of `model` on one batch, timed
    in turns after warm-up (`timed_turns`) together with a matrix product of the device in `dtype` (`gemm`), so that
    all three see the same machine: the median seconds of each and the median of the turns' ratio of step to eval, the
    product's median rate, and the eval forward's time over the time its FLOPs would take at the product's rate in
    the same turn (median over the turns; 1 would be the GEMM's rate). Also the FLOPs per example and achieved GFLOP/s
    of both, the step in its parts (its forward pass in training mode and its backward pass, timed apart in every eager
    step of the turns: medians, and the median ratio of the two), the process's peak resident memory (after the warm-up
    steps, before the product's matrices are made) and the memory faulted in per training step (averaged over the
    warm-up and all later steps, the product's matrices left out). With `compile`, the training step of
    `torch.compile(model)` too (its first call, the compilation, reported apart).

    The model and the batch are on one device; on a GPU each call waits for the device's work, and its peak memory is
    reported too. `dtype` other than float32: forward passes under `torch.autocast` in that dtype (mixed precision,
    as `Trainer`'s `--bf16`). `peak_tflops`: the device's peak rate in that dtype, against which the model FLOP
    utilisation (MFU) of both is reported."""
    device = pixel_values.device

    def precision():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    with precision():
        flops = flops_per_example(model, pixel_values)  # per example at this batch: a NAC modulates once per batch
        train_flops = train_flops_per_example(model, pixel_values, labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # Trainer's adamw_torch_fused

    def evaluate():
        model.eval()
        with torch.no_grad(), precision():
            model(pixel_values=pixel_values)
        synchronize(device)

    parts = []  # (forward, backward) seconds of each eager training step

    def train_step(forward=model):
        model.train()
        start = time.perf_counter()
        with precision():
            loss = forward(pixel_values=pixel_values, labels=labels).loss
        synchronize(device)
        middle = time.perf_counter()
        loss.backward()
        synchronize(device)
        if forward is model:
            parts.append((middle - start, time.perf_counter() - middle))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)

    evaluate()
    faults_before = minor_page_faults()
    for _ in range(TRAIN_WARMUP):
        train_step()
    # The model's peak memory, and the memory the product's matrices fault in once: neither counts the matrices.
    peak = {"peak_rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        peak["peak_device_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    gemm_faults = minor_page_faults()
    matmul, matmul_flops = gemm(device, dtype)
    gemm_faults = minor_page_faults() - gemm_faults
    # In turns, so that a slower spell of the machine slows all three: ratios are medians of the turns' ratios.
    parts.clear()
    turns = timed_turns((train_step, evaluate, matmul), repeats, warmup=0, block=1)
    steps = TRAIN_WARMUP + 2 * repeats  # each turn runs one untimed call of each before the timed one
    faulted = (minor_page_faults() - faults_before - gemm_faults) * resource.getpagesize() / 2**20 / steps
    batch = len(pixel_values)
    train_s, eval_s = (statistics.median(turn[index] for turn in turns) for index in (0, 1))
    result = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(dtype).removeprefix("torch."),
        "eval_s": eval_s,
        "train_s": train_s,
        "train_over_eval": statistics.median(train / evaluation for train, evaluation, _ in turns),
        "gflop_per_example": flops / 1e9,
        "eval_gflops": flops * batch / eval_s / 1e9,
        "gemm_gflops": statistics.median(matmul_flops / product for _, _, product in turns) / 1e9,
        # the eval forward's time over its FLOPs' time at the product's rate in the same turn: 1 at the GEMM's rate
        "eval_over_gemm_bound": statistics.median(
            evaluation / (flops * batch / (matmul_flops / product)) for _, evaluation, product in turns
        ),
        # the training step's FLOPs (forward and backward) over the eval forward's: what the time ratio would be if
        # the step ran at the forward's rate
        "train_gflop_per_example": train_flops / 1e9,
        "train_over_eval_flops": train_flops / flops,
        "train_gflops": train_flops * batch / train_s / 1e9,
        # the step in its parts: the forward pass in training mode (with what only training does, such as sampling)
        # and the backward pass, whose FLOPs are the step's less the forward's (train_over_eval_flops − 1)
        "train_forward_s": statistics.median(forward for forward, _ in parts),
        "backward_s": statistics.median(backward for _, backward in parts),
        "backward_over_train_forward": statistics.median(backward / forward for forward, backward in parts),
        **peak,
        # memory faulted in afresh per training step, warm-up included (first touches of pages from the system); the
        # eval passes between them fault next to nothing
        "train_page_faults_mb": faulted,
    }
    if compile:
        compiled = torch.compile(model)
        start = time.perf_counter()
        train_step(compiled)
        result["compile_s"] = time.perf_counter() - start
        result["train_compiled_s"] = median_time(lambda: train_step(compiled), repeats, warmup=TRAIN_WARMUP)
        result["train_compiled_gflops"] = train_flops * batch / result["train_compiled_s"] / 1e9
    if peak_tflops:
        result["peak_tflops"] = peak_tflops
        for key in ("eval", "train", "train_compiled"):
            if f"{key}_gflops" in result:
                result[f"{key}_mfu"] = result[f"{key}_gflops"] / (peak_tflops * 1e3)
    return result


def minor_page_faults() -> int:
    """Minor page faults of this process so far: each a page the system hands it (zeroed) on its first touch."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


__all__ = [
    "BASELINES",
    "DENSE_BF16_PEAK_TFLOPS",
    "dense_bf16_peak_tflops",
    "example_batch",
    "flop_counter_mode",
    "flops_per_example",
    "gemm",
    "matched_baseline",
    "measure",
    "nac_model",
    "synchronize",
    "train_flops_per_example",
]
