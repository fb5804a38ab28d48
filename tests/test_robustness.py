"""The out-of-distribution digits: fonts and corruptions are seeded datasets of the digits' own form."""

import numpy as np
import pytest

from nac_hf.data import digits_dataset
from benchmarks.robustness import CORRUPTIONS, FONT_FILES, SEVERITIES, corrupt, corrupt_digits, corrupted_digits
from benchmarks.robustness import font_digits


LEVEL_VALUES = set(np.round(np.arange(17) * 255 / 16).astype(int))


@pytest.fixture(scope="module")
def fonts():
    return font_digits(variants=1, seed=0)


def levels_of(dataset) -> set:
    return set(np.unique(np.stack([np.asarray(image) for image in dataset["image"]])).tolist())


def test_font_digits_draw_every_digit_from_every_font_at_the_digits_grey_levels(fonts):
    assert len(fonts) == 10 * len(FONT_FILES)
    assert fonts.features["label"].names == [str(d) for d in range(10)]
    assert sorted(fonts["label"]) == sorted(list(range(10)) * len(FONT_FILES))
    assert set(fonts.features["font"].int2str(fonts["font"])) == set(FONT_FILES)
    images = np.stack([np.asarray(image) for image in fonts["image"]])
    assert images.shape == (len(fonts), 8, 8) and images.dtype == np.uint8
    assert levels_of(fonts) <= LEVEL_VALUES and len(levels_of(fonts)) > 10
    assert all(image.max() >= 160 for image in images)  # every glyph inks at least 10 of 16 pixels of a block
    flattened = images.reshape(len(images), -1)
    assert len({row.tobytes() for row in flattened}) == len(images)  # no two drawings alike


def test_font_digits_are_fixed_by_the_seed(fonts):
    again = font_digits(variants=1, seed=0)
    other = font_digits(variants=1, seed=1)
    same = [np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(fonts["image"], again["image"])]
    differ = [not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(fonts["image"], other["image"])]
    assert all(same) and sum(differ) > len(fonts) // 2


def test_corruptions_grow_with_severity_and_keep_labels_and_grey_levels():
    test = digits_dataset()["test"].select(range(60))
    clean = np.stack([np.asarray(image, dtype=float) for image in test["image"]])
    corrupted = corrupted_digits(test, seed=0)
    assert set(corrupted) == {f"{c}_{s}" for c in CORRUPTIONS for s in SEVERITIES}
    for corruption in CORRUPTIONS:
        change = []
        for severity in SEVERITIES:
            split = corrupted[f"{corruption}_{severity}"]
            assert split["label"] == test["label"] and levels_of(split) <= LEVEL_VALUES
            images = np.stack([np.asarray(image, dtype=float) for image in split["image"]])
            change.append(np.abs(images - clean).mean())
        assert change[0] > 0, corruption
        assert change[-1] > change[0], (corruption, change)  # the most severe changes the digits most


def test_corruptions_are_fixed_by_the_seed_and_bad_names_are_refused():
    test = digits_dataset()["test"].select(range(10))
    first, again = (corrupt_digits(test, "gaussian_noise", 3, seed=0) for _ in range(2))
    other = corrupt_digits(test, "gaussian_noise", 3, seed=1)
    assert first["image"][0].tobytes() == again["image"][0].tobytes() != other["image"][0].tobytes()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corrupt(np.zeros((8, 8)), "fog", 1, rng)
    with pytest.raises(ValueError, match="severity must be one of"):
        corrupt(np.zeros((8, 8)), "contrast", 6, rng)
