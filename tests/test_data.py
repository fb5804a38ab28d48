"""Classification data: the digits default, text files, image folders, local dataset repositories, augmentation."""

import json

import numpy as np
import pytest
import torch
from datasets import IterableDataset
from PIL import Image

from nac_hf.data import DataArguments, augment_images, digits_dataset, load_classification_data, sample_shots
from nac_test_utils import image_dataset_folder


def test_digits_default_is_fixed_and_stratified():
    first, second = digits_dataset(), digits_dataset()
    assert (len(first["train"]), len(first["test"])) == (1437, 360)
    assert first["test"]["label"] == second["test"]["label"]
    counts = np.bincount(first["test"]["label"], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    data = load_classification_data(DataArguments())
    assert data.modality == "image" and data.label_names == [str(d) for d in range(10)]
    assert len(data.dataset["validation"]) == 360  # the held-out test split is the evaluation split
    assert "test" not in data.dataset and data.test_split is None  # and nothing else is evaluated at the end


def test_text_file_with_string_labels_gets_names_and_a_validation_split(tmp_path):
    rows = [{"sentence": f"text number {i}", "sentiment": ["neg", "pos"][i % 2]} for i in range(40)]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    data = load_classification_data(DataArguments(train_file=str(path), validation_split_percentage=25))
    assert data.modality == "text" and data.input_column == "sentence" and data.label_column == "sentiment"
    assert data.label_names == ["neg", "pos"]
    assert (len(data.dataset["train"]), len(data.dataset["validation"])) == (30, 10)


def test_csv_with_explicit_columns(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("body,y\n" + "\n".join(f"row {i},{i % 3}" for i in range(30)))
    data = load_classification_data(DataArguments(train_file=str(path), text_column="body", label_column="y"))
    assert data.label_names == ["0", "1", "2"] and data.input_column == "body"
    with pytest.raises(ValueError, match="label column"):
        load_classification_data(DataArguments(train_file=str(path), label_column="missing"))


def test_image_folders(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for label in ("circle", "square"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    args = DataArguments(train_dir=str(tmp_path / "train"), validation_dir=str(tmp_path / "val"))
    data = load_classification_data(args)
    assert data.modality == "image" and data.label_names == ["circle", "square"]
    assert (len(data.dataset["train"]), len(data.dataset["validation"])) == (12, 4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dataset_name": "x", "train_file": "y.csv"}, "one data source"),
        ({"validation_file": "v.csv"}, "needs --train_file"),
        ({"validation_split_percentage": 0}, "validation_split_percentage"),
        ({"crop": "centre"}, "--crop takes one of"),
        ({"crop_min_scale": 0}, "--crop_min_scale"),
        ({"mixup_alpha": -1}, "--mixup_alpha"),
        ({"repeated_augmentations": 0}, "--repeated_augmentations"),
        ({"shots_per_label": 0}, "--shots_per_label"),
        ({"dataset_name": "x", "streaming": True, "shots_per_label": 5}, "a stream has not"),
    ],
)
def test_bad_data_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataArguments(**kwargs)


def test_unknown_file_format(tmp_path):
    with pytest.raises(ValueError, match="expected a file ending in one of"):
        load_classification_data(DataArguments(train_file=str(tmp_path / "data.xlsx")))


def test_augmentation_keeps_shape_and_varies():
    image = torch.arange(3 * 16 * 16, dtype=torch.float32).view(3, 16, 16)
    generator = torch.Generator().manual_seed(0)
    outputs = [augment_images(image, generator=generator) for _ in range(6)]
    assert all(out.shape == image.shape for out in outputs)
    assert len({out.sum().item() for out in outputs}) > 1
    # Without flips the left column stays to the left of the right one.
    assert all(out[0, 8, 0] < out[0, 8, -1] for out in outputs)
    flipped = [augment_images(image, flip=True, generator=generator) for _ in range(20)]
    assert any(out[0, 8, 0] > out[0, 8, -1] for out in flipped)
    resized = [augment_images(image, crop="random-resized", min_scale=0.25, generator=generator) for _ in range(6)]
    assert all(out.shape == image.shape for out in resized) and len({out.sum().item() for out in resized}) > 1
    # A crop of the whole image (scale 1, and the only ratio that fits a square is 1) is the image itself.
    whole = augment_images(image, crop="random-resized", min_scale=1.0, generator=generator)
    torch.testing.assert_close(whole, image)


def test_dataset_name_loads_a_local_dataset_repository(tmp_path):
    # `--dataset_name` goes through `datasets.load_dataset`, which reads a Hub repository or a local folder alike.
    repo = tmp_path / "text-dataset"
    (repo / "data").mkdir(parents=True)
    for split, count in (("train", 30), ("test", 10)):
        rows = [{"review": f"review {i}", "label": i % 2} for i in range(count)]
        (repo / "data" / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    data = load_classification_data(DataArguments(dataset_name=str(repo)))
    assert data.modality == "text" and data.input_column == "review"
    # No validation split: 10 % of the training split is held out for it, and the test split stays the test split.
    assert {name: len(split) for name, split in data.dataset.items()} == {"train": 27, "validation": 3, "test": 10}
    assert data.test_split == "test" and "held out" in data.eval_split
    held_out = set(data.dataset["validation"]["review"])
    assert not held_out & set(data.dataset["train"]["review"]) and held_out < {f"review {i}" for i in range(30)}
    assert data.dataset["test"]["review"] == [f"review {i}" for i in range(10)]


def test_the_test_split_can_be_named_or_be_the_evaluation_split(tmp_path):
    repo = tmp_path / "images"
    image_dataset_folder(repo)
    (repo / "data" / "validation-00000-of-00001.parquet").rename(repo / "data" / "test-00000-of-00001.parquet")
    named = load_classification_data(DataArguments(dataset_name=str(repo), validation_split="test"))
    assert set(named.dataset) == {"train", "validation"} and len(named.dataset["validation"]) == 16
    assert named.test_split is None and named.eval_split == "test"
    held = load_classification_data(DataArguments(dataset_name=str(repo), validation_split_percentage=25,
                                                  max_eval_samples=4))
    assert {name: len(split) for name, split in held.dataset.items()} == {"train": 48, "validation": 4, "test": 4}
    with pytest.raises(ValueError, match=r"no split 'holdout'.*--test_split"):
        load_classification_data(DataArguments(dataset_name=str(repo), test_split="holdout"))
    with pytest.raises(ValueError, match="also the training or evaluation split"):
        load_classification_data(DataArguments(dataset_name=str(repo), validation_split="test", test_split="test"))


def test_shots_per_label_sample_the_training_split_only(tmp_path):
    full = load_classification_data(DataArguments(keep_labels="7,3"), seed=5)
    shots = load_classification_data(DataArguments(keep_labels="7,3", shots_per_label=4), seed=5)
    assert np.bincount(shots.dataset["train"]["label"]).tolist() == [4, 4]
    assert shots.label_names == ["7", "3"]
    # Drawn with the seed from the selected labels' training examples; the evaluation split untouched.
    expected = sample_shots(full.dataset["train"], "label", 4, seed=5)
    assert [np.asarray(image).tobytes() for image in shots.dataset["train"]["image"]] == [
        np.asarray(image).tobytes() for image in expected["image"]
    ]
    assert shots.dataset["validation"]["label"] == full.dataset["validation"]["label"]
    other = load_classification_data(DataArguments(keep_labels="7,3", shots_per_label=4), seed=6)
    assert other.dataset["train"]["image"] != shots.dataset["train"]["image"]
    with pytest.raises(ValueError, match="fewer than the 1000 shots per label"):
        load_classification_data(DataArguments(shots_per_label=1000))


def test_a_stream_is_shuffled_complete_and_evaluated_whole(tmp_path):
    folder = image_dataset_folder(tmp_path / "images")
    plain = load_classification_data(DataArguments(dataset_name=str(folder)))
    data = load_classification_data(DataArguments(dataset_name=str(folder), streaming=True, shuffle_buffer_size=8))
    assert isinstance(data.dataset["train"], IterableDataset) and not isinstance(data.dataset["validation"],
                                                                                 IterableDataset)
    assert data.label_names == plain.label_names == ["a", "b", "c"] and data.modality == "image"
    assert len(data.dataset["validation"]) == 16
    fingerprint = lambda example: (np.asarray(example["image"]).tobytes(), example["label"])  # noqa: E731
    streamed = [fingerprint(example) for example in data.dataset["train"]]
    stored = [fingerprint(example) for example in plain.dataset["train"]]
    assert sorted(streamed) == sorted(stored) and streamed != stored  # every example once, in another order
    kept = load_classification_data(DataArguments(dataset_name=str(folder), streaming=True, keep_labels="c,a",
                                                  max_train_samples=10))
    labels = [example["label"] for example in kept.dataset["train"]]
    assert kept.label_names == ["c", "a"] and len(labels) == 10 and set(labels) <= {0, 1}


def test_what_a_stream_cannot_do_is_refused(tmp_path):
    folder = image_dataset_folder(tmp_path / "images")
    (folder / "data" / "validation-00000-of-00001.parquet").unlink()
    with pytest.raises(ValueError, match="--streaming needs an evaluation split"):
        load_classification_data(DataArguments(dataset_name=str(folder), streaming=True))
    with pytest.raises(ValueError, match="--streaming reads --dataset_name"):
        DataArguments(streaming=True)
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"t{i}", "label": "xy"[i % 2]}) for i in range(8)))
    (tmp_path / "validation.jsonl").write_text(path.read_text())
    with pytest.raises(ValueError, match="to be a ClassLabel"):
        load_classification_data(DataArguments(train_file=str(path), validation_file=str(tmp_path / "validation.jsonl"),
                                               streaming=True))
