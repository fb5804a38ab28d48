import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from transformers import AutoTokenizer, TrainingArguments

from benchmarks.task_comparison import (
    MAX_SIZE_GAP,
    TASKS,
    PointNetConfig,
    PointNetForClassification,
    check_lengths,
    check_sizes,
    main,
    parameter_counts,
)
from benchmarks.tasks import listops, shapes
from nac_hf import NACForClassification
from nac_hf.data import DataArguments, load_classification_data
from nac_hf.training import make_trainer, training_arguments_defaults


# Tiny versions of the tasks, and their flags for the command.
TINY = {
    "listops": dict(num_train=48, num_validation=12, num_test=12, min_length=8, max_length=30, max_depth=4,
                    max_args=4),
    "shapes": dict(train_per_class=2, validation_per_class=1, test_per_class=1, num_points=32),
}


def flags(settings: dict) -> list[str]:
    return [text for name, value in settings.items() for text in (f"--{name}", str(value))]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_baseline_has_the_parameters_of_its_nac_within_ten_percent(name):
    task = TASKS[name]
    counts = parameter_counts(task)
    nac, baseline = counts["nac"], counts[task.baseline.name]
    assert 0.3e6 <= nac <= 1e6, "the task presets are sized to train on two CPU cores"
    assert abs(baseline / nac - 1) <= MAX_SIZE_GAP
    assert check_sizes(task) == counts


def test_a_baseline_of_another_size_is_refused():
    task = TASKS["listops"]
    wider = dataclasses.replace(task, baseline_size={**task.baseline_size, "intermediate_size": 512})
    with pytest.raises(ValueError, match="resize the baseline"):
        check_sizes(wider)


def test_the_text_presets_read_every_listops_text_and_refuse_longer_ones():
    check_lengths(TASKS["listops"], listops.build(0))  # the task's defaults: none is cut
    features = Features({"text": Value("string"), "label": ClassLabel(names=listops.LABELS)})
    long = DatasetDict(train=Dataset.from_dict({"text": ["[MAX " + "1 " * 150 + "]"], "label": [1]}, features=features))
    with pytest.raises(ValueError, match="--max_length"):
        check_lengths(TASKS["listops"], long)


def small_pointnet(num_labels: int = 12, **labels) -> PointNetForClassification:
    torch.manual_seed(0)
    return PointNetForClassification(PointNetConfig(point_widths=[16, 32], head_widths=[32], num_labels=num_labels,
                                                    **labels))


def test_the_point_baseline_ignores_padding_and_the_order_of_points():
    model = small_pointnet(3).eval()
    cloud = torch.randn(1, 5, 3)  # (B, N, 3)
    padded = torch.cat([cloud, torch.full((1, 3, 3), 100.0)], dim=1)  # padding that would win the max-pool
    mask = torch.tensor([[1] * 5 + [0] * 3])
    torch.testing.assert_close(model(padded, points_mask=mask).logits, model(cloud).logits)
    torch.testing.assert_close(model(cloud[:, torch.randperm(5)]).logits, model(cloud).logits)
    with pytest.raises(ValueError, match="points of shape"):
        model(torch.randn(2, 5))


def test_the_point_baseline_trains_with_the_trainer_and_reloads_equal(tmp_path):
    shapes.build(0, **TINY["shapes"]).save_to_disk(tmp_path / "data")
    data_args = DataArguments(dataset_name=str(tmp_path / "data"))
    data = load_classification_data(data_args)
    model = small_pointnet(id2label=data.id2label, label2id=data.label2id)
    before = model.classifier.weight.detach().clone()
    settings = {**training_arguments_defaults(), "output_dir": str(tmp_path / "model"), "max_steps": 3,
                "per_device_train_batch_size": 8, "eval_strategy": "no", "save_strategy": "no", "logging_steps": 1,
                "disable_tqdm": True}
    trainer = make_trainer(model, None, data, data_args, TrainingArguments(**settings))
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert not torch.equal(model.classifier.weight, before)
    assert 0 <= trainer.evaluate()["eval_top1_accuracy"] <= 1
    trainer.save_model()
    reloaded = PointNetForClassification.from_pretrained(tmp_path / "model").eval()
    points = torch.randn(2, 10, 3)
    assert torch.equal(model.eval()(points).logits, reloaded(points).logits)
    assert reloaded.config.id2label == data.id2label


def command(name: str, folder, results) -> list[str]:
    """The command on the tiny task: one trial, two seeds, half an epoch."""
    return ["--task", name, "--output_dir", str(folder), "--results", str(results), "--seeds", "2",
            "--tuning_trials", "1", "--epochs", "0.5", *flags(TINY[name])]


def check_results(name: str, argv: list[str], results: dict, folder) -> NACForClassification:
    """The results of the command say what the comparison found, and its NAC folder loads: the NAC."""
    assert {"task", "command", "nac", "baseline", "paired_diff", "protocol"} <= set(results)
    assert results["task"] == name and results["command"].endswith(" ".join(argv))
    nac, baseline, paired = results["nac"], results["baseline"], results["paired_diff"]
    assert baseline["name"] == TASKS[name].baseline.display
    for family in (nac, baseline):
        assert len(family["runs"]) == 2 and all(0 <= run <= 1 for run in family["runs"])
        assert family["mean"] == pytest.approx(np.mean(family["runs"]))
        assert family["std"] == pytest.approx(np.std(family["runs"], ddof=1))
    assert abs(baseline["params"] / nac["params"] - 1) <= MAX_SIZE_GAP
    assert paired["mean"] == pytest.approx(np.mean(np.subtract(nac["runs"], baseline["runs"])))
    assert paired["ci_low"] <= paired["mean"] <= paired["ci_high"]
    constant = results["majority_answer"]
    assert constant["label"] in TASKS[name].labels and 0 < constant["test_top1"] <= 1
    best = max(nac["details"], key=lambda run: run["validation"])
    assert results["published"]["published_from"] == best["folder"]
    model = NACForClassification.from_pretrained(folder / f"nac-{name}")
    assert model.num_parameters() == nac["params"] and (folder / f"nac-{name}" / "README.md").is_file()
    return model


def test_the_command_on_a_text_task_writes_its_results_and_a_nac_with_its_tokenizer(tmp_path):
    argv = command("listops", tmp_path / "run", tmp_path / "listops.json")
    main(argv)
    check_results("listops", argv, json.loads((tmp_path / "listops.json").read_text()), tmp_path / "run")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run" / "nac-listops")
    assert tokenizer("[MAX 1 2 ]")["input_ids"][0] == tokenizer.cls_token_id


def test_the_command_on_point_clouds_writes_its_results_and_a_rerun_reuses_every_training_of_its_config(
    tmp_path, monkeypatch
):
    argv = command("shapes", tmp_path / "run", tmp_path / "first.json")
    first = main(argv)
    check_results("shapes", argv, json.loads((tmp_path / "first.json").read_text()), tmp_path / "run")
    weights = sorted((tmp_path / "run" / "runs").glob("*/model.safetensors"))
    assert len(weights) == 4  # one trial and one more seed, of each family
    written = [path.stat().st_mtime_ns for path in weights]
    again = main(command("shapes", tmp_path / "run", tmp_path / "again.json"))
    assert [path.stat().st_mtime_ns for path in weights] == written
    assert again["nac"]["runs"] == first["nac"]["runs"] and again["baseline"]["runs"] == first["baseline"]["runs"]
    with pytest.raises(ValueError, match="give another --output_dir"):
        main([*argv[:-2], "--num_points", "16"])
    changed = dataclasses.replace(TASKS["shapes"], nac_overrides={"fourier_feature_scale": 3.0})
    monkeypatch.setitem(TASKS, "shapes", changed)
    with pytest.raises(ValueError, match=r"another config.*fourier_feature_scale: 1.0 there, 3.0 now"):
        main(argv)
