"""Few-shot adaptation: shots, what trains in each mode, the fresh classifier of a new label set, the grid of
`python -m benchmarks.few_shot` and the adapted model `scripts/few_shot.py` saves."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification, TrainingArguments, ViTConfig
from transformers import ViTForImageClassification, pipeline

from nac_hf import NACConfig, NACForClassification, NACImageProcessor
from nac_hf.data import DataArguments, load_classification_data
from nac_hf.few_shot import (
    CODES_PARAMETER,
    DEFAULT_LEARNING_RATES,
    FewShotArguments,
    add_lora,
    freeze_for_mode,
    load_for_labels,
    sample_shots,
    trainable_parameter_names,
)
from nac_hf.training import ModelArguments, training_arguments_defaults

from benchmarks.common import mean_std
from benchmarks.few_shot import results_table, run_few_shot
from nac_test_utils import ROOT, TINY, parameters_moved_by_training, script, train_run


NEW_LABELS = "5,6,7,8,9"


def tiny_nac(num_labels: int = 3) -> NACForClassification:
    torch.manual_seed(0)
    config = NACConfig.from_preset(
        "tiny", image_size=8, patch_size=2, num_channels=1, graph_fit_steps=50, num_labels=num_labels
    )
    return NACForClassification(config)


def tiny_vit(num_labels: int = 3) -> ViTForImageClassification:
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=8, patch_size=2, num_channels=1, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=num_labels,
    )
    return ViTForImageClassification(config)


@pytest.fixture(scope="module")
def new_task():
    return load_classification_data(DataArguments(keep_labels=NEW_LABELS))


def test_shots_are_k_per_label_deterministic_nested_and_seeded(new_task):
    train_split, column = new_task.dataset["train"], new_task.label_column
    five = sample_shots(train_split, column, shots=5, seed=3)
    assert np.bincount(five[column], minlength=5).tolist() == [5] * 5
    assert five["image"] == sample_shots(train_split, column, shots=5, seed=3)["image"]
    other = sample_shots(train_split, column, shots=5, seed=4)
    assert five["image"] != other["image"]
    # For one seed the 1-shot set lies inside the 5-shot set: shot counts differ by the added examples only.
    one = sample_shots(train_split, column, shots=1, seed=3)
    assert {image.tobytes() for image in one["image"]} <= {image.tobytes() for image in five["image"]}
    with pytest.raises(ValueError, match="fewer than the 1000 shots per label"):
        sample_shots(train_split, column, shots=1000, seed=0)


def test_trainable_parameters_per_mode():
    nac = tiny_nac()
    names = [name for name, _ in nac.named_parameters()]
    head = sorted(name for name in names if name.startswith(("head_norm.", "classifier.")))
    assert head == ["classifier.code_proj.weight", "classifier.linear.bias", "classifier.linear.weight",
                    "head_norm.bias", "head_norm.weight"]
    assert sorted(trainable_parameter_names(nac, "head")) == head
    assert sorted(trainable_parameter_names(nac, "codes")) == sorted(head + [CODES_PARAMETER])
    assert trainable_parameter_names(nac, "full") == names
    with pytest.raises(ValueError, match="add them with model.add_modules"):
        trainable_parameter_names(nac, "extend")
    nac.add_modules(2)
    added = ["nac.generator.added_codes", "nac.generator.added_signatures"]
    assert sorted(trainable_parameter_names(nac, "extend")) == sorted(head + added)

    vit = tiny_vit()
    assert sorted(trainable_parameter_names(vit, "head")) == [
        "classifier.bias", "classifier.weight", "vit.layernorm.bias", "vit.layernorm.weight"
    ]
    with pytest.raises(ValueError, match="has none; use mode 'full' or 'head'"):
        trainable_parameter_names(vit, "codes")
    with pytest.raises(ValueError, match="unknown adaptation mode"):
        trainable_parameter_names(nac, "prompt")
    with pytest.raises(ValueError, match="wrap the model with nac_hf.few_shot.add_lora"):
        trainable_parameter_names(nac, "lora")
    lora = sorted(trainable_parameter_names(add_lora(tiny_nac()), "lora"))
    assert any(".lora_A." in name for name in lora) and any(".lora_B." in name for name in lora)
    assert {name.split(".lora_")[0].split("base_model.model.")[1] for name in lora if ".lora_" in name} == {
        f"nac.{block}.{projection}.linear"
        for block in ("read_in", "propagators.0.attention", "propagators.1.attention", "read_out.attention")
        for projection in ("query", "key", "value", "output")
    }
    assert {name for name in lora if ".lora_" not in name} == {
        f"base_model.model.{name.replace('.', '.modules_to_save.default.', 1)}" for name in head
    }


@pytest.mark.parametrize("mode", ["head", "codes", "full", "lora", "extend"])
def test_only_the_trainable_parameters_move(tmp_path, mode):
    model = add_lora(tiny_nac()) if mode == "lora" else tiny_nac()
    if mode == "extend":
        model.add_modules(2)
    trainable = set(freeze_for_mode(model, mode))
    assert {name for name, p in model.named_parameters() if p.requires_grad} == trainable
    pixel_values = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    # The others bit for bit as they were, under AdamW's weight decay too.
    assert parameters_moved_by_training(model, pixel_values, tmp_path) == trainable


def test_new_label_set_gets_a_fresh_classifier_also_with_as_many_labels(tmp_path, new_task):
    # 5 labels -> 5 other labels: the shapes match, and ignore_mismatched_sizes alone would keep the old classifier.
    old = tiny_nac(num_labels=5)
    old.save_pretrained(tmp_path)
    torch.manual_seed(1)
    first = load_for_labels(str(tmp_path), new_task)
    torch.manual_seed(1)
    again = load_for_labels(str(tmp_path), new_task)
    torch.manual_seed(2)
    other = load_for_labels(str(tmp_path), new_task)
    weight = "classifier.linear.weight"
    models = {"old": old, "1": first, "1b": again, "2": other}
    state = {name: model.state_dict()[weight] for name, model in models.items()}
    assert not torch.equal(state["1"], state["old"]) and not torch.equal(state["1"], state["2"])
    assert torch.equal(state["1"], state["1b"])
    assert first.config.id2label == {i: str(5 + i) for i in range(5)}
    # Everything outside the classifier is the checkpoint's.
    assert torch.equal(first.nac.generator.codes, old.nac.generator.codes)
    assert torch.equal(first.head_norm.weight, old.head_norm.weight)


@pytest.mark.parametrize("kind", ["nac", "vit"])
def test_prototype_mode_is_the_nearest_class_mean_of_what_the_classifier_reads(tmp_path, new_task, kind):
    model = (tiny_nac if kind == "nac" else tiny_vit)(num_labels=5).eval()
    model.save_pretrained(tmp_path)
    processor = NACImageProcessor(size={"height": 8, "width": 8}, num_channels=1)
    processor.save_pretrained(tmp_path)
    args = FewShotArguments(model_name_or_path=str(tmp_path), shots="3", seeds=1, modes="prototype")
    training_args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, seed=0)
    results = run_few_shot(args, DataArguments(keep_labels=NEW_LABELS), training_args)
    entry = results["modes"]["prototype"]
    assert entry["settings"] == {"learning_rate": None, "trainable_parameters": 0}

    def features(split) -> tuple[torch.Tensor, torch.Tensor]:
        """Written out: a NAC's normalised pooled output, a ViT's normalised [CLS] state, L2-normalised."""
        pixels = processor(list(split[new_task.input_column]), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            if kind == "nac":
                read = model.head_norm(model.nac(pixel_values=pixels).pooler_output)
            else:
                read = model.vit(pixel_values=pixels).last_hidden_state[:, 0]
        return torch.nn.functional.normalize(read, dim=-1), torch.tensor(split[new_task.label_column])

    shot_features, shot_labels = features(sample_shots(new_task.dataset["train"], new_task.label_column, 3, seed=0))
    eval_features, eval_labels = features(new_task.dataset["validation"])
    prototypes = torch.stack([shot_features[shot_labels == label].mean(0) for label in range(5)])
    predictions = (eval_features @ torch.nn.functional.normalize(prototypes, dim=-1).T).argmax(-1)
    expected = (predictions == eval_labels).float().mean().item()
    assert entry["shots"]["3"]["accuracies"] == [pytest.approx(expected, abs=1e-6)]
    assert expected > 0.25  # above chance (1 / 5): features of even an untrained model tell some digits apart


def test_codes_mode_is_refused_for_a_model_without_codes(tmp_path):
    vit = tiny_vit(num_labels=5)
    vit.save_pretrained(tmp_path)
    NACImageProcessor(size={"height": 8, "width": 8}, num_channels=1).save_pretrained(tmp_path)
    args = FewShotArguments(model_name_or_path=str(tmp_path), shots="1", seeds=1, modes="head,codes")
    training_args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    with pytest.raises(ValueError, match="mode 'codes' works on the modules of a NAC"):
        run_few_shot(args, DataArguments(keep_labels=NEW_LABELS), training_args)


def test_argument_checks_mean_std_and_table():
    for kwargs, message in (
        ({"shots": "1,x"}, "comma-separated integers"),
        ({"shots": "0"}, "positive"),
        ({"modes": "full,prompt"}, "subset of"),
        ({"seeds": 0}, "at least 1"),
        ({"codes_learning_rate": 0.0}, "codes_learning_rate"),
    ):
        with pytest.raises(ValueError, match=message):
            FewShotArguments(model_name_or_path="x", **kwargs)
    assert mean_std([0.5, 0.7]) == pytest.approx((0.6, np.sqrt(0.02)))
    assert mean_std([0.4]) == (0.4, 0.0)
    entry = {"shots": {"1": {"mean": 0.5, "std": 0.1}, "5": {"mean": 0.8, "std": 0.0}}}
    table = results_table({"NAC, codes": entry}, [1, 5, 10])
    assert table.splitlines()[0] == "| model, mode | 1-shot | 5-shot | 10-shot |"
    assert table.splitlines()[2] == "| NAC, codes | 50.0 ± 10.0 | 80.0 ± 0.0 | — |"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A tiny NAC trained for 10 steps on the digits 0-4 by scripts/train.py, with its processor."""
    folder = tmp_path_factory.mktemp("pretrained")
    settings = {
        **training_arguments_defaults(),
        "output_dir": str(folder),
        "max_steps": 10,
        "per_device_train_batch_size": 32,
        "save_strategy": "no",
        "eval_strategy": "no",
        "do_eval": False,
        "logging_strategy": "no",
        "disable_tqdm": True,
    }
    train_run(ModelArguments(preset="tiny", config_overrides=TINY), DataArguments(keep_labels="0,1,2,3,4"),
              TrainingArguments(**settings))
    return folder


OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_the_grid_end_to_end(tmp_path, pretrained):
    output = tmp_path / "few-shot"
    command = [
        sys.executable, "-m", "benchmarks.few_shot", "--model_name_or_path", str(pretrained),
        "--keep_labels", NEW_LABELS, "--shots", "1,2", "--seeds", "2", "--max_steps", "4", "--seed", "7",
        "--output_dir", str(output), "--modes", "full,head,codes,lora,extend", "--extend_modules", "2",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=OFFLINE, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| codes |" in done.stdout

    results = json.loads((output / "few_shot_results.json").read_text())
    assert results["labels"] == NEW_LABELS.split(",") and results["eval_examples"] == 180
    assert results["seeds"] == [7, 8] and results["settings"]["max_steps"] == 4
    assert list(results["modes"]) == ["full", "head", "codes", "lora", "extend"]
    for mode, entry in results["modes"].items():
        assert list(entry["shots"]) == ["1", "2"]
        assert entry["settings"]["learning_rate"] == DEFAULT_LEARNING_RATES[mode]
        for shots, cell in entry["shots"].items():
            assert len(cell["accuracies"]) == 2 and all(0.0 <= a <= 1.0 for a in cell["accuracies"])
            assert (cell["mean"], cell["std"]) == pytest.approx(mean_std(cell["accuracies"]))
            assert [run["train_examples"] for run in cell["runs"]] == [5 * int(shots)] * 2
    sizes = {mode: entry["settings"]["trainable_parameters"] for mode, entry in results["modes"].items()}
    codes = NACConfig.from_pretrained(pretrained)
    num_codes = (codes.num_input_modules + codes.num_processor_modules + codes.num_output_modules) * codes.code_dim
    assert sizes["codes"] == sizes["head"] + num_codes and sizes["full"] > sizes["codes"]
    assert sizes["head"] < sizes["lora"] < sizes["full"]
    assert sizes["extend"] == sizes["head"] + 2 * (codes.code_dim + codes.signature_dim)
    assert results["modes"]["extend"]["settings"]["added_modules"] == 2

    refused = subprocess.run(command + ["--learning_rate", "0.1"], capture_output=True, text=True, env=OFFLINE, cwd=ROOT)
    assert refused.returncode != 0 and "its own learning rate" in refused.stderr


@pytest.mark.parametrize("mode", ["codes", "lora"])
def test_the_script_saves_the_adapted_model_for_from_pretrained_and_pipelines(tmp_path, pretrained, new_task, mode):
    output = tmp_path / "adapted"
    command = [sys.executable, "scripts/few_shot.py", "--model_name_or_path", str(pretrained), "--keep_labels",
               NEW_LABELS, "--shots", "2", "--modes", mode, "--max_steps", "4", "--seed", "3", "--output_dir",
               str(output)]
    done = subprocess.run(command, capture_output=True, text=True, env=OFFLINE, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((output / "few_shot.json").read_text())
    assert (record["mode"], record["shots"], record["seed"]) == (mode, 2, 3) and record["train_examples"] == 10
    assert record["labels"] == NEW_LABELS.split(",")

    model = AutoModelForImageClassification.from_pretrained(output).eval()
    assert model.config.id2label == {i: str(5 + i) for i in range(5)}  # the new labels, not the pretrained ones
    assert not [name for name in model.state_dict() if "lora" in name]  # LoRA merged: a plain NAC
    evaluation = new_task.dataset["validation"]
    images, labels = list(evaluation[new_task.input_column]), torch.tensor(list(evaluation[new_task.label_column]))
    pixels = AutoImageProcessor.from_pretrained(output)(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        predictions = model(pixel_values=pixels).logits.argmax(-1)
    # the saved model answers as the adapted one did when the script evaluated it
    assert (predictions == labels).float().mean().item() == pytest.approx(record["top1_accuracy"], abs=1e-6)
    classifier = pipeline("image-classification", model=str(output))
    answers = classifier(images[:12], top_k=5)
    assert all(sorted(a["label"] for a in answer) == NEW_LABELS.split(",") for answer in answers)
    assert [answer[0]["label"] for answer in answers] == [str(5 + p) for p in predictions[:12].tolist()]


@pytest.mark.parametrize("flags, message", [
    (["--shots", "1,5"], "adapts once: give one --shots count and one --modes entry"),
    (["--modes", "codes,head"], "adapts once: give one --shots count and one --modes entry"),
    (["--modes", "prototype"], "mode 'prototype' trains nothing and has no model to save"),
])
def test_the_script_refuses_a_grid_and_the_prototype_mode(tmp_path, monkeypatch, capsys, flags, message):
    arguments = ["few_shot.py", "--model_name_or_path", str(tmp_path), "--output_dir", str(tmp_path), *flags]
    monkeypatch.setattr(sys, "argv", arguments)
    with pytest.raises(SystemExit) as exit:
        script("few_shot").parse()
    assert exit.value.code == 2 and message in capsys.readouterr().err


@pytest.fixture(scope="module")
def adapted(pretrained, tmp_path_factory) -> Path:
    """The digits 5-9 adapted from `pretrained` by scripts/few_shot.py: 2 shots per label, mode codes, seed 3."""
    output = tmp_path_factory.mktemp("adapted") / "nac-digits-5-9"
    command = [sys.executable, "scripts/few_shot.py", "--model_name_or_path", str(pretrained), "--keep_labels",
               NEW_LABELS, "--shots", "2", "--modes", "codes", "--max_steps", "4", "--seed", "3", "--output_dir",
               str(output)]
    done = subprocess.run(command, capture_output=True, text=True, env=OFFLINE, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return output


def test_the_adapted_model_publishes_with_a_card_that_states_its_adaptation(adapted, pretrained, tmp_path):
    from huggingface_hub import ModelCard

    from nac_hf.hub import publish

    record = json.loads((adapted / "few_shot.json").read_text())
    assert (record["steps"], record["eval_examples"], record["dataset_id"]) == (4, 180, "scikit-learn-digits")
    repo = Path(publish(adapted, "org/nac-digits-5-9", dry_run=tmp_path / "repo"))  # checked in a fresh process
    assert (repo / "few_shot.json").is_file()
    card = ModelCard.load(repo / "README.md")
    text = " ".join(card.text.split())
    assert f"Adapted from {pretrained} to these labels from **2 training example(s) per label** (10 in all), drawn " \
           "with seed 3 (`nac_hf.few_shot.sample_shots`), in mode `codes`: only the module codes and the head " \
           "trained" in text
    assert "| Shots per label | 2 |" in card.text and "| Seed | 3 |" in card.text
    assert "| Optimizer steps | 4 |" in card.text and "| Learning rate | 0.1 |" in card.text
    assert f"| Started from | {pretrained}, adapted in mode 'codes' |" in card.text
    assert f"| Top-1 accuracy | {100 * record['top1_accuracy']:.2f} % |" in card.text
    assert "180 examples of scikit-learn digits" in text
    assert card.data.datasets == ["scikit-learn-digits"] and card.data.eval_results[0].metric_value == round(
        record["top1_accuracy"], 4
    )
    assert card.data.base_model is None  # a local folder is no Hub model to link
    assert "5, 6, 7, 8, 9" in card.text
