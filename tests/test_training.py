import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import evaluate
import numpy as np
import pytest
import torch
from transformers import AutoModelForImageClassification, pipeline

from nac_hf import NACConfig, NACForClassification
from nac_hf.data import DataArguments, digits_dataset, load_classification_data
from nac_test_utils import TINY, image_dataset_folder, script, train_run, training_args
from nac_hf.modeling_nac import CheckpointMismatchError
from nac_hf.training import (
    TOP_K_ACCURACY,
    ModelArguments,
    NACTrainingArguments,
    build_model,
    build_processor,
    is_complete_checkpoint,
    last_complete_checkpoint,
    make_compute_metrics,
    make_trainer,
    parse_config_overrides,
    resolve_resume,
    set_cpu_threads,
    training_arguments_defaults,
    training_details,
)


ROOT = Path(__file__).resolve().parents[1]


def test_config_overrides_are_typed():
    assert parse_config_overrides("hidden_size=64, graph_prior=none, freeze_signatures=true, kernel_truncation=0.8") == {
        "hidden_size": 64,
        "graph_prior": "none",
        "freeze_signatures": True,
        "kernel_truncation": 0.8,
    }
    # Fields that default to None take a word, a number or none.
    assert parse_config_overrides("problem_type=regression") == {"problem_type": "regression"}
    assert parse_config_overrides("problem_type=none") == {"problem_type": None}
    for text, message in (("hidden=3", "not a NACConfig field"), ("hidden_size", "key=value"), ("hidden_size=big", "int")):
        with pytest.raises(ValueError, match=message):
            parse_config_overrides(text)


def test_model_modality_must_match_the_data(tmp_path):
    data = load_classification_data(DataArguments(max_train_samples=20, max_eval_samples=10))
    with pytest.raises(ValueError, match="holds image data"):
        build_model(ModelArguments(preset="tiny", config_overrides="tokenizer_type=byte"), data)
    model = build_model(ModelArguments(preset="tiny", config_overrides=TINY), data)
    assert model.config.id2label[3] == "3" and model.config.num_labels == 10


def test_metric_is_offline_and_correct(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(TOP_K_ACCURACY)
    scores = [[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]]
    assert metric.compute(predictions=scores, references=[1, 2, 0], k=1) == {"top_1_accuracy": pytest.approx(1 / 3)}
    assert metric.compute(predictions=scores, references=[1, 2, 0], k=2) == {"top_2_accuracy": pytest.approx(1 / 3)}
    assert metric.compute(predictions=scores, references=[1, 1, 0], k=2) == {"top_2_accuracy": pytest.approx(2 / 3)}
    assert metric.compute(predictions=scores, references=[1, 2, 0], k=3) == {"top_3_accuracy": 1.0}
    with pytest.raises(ValueError, match="k must lie"):
        metric.compute(predictions=scores, references=[1, 2, 0], k=4)

    class Prediction:
        predictions = np.eye(10)[[3, 1, 2]] + 0.01 * np.arange(10)
        label_ids = np.array([3, 9, 0])

    assert make_compute_metrics(10)(Prediction()) == {"top1_accuracy": pytest.approx(1 / 3), "top5_accuracy": pytest.approx(2 / 3)}
    assert set(make_compute_metrics(3)(Prediction())) == {"top1_accuracy"}


def test_a_few_trainer_steps_lower_the_loss(tmp_path):
    data_args = DataArguments(max_train_samples=256, max_eval_samples=64)
    model_args = ModelArguments(preset="tiny", config_overrides=TINY)
    args = training_args(tmp_path, max_steps=40, learning_rate=3e-3, logging_steps=10)
    train_run(model_args, data_args, args)
    history = json.loads((tmp_path / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 4 and losses[-1] < losses[0], losses


def test_train_writes_a_loadable_model_results_and_card(tmp_path):
    data_args = DataArguments(max_train_samples=128, max_eval_samples=40)
    model_args = ModelArguments(preset="tiny", config_overrides=TINY)
    args = training_args(tmp_path, max_steps=8, save_strategy="steps", save_steps=4)
    metrics = train_run(model_args, data_args, args)
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md", "train_results.json",
                 "eval_results.json", "all_results.json", "checkpoint-8/model.safetensors"):
        assert (tmp_path / name).exists(), name
    assert 0.0 <= metrics["eval_top1_accuracy"] <= 1.0 and "eval_top5_accuracy" in metrics
    model = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert model.config.id2label[7] == "7"
    digit = digits_dataset()["test"][0]["image"]
    predictions = pipeline("image-classification", model=str(tmp_path))(digit)
    assert predictions[0]["label"] in model.config.id2label.values()


def test_resume_picks_the_last_complete_checkpoint(tmp_path):
    data_args = DataArguments(max_train_samples=64, max_eval_samples=16)
    model_args = ModelArguments(preset="tiny", config_overrides=TINY)
    args = training_args(tmp_path, max_steps=4, save_strategy="steps", save_steps=2, do_eval=False)
    train_run(model_args, data_args, args)
    assert last_complete_checkpoint(tmp_path).endswith("checkpoint-4")
    # A run killed while saving leaves a checkpoint without its trainer state: it is set aside, not resumed from.
    broken = tmp_path / "checkpoint-6"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"partial")
    assert last_complete_checkpoint(tmp_path).endswith("checkpoint-4")
    assert not broken.exists() and (tmp_path / "checkpoint-6.incomplete").exists()
    args = training_args(tmp_path, max_steps=6, save_strategy="steps", save_steps=2, resume_from_checkpoint="last")
    assert resolve_resume(args).endswith("checkpoint-4")
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_resume(training_args(tmp_path, resume_from_checkpoint=str(tmp_path / "checkpoint-6.incomplete")))


@pytest.mark.parametrize("part", ["pytorch_model_fsdp_0", "optimizer_0"])
def test_a_sharded_fsdp_checkpoint_is_complete_once_each_part_has_its_index(tmp_path, part):
    # Under FSDP with sharded checkpoints each process writes its shards of the model and of the optimizer, and
    # the index (.metadata) is written once all of them are; the checkpoint has no model.safetensors.
    checkpoint = tmp_path / "checkpoint-4"
    for name in ("pytorch_model_fsdp_0", "optimizer_0"):
        (checkpoint / name).mkdir(parents=True)
        for file in (".metadata", "__0_0.distcp", "__1_0.distcp"):
            (checkpoint / name / file).write_bytes(b"written")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    assert is_complete_checkpoint(checkpoint)
    assert resolve_resume(training_args(tmp_path, resume_from_checkpoint="last")) == str(checkpoint)
    assert resolve_resume(training_args(tmp_path, resume_from_checkpoint=str(checkpoint))) == str(checkpoint)
    (checkpoint / part / ".metadata").unlink()  # killed before this part was indexed
    assert not is_complete_checkpoint(checkpoint)
    with pytest.raises(ValueError, match=r"a \.metadata in each pytorch_model_fsdp_\* and optimizer_\* folder"):
        resolve_resume(training_args(tmp_path, resume_from_checkpoint=str(checkpoint)))
    assert resolve_resume(training_args(tmp_path, resume_from_checkpoint="last")) is None  # and set aside
    assert (tmp_path / "checkpoint-4.incomplete").is_dir() and not checkpoint.exists()


def test_the_recorded_precision_is_the_one_the_run_computed_in(tmp_path, monkeypatch):
    data = load_classification_data(DataArguments(max_train_samples=20, max_eval_samples=10))
    model_args = ModelArguments(preset="tiny", config_overrides=TINY)
    model = build_model(model_args, data)
    processor = build_processor(ModelArguments(), model.config, data)
    # `accelerate launch` with a config's `mixed_precision: bf16` (or --mixed_precision bf16) sets
    # ACCELERATE_MIXED_PRECISION, and the run computes in bf16 without --bf16.
    runs = [("no", {}, "float32"), ("bf16", {}, "bf16 mixed precision"), ("no", {"bf16": True}, "bf16 mixed precision")]
    for launched, flags, expected in runs:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launched)
        trainer = make_trainer(model, processor, data, DataArguments(), training_args(tmp_path, **flags))
        details = training_details(trainer, data, model_args, DataArguments(), None)
        assert details["precision"] == expected, (launched, flags)


def test_text_training_end_to_end(tmp_path):
    rows = [{"text": ("good " if i % 2 else "bad ") * (1 + i % 5), "label": i % 2} for i in range(64)]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    output = tmp_path / "out"
    train_run(
        ModelArguments(preset="tiny", config_overrides="graph_fit_steps=50"),
        DataArguments(train_file=str(path), max_length=32),
        training_args(output, max_steps=6),
    )
    classify = pipeline("text-classification", model=str(output))
    assert classify("good good")[0]["label"] in ("0", "1")
    assert NACConfig.from_pretrained(output).tokenizer_type == "byte"


def test_a_run_killed_mid_training_resumes_to_the_planned_step(tmp_path):
    output = tmp_path / "run"
    command = [
        sys.executable, str(ROOT / "scripts" / "train.py"),
        "--preset", "tiny", "--config_overrides", TINY,
        "--max_train_samples", "256", "--max_eval_samples", "32",
        "--per_device_train_batch_size", "16",
        "--max_steps", "300", "--save_strategy", "steps", "--save_steps", "20", "--save_total_limit", "2",
        "--eval_strategy", "no", "--logging_steps", "50", "--disable_tqdm", "true",
        "--output_dir", str(output),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (output / "checkpoint-40" / "trainer_state.json").exists():
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "no checkpoint appeared in time"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (output / "model.safetensors").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(
        [*command, "--resume_from_checkpoint", "last"], env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 300
    resumed_from = re.search(r"Loading model from (\S+checkpoint-(\d+))", resumed.stdout + resumed.stderr)
    assert resumed_from and int(resumed_from.group(2)) >= 40, "the second run did not resume from a checkpoint"
    for checkpoint in output.glob("checkpoint-*"):
        assert checkpoint.name.endswith(".incomplete") or (checkpoint / "trainer_state.json").exists()
    NACForClassification.from_pretrained(output)


@pytest.mark.parametrize(
    "flags",
    [
        {"bf16": True},
        {"gradient_accumulation_steps": 2},
        {"gradient_checkpointing": True},
    ],
)
def test_precision_accumulation_and_checkpointing_flags(tmp_path, flags):
    data_args = DataArguments(max_train_samples=64, max_eval_samples=16)
    model_args = ModelArguments(preset="tiny", config_overrides=TINY)
    metrics = train_run(model_args, data_args, training_args(tmp_path, max_steps=3, **flags))
    assert np.isfinite(metrics["train_loss"]) and np.isfinite(metrics["eval_loss"])
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["global_step"] == 3


def test_a_new_label_set_of_the_same_size_gets_a_new_head(tmp_path):
    old = load_classification_data(DataArguments(keep_labels="0,1,2,3,4", max_train_samples=20, max_eval_samples=10))
    pretrained = build_model(ModelArguments(preset="tiny", config_overrides=TINY), old)
    pretrained.save_pretrained(tmp_path)
    same = build_model(ModelArguments(model_name_or_path=str(tmp_path)), old)
    assert torch.equal(same.classifier.linear.weight, pretrained.classifier.linear.weight)
    new = load_classification_data(DataArguments(keep_labels="5,6,7,8,9", max_train_samples=20, max_eval_samples=10))
    adapted = build_model(ModelArguments(model_name_or_path=str(tmp_path)), new)
    assert adapted.config.id2label == {0: "5", 1: "6", 2: "7", 3: "8", 4: "9"}
    assert not torch.equal(adapted.classifier.linear.weight, pretrained.classifier.linear.weight)
    assert torch.equal(adapted.nac.generator.codes, pretrained.nac.generator.codes)


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32)
    ViTForImageClassification(config).save_pretrained(tmp_path)
    data = load_classification_data(DataArguments(max_train_samples=20, max_eval_samples=10))
    with pytest.raises(ValueError, match="expected a NAC checkpoint"):
        build_model(ModelArguments(model_name_or_path=str(tmp_path)), data)


def test_shape_changing_overrides_of_a_checkpoint_are_refused(tmp_path):
    data = load_classification_data(DataArguments(max_train_samples=20, max_eval_samples=10))
    build_model(ModelArguments(preset="tiny", config_overrides=TINY), data).save_pretrained(tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r"hidden_size: 32 vs 48.*drop those overrides"):
        build_model(ModelArguments(model_name_or_path=str(tmp_path), config_overrides="hidden_size=48"), data)
    # Overrides that leave the weights' shapes alone fine-tune the checkpoint as it is.
    tuned = build_model(ModelArguments(model_name_or_path=str(tmp_path), config_overrides="drop_path_rate=0.2"), data)
    assert tuned.config.drop_path_rate == 0.2


def test_the_trainer_set_up_leaves_the_arguments_as_given(tmp_path):
    data = load_classification_data(DataArguments(max_train_samples=20, max_eval_samples=10))
    model = build_model(ModelArguments(preset="tiny", config_overrides=TINY), data)
    args = training_args(tmp_path, push_to_hub=True, hub_model_id="org/name", hub_token="unused")
    before = args.to_dict()
    trainer = make_trainer(model, build_processor(ModelArguments(), model.config, data), data, DataArguments(), args)
    assert args.to_dict() == before
    assert trainer.args.remove_unused_columns is False and trainer.args.push_to_hub is False


def test_a_streamed_run_trains_evaluates_and_says_it_streamed(tmp_path):
    folder = image_dataset_folder(tmp_path / "images")
    model_args = ModelArguments(preset="tiny", config_overrides=TINY)
    data_args = DataArguments(dataset_name=str(folder), streaming=True, shuffle_buffer_size=16)
    args = training_args(tmp_path / "run", max_steps=4, per_device_train_batch_size=8, dataloader_num_workers=2)
    metrics = train_run(model_args, data_args, args)
    assert json.loads((tmp_path / "run" / "trainer_state.json").read_text())["global_step"] == 4
    assert 0.0 <= metrics["eval_top1_accuracy"] <= 1.0 and "train_samples" not in metrics
    details = json.loads((tmp_path / "run" / "training_details.json").read_text())
    assert details["streamed"] is True and details["train_examples"] is None and details["eval_examples"] == 16
    with pytest.raises(ValueError, match="--streaming needs --max_steps"):
        train_run(model_args, data_args, training_args(tmp_path / "again"))


KEEP_FREED_MEMORY = """
import resource, statistics, torch
from nac_hf.training import keep_freed_memory

def faults_per_step():  # minor page faults of allocating, writing and freeing 40 MiB, as a training step does
    faults = []
    for _ in range(9):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(10 * 2**20).fill_(1.0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return statistics.median(faults[2:])  # after two steps (glibc may grow its heap once more in the third)

default = faults_per_step()
kept = keep_freed_memory()
print(default, kept, faults_per_step())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
def test_keep_freed_memory_stops_faulting_the_same_memory_in_at_every_step():
    done = subprocess.run([sys.executable, "-c", KEEP_FREED_MEMORY], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    default, kept, after = done.stdout.split()
    if kept != "True":
        pytest.skip("not glibc")
    pages = 40 * 2**20 / resource.getpagesize()
    assert float(default) > 0.9 * pages  # by default glibc maps a 40 MiB block afresh every time
    assert float(after) < 0.05 * pages  # kept: the block is reused (in most steps)


def test_cpu_threads_default_to_the_cores_shared_among_the_local_processes(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    try:
        auto = NACTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
        chosen = NACTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", cpu_threads=3)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert set_cpu_threads(auto) == 4 and torch.get_num_threads() == 4
        assert set_cpu_threads(chosen) == 3 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="--cpu_threads must be at least 1"):
        NACTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", cpu_threads=0)


def test_shots_per_label_train_on_k_examples_of_each_label_and_are_recorded(tmp_path):
    data_args = DataArguments(keep_labels="0,1,2", shots_per_label=3)
    model_args = ModelArguments(preset="tiny", config_overrides=TINY)
    train_run(model_args, data_args, training_args(tmp_path, max_steps=2, seed=4))
    details = json.loads((tmp_path / "training_details.json").read_text())
    assert (details["train_examples"], details["shots_per_label"], details["seed"]) == (9, 3, 4)
    full = load_classification_data(DataArguments(keep_labels="0,1,2"), seed=4)
    assert details["eval_examples"] == len(full.dataset["validation"])  # the evaluation split whole


def test_the_script_takes_shots_per_label(monkeypatch):
    model_args, data_args, args = script("train").parse(["--shots_per_label", "5", "--seed", "3", "--output_dir", "x"])
    assert (data_args.shots_per_label, args.seed) == (5, 3)


def test_a_recipe_sets_defaults_that_flags_override():
    parse = script("train").parse
    model_args, data_args, args = parse(["--recipe", "cifar", "--dataset_name", "uoft-cs/cifar100"])
    assert (model_args.preset, args.recipe, args.output_dir) == ("cifar", "cifar", "outputs/nac-cifar100")
    assert (args.learning_rate, args.weight_decay, args.num_train_epochs, args.warmup_epochs) == (5e-4, 0.05, 300, 5)
    assert args.bf16 and args.ema_decay == 0.9999 and args.label_smoothing_factor == 0.1
    assert args.load_best_model_at_end and args.metric_for_best_model == "top1_accuracy"
    assert (data_args.mixup_alpha, data_args.cutmix_alpha, data_args.repeated_augmentations) == (0.8, 1.0, 3)
    assert data_args.augment and data_args.horizontal_flip and data_args.crop == "pad"
    model_args, data_args, args = parse(["--recipe", "paper-tiny-imagenet", "--num_train_epochs", "100",
                                         "--mixup_alpha", "0", "--preset", "small", "--output_dir", "out"])
    assert (args.num_train_epochs, data_args.mixup_alpha, model_args.preset) == (100, 0, "small")
    assert args.output_dir == "out"
    assert args.ema_decay == 0.99996 and data_args.crop == "random-resized" and not args.load_best_model_at_end
    model_args, data_args, args = parse([])  # no recipe: the main job's settings
    assert args.recipe is None and args.ema_decay is None and data_args.mixup_alpha == 0 and args.learning_rate == 2e-3


def test_an_unknown_recipe_is_refused(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        script("train").parse(["--recipe", "imagenet"])
    assert "--recipe takes one of ['cifar', 'paper-tiny-imagenet']" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--recipe takes one of"):
        NACTrainingArguments(output_dir="x", recipe="imagenet")


def digits_trainer(tmp_path, data_args=None, config_overrides=TINY, **overrides):
    data_args = data_args or DataArguments(max_train_samples=96, max_eval_samples=32)
    data = load_classification_data(data_args)
    model = build_model(ModelArguments(preset="tiny", config_overrides=config_overrides), data)
    settings = {**training_arguments_defaults(), "output_dir": str(tmp_path), "report_to": "none", **overrides}
    return make_trainer(model, build_processor(ModelArguments(), model.config, data), data, data_args,
                        NACTrainingArguments(**settings))


def test_warmup_epochs_are_counted_in_optimizer_steps(tmp_path):
    trainer = digits_trainer(tmp_path, warmup_steps=0, warmup_epochs=2, per_device_train_batch_size=16,
                             gradient_accumulation_steps=2)
    assert trainer.args.warmup_steps == 6  # 96 examples: 6 batches of 16, 3 optimizer steps an epoch, × 2
    assert trainer.warmup_epochs == 2
    with pytest.raises(ValueError, match="give --warmup_epochs .* or --warmup_steps .*, not both"):
        NACTrainingArguments(output_dir=str(tmp_path), warmup_epochs=5, warmup_steps=100)


def test_label_smoothing_trains_soft_targets_and_evaluation_keeps_labels(tmp_path):
    data_args = DataArguments(max_train_samples=96, max_eval_samples=32, repeated_augmentations=3, augment=True)
    trainer = digits_trainer(tmp_path, data_args, label_smoothing_factor=0.1, per_device_train_batch_size=12)
    assert trainer.args.label_smoothing_factor == 0.1 and trainer.label_smoother is None  # folded into the targets
    train_batch = next(iter(trainer.get_train_dataloader()))
    assert train_batch["labels"].shape == (12, 10) and train_batch["labels"].max() == pytest.approx(0.91)
    assert next(iter(trainer.get_eval_dataloader()))["labels"].dtype == torch.long
    # Repeated augmentation: each image three times in a row, each time cropped afresh.
    pixels = train_batch["pixel_values"]
    assert torch.equal(train_batch["labels"][0], train_batch["labels"][2]) and not torch.equal(pixels[0], pixels[1])


def test_one_hot_soft_targets_train_the_models_own_loss(tmp_path):
    overrides = TINY + ",graph_regularizer=planted-partition,graph_regularizer_weight=0.5"
    trainer = digits_trainer(tmp_path, config_overrides=overrides)
    batch = next(iter(trainer.get_eval_dataloader()))
    one_hot = {**batch, "labels": torch.nn.functional.one_hot(batch["labels"], 10).float()}
    trainer.model.train()
    torch.manual_seed(0)
    expected = trainer.compute_loss(trainer.model, dict(batch))  # the model's cross-entropy and regulariser
    torch.manual_seed(0)
    soft = trainer.compute_loss(trainer.model, one_hot)
    torch.testing.assert_close(soft, expected)
    torch.manual_seed(0)
    output = trainer.model(pixel_values=batch["pixel_values"])
    assert output.graph_regularizer_loss is not None and output.graph_regularizer_loss > 0  # it was in the loss


def test_what_soft_targets_cannot_train_is_refused(tmp_path):
    with pytest.raises(ValueError, match="exit_training=True trains every read-out"):
        digits_trainer(tmp_path, config_overrides=TINY + ",exit_training=true", label_smoothing_factor=0.1)
    rows = [{"text": f"text {i}", "label": i % 2} for i in range(20)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    data_args = DataArguments(train_file=str(tmp_path / "train.jsonl"), mixup_alpha=0.8, max_length=16)
    with pytest.raises(ValueError, match="mix images; .* holds text data"):
        digits_trainer(tmp_path, data_args, config_overrides="graph_fit_steps=50")
