"""Augmentation for training image classifiers from scratch, as the DeiT-style recipes of `nac_hf.recipes` use it:
random-resized crops, mixup and cutmix as a data collator whose labels are soft targets `(B, num_labels)` (with label
smoothing folded in), the cross-entropy of soft targets, and repeated augmentation as a sampler.

Everything here draws from torch's random generator, so each dataloader worker (which torch seeds on its own) draws
its own crops and mixing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F


# With both mixup and cutmix on, each batch is mixed by one of them, cutmix with this probability (timm's default).
CUTMIX_PROBABILITY = 0.5
# The aspect ratios a random-resized crop is drawn from (log-uniformly), as torchvision's RandomResizedCrop.
CROP_RATIOS = (3 / 4, 4 / 3)


def random_resized_crop(
    pixel_values: torch.Tensor, min_scale: float = 0.08, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A random crop of a (C, H, W) image resized back to (H, W), as torchvision's `RandomResizedCrop`: its area a
    uniform fraction of the image's in [min_scale, 1], its aspect ratio log-uniform in [3/4, 4/3]. After 10 draws
    that do not fit inside the image, the whole image is returned."""
    _, height, width = pixel_values.shape
    log_ratios = (math.log(CROP_RATIOS[0]), math.log(CROP_RATIOS[1]))
    for _ in range(10):
        area = height * width * (min_scale + (1 - min_scale) * float(torch.rand((), generator=generator)))
        ratio = math.exp(log_ratios[0] + (log_ratios[1] - log_ratios[0]) * float(torch.rand((), generator=generator)))
        crop_width, crop_height = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(torch.randint(0, height - crop_height + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - crop_width + 1, (1,), generator=generator))
            crop = pixel_values[None, :, top : top + crop_height, left : left + crop_width]  # (1, C, h, w)
            return F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)[0]
    return pixel_values


def soft_targets(labels: torch.Tensor, num_labels: int, smoothing: float = 0.0) -> torch.Tensor:
    """One-hot targets `(B, num_labels)` of label ids `(B,)`, smoothed: `1 - smoothing + smoothing / num_labels` on
    the label, `smoothing / num_labels` elsewhere (as `torch.nn.CrossEntropyLoss(label_smoothing=...)`)."""
    off = smoothing / num_labels
    return torch.full((len(labels), num_labels), off).scatter_(1, labels.long()[:, None], 1.0 - smoothing + off)


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean over the batch of the cross-entropy between `logits` `(B, C)` and target distributions `(B, C)`,
    computed in float32 (also under bf16 autocast)."""
    return F.cross_entropy(logits.float(), targets.to(device=logits.device, dtype=torch.float32))


@dataclass
class MixingCollator:
    """Batches examples with `collator`, then mixes the batch and gives soft labels `(B, num_labels)`.

    Each batch is mixed with itself in reverse order, by a weight λ drawn from Beta(α, α): mixup
    (`mixup_alpha` > 0) blends the images, `x λ + x_reversed (1 − λ)`; cutmix (`cutmix_alpha` > 0) pastes a box of
    the reversed batch covering a fraction 1 − λ of each image (λ then set to the fraction the clipped box leaves). With
    both, each batch takes cutmix with probability 1/2, else mixup. The labels are mixed by the same λ after label
    smoothing by `label_smoothing`. With both alphas 0 only the smoothing applies (texts too).

    `NACTrainer` trains any model on these labels. With a plain `Trainer`, a NAC takes them as class probabilities when
    its `config.problem_type` is `"single_label_classification"` (unset, float labels `(B, num_labels)` mean
    multi-label classification, as in transformers).
    """

    collator: Callable[[list], dict]
    num_labels: int
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    label_smoothing: float = 0.0
    input_name: str = "pixel_values"

    def __call__(self, features: list) -> dict[str, Any]:
        batch = dict(self.collator(features))
        targets = soft_targets(batch["labels"], self.num_labels, self.label_smoothing)  # (B, num_labels)
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or float(torch.rand(())) < CUTMIX_PROBABILITY)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        if alpha > 0 and len(targets) > 1:
            weight = float(torch.distributions.Beta(alpha, alpha).sample())
            inputs = batch[self.input_name]  # (B, C, H, W)
            if use_cutmix:
                batch[self.input_name], weight = paste_box(inputs, inputs.flip(0), weight)
            else:
                batch[self.input_name] = inputs * weight + inputs.flip(0) * (1 - weight)
            targets = targets * weight + targets.flip(0) * (1 - weight)
        batch["labels"] = targets
        return batch

    @property
    def mixes(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


def paste_box(images: torch.Tensor, others: torch.Tensor, weight: float) -> tuple[torch.Tensor, float]:
    """Cutmix: `images` `(B, C, H, W)` with a box of `others` pasted in, the box covering a fraction 1 − `weight` of
    the image, centred uniformly and clipped to the image; returns the images and the fraction left unpasted."""
    height, width = images.shape[-2:]
    cut = math.sqrt(1 - weight)
    box_height, box_width = int(height * cut), int(width * cut)
    centre_y, centre_x = int(torch.randint(0, height, (1,))), int(torch.randint(0, width, (1,)))
    top, bottom = max(centre_y - box_height // 2, 0), min(centre_y + box_height // 2, height)
    left, right = max(centre_x - box_width // 2, 0), min(centre_x + box_width // 2, width)
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = others[..., top:bottom, left:right]
    return mixed, 1 - (bottom - top) * (right - left) / (height * width)


class RepeatedAugmentationSampler(torch.utils.data.Sampler):
    """Repeated augmentation (Hoffer et al. 2020; DeiT's `RASampler`): each epoch draws a permutation of the training
    examples, takes each `repeats` times in a row, and stops after as many indices as the dataset has, so an epoch
    keeps its length and sees each of about 1/`repeats` of the examples `repeats` times, in the same or neighbouring
    batches, each time augmented afresh. The order depends only on `seed` and the epoch (`set_epoch`, which `Trainer`
    calls), so every process of a distributed run draws the same order and Accelerate deals its batches out."""

    def __init__(self, num_examples: int, repeats: int, seed: int = 0):
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {repeats}")
        self.num_examples, self.repeats, self.seed, self.epoch = num_examples, repeats, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_examples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.num_examples, generator=generator).repeat_interleave(self.repeats)
        return iter(order[: self.num_examples].tolist())


__all__ = [
    "CUTMIX_PROBABILITY",
    "MixingCollator",
    "RepeatedAugmentationSampler",
    "paste_box",
    "random_resized_crop",
    "soft_target_cross_entropy",
    "soft_targets",
]
