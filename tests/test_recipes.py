"""The recipes end to end: `scripts/train.py --recipe cifar` on a CIFAR-shaped dataset loaded by name from the
Hugging Face caches, offline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file

from nac_hf import NACConfig
from nac_hf.ema import TRAINING_WEIGHTS
from nac_hf.hub import publish
from nac_hf.recipes import RECIPES, recipe_defaults
from nac_test_utils import ROOT


REPO_ID = "org/cifar-like"
REVISION = "0123456789abcdef0123456789abcdef01234567"
LABELS = [f"class{i}" for i in range(10)]
# The `cifar` preset, narrowed to train in seconds.
SMALL = (
    "hidden_size=32,code_dim=16,intermediate_size=48,num_attention_heads=2,attention_head_dim=16,num_input_modules=4,"
    "num_processor_modules=8,num_hidden_layers=2,graph_num_groups=2,graph_fit_steps=50,conv_position_channels=8,"
    "signature_dim=8"
)


def cifar_like_caches(root: Path) -> dict:
    """Random 32×32 RGB images of 10 labels (columns `img` and `label`, as uoft-cs/cifar10), train (200) and test (50)
    splits as parquet files in a Hugging Face hub cache (`datasets--org--cifar-like/snapshots/<commit>/`, with
    `refs/main`), and prepared from those files into the datasets cache under the repository's name, as a first
    `load_dataset("org/cifar-like")` leaves them. Returns the environment that reads them offline."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature
    from datasets.packaged_modules.parquet.parquet import Parquet

    entry = root / "hub" / ("datasets--" + REPO_ID.replace("/", "--"))
    snapshot = entry / "snapshots" / REVISION / "plain_text"
    snapshot.mkdir(parents=True)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(REVISION)
    rng = np.random.default_rng(0)
    features = Features({"img": ImageFeature(), "label": ClassLabel(names=LABELS)})
    files = {}
    for split, count in (("train", 200), ("test", 50)):
        images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(count)]
        files[split] = [str(snapshot / f"{split}-00000-of-00001.parquet")]
        Dataset.from_dict({"img": images, "label": [i % 10 for i in range(count)]}, features=features).to_parquet(
            files[split][0]
        )
    cache = root / "datasets"
    builder = Parquet(cache_dir=str(cache), dataset_name="cifar-like", config_name="plain_text",
                      config_id="plain_text", data_files=files, hash=REVISION)
    builder.download_and_prepare()
    (cache / "cifar-like").rename(cache / "org___cifar-like")  # the datasets cache names a Hub dataset by its owner
    return {"HF_HUB_CACHE": str(root / "hub"), "HF_DATASETS_CACHE": str(cache), "HF_HOME": str(root / "home"),
            "HF_HUB_OFFLINE": "1"}


# Runs scripts/train.py as `python scripts/train.py ARGS` does, recording what the mixing collator hands the model
# and every evaluation, and prints them as JSON.
DRIVER = """
import json, runpy, sys
import torch
from transformers import DefaultDataCollator
import nac_hf.augmentation as augmentation
import nac_hf.training as training

batches, evaluations = [], []
mix = augmentation.MixingCollator.__call__

def recording_mix(self, features):
    plain = DefaultDataCollator()(features)["pixel_values"]
    batch = mix(self, features)
    batches.append({"top_target": batch["labels"].max(1).values.tolist(),
                    "changed": (batch["pixel_values"] != plain).float().mean().item()})
    return batch

evaluate = training.NACTrainer.evaluate

def recording_evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
    dataset = self.eval_dataset if eval_dataset is None else eval_dataset
    evaluations.append([metric_key_prefix, len(dataset), self.state.global_step])
    return evaluate(self, eval_dataset, ignore_keys, metric_key_prefix)

augmentation.MixingCollator.__call__ = recording_mix
training.NACTrainer.evaluate = recording_evaluate
sys.argv = ["scripts/train.py", *sys.argv[1:]]
runpy.run_path("scripts/train.py", run_name="__main__")
print(json.dumps({"batches": batches, "evaluations": evaluations}))
"""


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    env = {**os.environ, **cifar_like_caches(root), "OMP_NUM_THREADS": "1"}
    output = root / "run"
    command = [
        sys.executable, "-c", DRIVER, "--recipe", "cifar", "--dataset_name", REPO_ID, "--config_overrides", SMALL,
        "--num_train_epochs", "2", "--per_device_train_batch_size", "30", "--per_device_eval_batch_size", "64",
        "--dataloader_num_workers", "0", "--ema_decay", "0.5", "--warmup_epochs", "1", "--logging_steps", "1",
        "--disable_tqdm", "true", "--output_dir", str(output),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "offline mode is enabled" in done.stdout + done.stderr  # read from the cache, by name
    return output, json.loads(done.stdout.strip().splitlines()[-1])


def test_the_cifar_recipe_trains_with_mixing_on_a_held_out_validation_split(cifar_run):
    output, record = cifar_run
    details = json.loads((output / "training_details.json").read_text())
    assert details["dataset"] == REPO_ID and details["recipe"] == "cifar" and details["labels"] == LABELS
    # 10 % of the 200 training images held out, stratified, for per-epoch evaluation; the test split kept apart.
    assert (details["train_examples"], details["eval_examples"], details["test_examples"]) == (180, 20, 50)
    assert details["eval_split"].startswith("10 % of train held out") and details["test_split"] == "test"
    assert details["augmentation"] == (
        "padded random crop, horizontal flip, mixup 0.8, cutmix 1, label smoothing 0.1, repeated augmentation ×3"
    )
    assert (details["steps"], details["warmup"], details["warmup_epochs"]) == (12, 6, 1)  # 180 / 30 a epoch
    assert details["precision"] == "bf16 mixed precision" and details["ema_decay"] == 0.5
    # Every training batch was mixed: images changed, no target left whole (at most 1 − 0.1 + 0.01 on one label).
    assert len(record["batches"]) == 12
    assert all(batch["changed"] > 0 for batch in record["batches"])
    assert all(max(batch["top_target"]) < 0.91 + 1e-6 for batch in record["batches"])
    assert any(min(batch["top_target"]) < 0.9 for batch in record["batches"])  # mixed, not only smoothed


def test_the_test_split_is_evaluated_once_at_the_end(cifar_run):
    output, record = cifar_run
    evaluations = record["evaluations"]
    assert evaluations[:2] == [["eval", 20, 6], ["eval", 20, 12]]  # every epoch, on the validation split
    assert [e[0] for e in evaluations].count("test") == 1 and evaluations[-1] == ["test", 50, 12]
    test = json.loads((output / "test_results.json").read_text())
    assert test["test_samples"] == 50 and 0 <= test["test_top1_accuracy"] <= 1 and "test_top5_accuracy" in test
    combined = json.loads((output / "all_results.json").read_text())
    assert combined["test_top1_accuracy"] == test["test_top1_accuracy"] and "eval_top1_accuracy" in combined


def test_the_kept_model_is_the_best_checkpoints_averaged_weights(cifar_run):
    output, _ = cifar_run
    state = json.loads((output / "trainer_state.json").read_text())
    best = Path(state["best_model_checkpoint"])
    assert best.name in ("checkpoint-6", "checkpoint-12")
    for checkpoint in ("checkpoint-6", "checkpoint-12"):
        averaged, trained = load_file(output / checkpoint / "model.safetensors"), load_file(
            output / checkpoint / TRAINING_WEIGHTS
        )
        assert not torch.equal(averaged["nac.generator.codes"], trained["nac.generator.codes"])
    final, kept = load_file(output / "model.safetensors"), load_file(output / best.name / "model.safetensors")
    assert all(torch.equal(final[name], kept[name]) for name in kept)
    config = NACConfig.from_pretrained(output)
    assert (config.tokenizer_type, config.image_size, config.num_labels) == ("conv", 32, 10)


def test_the_card_of_a_recipe_run_reports_the_test_split(cifar_run, tmp_path):
    output, _ = cifar_run
    card = ModelCard.load(Path(publish(output, "org/nac-cifar-like", dry_run=tmp_path / "repo")) / "README.md")
    test = json.loads((output / "test_results.json").read_text())
    result = card.data.eval_results[0]
    assert (result.dataset_split, result.dataset_type, result.metric_value) == (
        "test", REPO_ID, round(test["test_top1_accuracy"], 4)
    )
    text = card.text
    assert "Evaluated once, after training, on the 50 examples of the\ntest split of org/cifar-like" in text
    assert f"| Top-1 accuracy | {100 * test['test_top1_accuracy']:.2f} % |" in text
    assert "used to choose the checkpoint kept" in text and "| Recipe | `cifar` (nac_hf.recipes) |" in text
    assert "| Weights | exponential moving average, decay 0.5 |" in text and "| Test examples | 50 |" in text
    assert "| Learning rate | 0.0005, cosine schedule, warm-up 1 epoch (6 steps) |" in text


def test_every_recipe_names_a_preset_and_known_flags():
    from transformers import HfArgumentParser

    from nac_hf.training import DataArguments, ModelArguments, NACTrainingArguments

    parser = HfArgumentParser((ModelArguments, DataArguments, NACTrainingArguments))
    flags = {action.dest for action in parser._actions}
    for name, recipe in RECIPES.items():
        assert recipe.preset in NACConfig.presets()
        assert set(recipe_defaults(name)) <= flags, set(recipe_defaults(name)) - flags
    with pytest.raises(ValueError, match="unknown recipe 'imagenet'"):
        recipe_defaults("imagenet")
