"""Augmentation for the recipes: soft targets, mixup and cutmix as a collator, their cross-entropy, repeated
augmentation as a sampler, random-resized crops."""

import pytest
import torch
import torch.nn.functional as F
from transformers import DefaultDataCollator

from nac_hf.augmentation import (
    MixingCollator,
    RepeatedAugmentationSampler,
    paste_box,
    random_resized_crop,
    soft_target_cross_entropy,
    soft_targets,
)


def examples(count: int = 8, num_labels: int = 4) -> list[dict]:
    """Images whose pixels all equal their index + 1, so a mixed pixel tells which images it came from."""
    return [{"pixel_values": torch.full((3, 8, 8), float(i + 1)), "labels": i % num_labels} for i in range(count)]


def test_smoothed_targets_give_torch_label_smoothing_cross_entropy():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 3, 1, 1, 2])
    targets = soft_targets(labels, 4, smoothing=0.1)
    assert torch.allclose(targets.sum(1), torch.ones(5)) and targets[1, 3] == pytest.approx(0.925)
    expected = F.cross_entropy(logits, labels, label_smoothing=0.1)
    torch.testing.assert_close(soft_target_cross_entropy(logits, targets), expected)
    one_hot = soft_targets(labels, 4)
    torch.testing.assert_close(soft_target_cross_entropy(logits, one_hot), F.cross_entropy(logits, labels))


def test_label_smoothing_alone_leaves_the_images():
    collate = MixingCollator(DefaultDataCollator(), num_labels=4, label_smoothing=0.2)
    batch = collate(examples())
    torch.testing.assert_close(batch["pixel_values"], DefaultDataCollator()(examples())["pixel_values"])
    assert batch["labels"].shape == (8, 4) and batch["labels"][0].tolist() == pytest.approx([0.85, 0.05, 0.05, 0.05])
    assert not collate.mixes


def test_mixup_blends_each_image_with_the_reversed_batch_by_the_weight_of_its_labels():
    torch.manual_seed(0)
    batch = MixingCollator(DefaultDataCollator(), num_labels=8, mixup_alpha=0.8)(examples(num_labels=8))
    pixels, labels = batch["pixel_values"], batch["labels"]  # (8, 3, 8, 8), (8, 8)
    weight = labels[0, 0].item()  # image 0 (label 0) mixed with image 7 (label 7)
    assert 0 < weight < 1 and labels[0, 7].item() == pytest.approx(1 - weight)
    for i in range(8):
        expected = (i + 1) * weight + (8 - i) * (1 - weight)
        torch.testing.assert_close(pixels[i], torch.full((3, 8, 8), expected))
    torch.testing.assert_close(labels.sum(1), torch.ones(8))


def test_cutmix_pastes_a_box_whose_area_is_the_other_labels_share():
    torch.manual_seed(1)
    collate = MixingCollator(DefaultDataCollator(), num_labels=8, cutmix_alpha=1.0, label_smoothing=0.0)
    for _ in range(5):
        batch = collate(examples(num_labels=8))
        pixels, labels = batch["pixel_values"], batch["labels"]
        for i in range(8):
            own, other = float(i + 1), float(8 - i)
            assert set(pixels[i].unique().tolist()) <= {own, other}
            pasted = (pixels[i, 0] == other).float().mean().item() if own != other else None
            if pasted is not None:
                assert labels[i, (7 - i)].item() == pytest.approx(pasted)  # the label weight is the pasted area
                assert labels[i, i].item() == pytest.approx(1 - pasted)
    # A box is clipped at the border: the weight is what is left of the image, not the weight drawn.
    images, others = torch.zeros(1, 1, 10, 10), torch.ones(1, 1, 10, 10)
    mixed, left = paste_box(images, others, 0.0)  # a box of the image's size, centred anywhere
    assert left == pytest.approx(1 - mixed.mean().item())


def test_with_both_each_batch_takes_one():
    torch.manual_seed(2)
    collate = MixingCollator(DefaultDataCollator(), num_labels=8, mixup_alpha=0.8, cutmix_alpha=1.0)
    kinds = set()
    for _ in range(20):
        pixels = collate(examples(num_labels=8))["pixel_values"]
        two_values = all(len(pixels[i].unique()) <= 2 for i in range(8))
        kinds.add("cutmix" if two_values and set(pixels[0].unique().tolist()) <= {1.0, 8.0} else "mixup")
    assert kinds == {"cutmix", "mixup"}


def test_repeated_augmentation_repeats_each_example_and_keeps_the_epoch_length():
    sampler = RepeatedAugmentationSampler(10, repeats=3, seed=0)
    first = list(sampler)
    assert len(first) == len(sampler) == 10
    runs = [first[i : i + 3] for i in range(0, 9, 3)]
    assert all(len(set(run)) == 1 for run in runs) and len({run[0] for run in runs}) == 3
    assert first[9] not in {run[0] for run in runs}  # the fourth example's first copy
    assert list(sampler) == first  # an epoch's order depends on the seed and the epoch only
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(RepeatedAugmentationSampler(10, repeats=1, seed=0)) != list(range(10))  # shuffled
    assert sorted(RepeatedAugmentationSampler(10, repeats=1, seed=0)) == list(range(10))


def test_random_resized_crop_keeps_the_size_and_zooms_in():
    image = torch.arange(64, dtype=torch.float32).view(1, 8, 8).expand(3, 8, 8)
    generator = torch.Generator().manual_seed(0)
    crops = [random_resized_crop(image, min_scale=0.25, generator=generator) for _ in range(10)]
    assert all(crop.shape == image.shape for crop in crops)
    assert all(crop.min() >= image.min() and crop.max() <= image.max() for crop in crops)  # bilinear: no overshoot
    assert any(crop.max() - crop.min() < image.max() - image.min() for crop in crops)  # a part, enlarged


def test_a_plain_trainer_trains_a_nac_on_mixed_soft_targets(tmp_path):
    from transformers import Trainer, TrainingArguments

    from nac_hf import NACConfig, NACForClassification

    config = NACConfig.from_preset("tiny", image_size=8, patch_size=4, num_channels=3, num_labels=4,
                                   problem_type="single_label_classification")
    model = NACForClassification(config)
    before = {name: value.clone() for name, value in model.named_parameters()}
    collate = MixingCollator(DefaultDataCollator(), num_labels=4, mixup_alpha=0.8, cutmix_alpha=1.0,
                             label_smoothing=0.1)
    args = TrainingArguments(str(tmp_path), max_steps=3, per_device_train_batch_size=4, report_to="none",
                             use_cpu=True, save_strategy="no", remove_unused_columns=False)
    result = Trainer(model=model, args=args, train_dataset=examples(8), data_collator=collate).train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(before[name], value) for name, value in model.named_parameters())
