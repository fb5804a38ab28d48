"""The exponential moving average of the weights: what it averages, what checkpoints and the final model hold, what
evaluation sees, and that a resumed run goes on exactly."""

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from nac_hf import NACForClassification
from nac_hf.data import DataArguments, load_classification_data
from nac_hf.ema import AVERAGED_WEIGHTS, TRAINING_WEIGHTS, EMACallback
from nac_hf.training import (
    ModelArguments,
    NACTrainingArguments,
    build_model,
    build_processor,
    make_trainer,
    train_model,
    training_arguments_defaults,
)
from nac_test_utils import TINY


DECAY = 0.6


class Recorder(TrainerCallback):
    """The trained parameters at the start and after every optimizer step."""

    def __init__(self):
        self.states = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.states.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.on_train_begin(args, state, control, model)


def arguments(output_dir, **overrides) -> NACTrainingArguments:
    settings = {
        **training_arguments_defaults(), "output_dir": str(output_dir), "max_steps": 4,
        "per_device_train_batch_size": 16, "save_strategy": "steps", "save_steps": 2, "eval_strategy": "no",
        "logging_strategy": "no", "disable_tqdm": True,
        "ema_decay": DECAY, "learning_rate": 1e-2, "do_eval": False, **overrides,
    }
    return NACTrainingArguments(**settings)


def trainer_for(args, seed: int = 0):
    torch.manual_seed(seed)
    data = load_classification_data(DataArguments(max_train_samples=64, max_eval_samples=32))
    model = build_model(ModelArguments(preset="tiny", config_overrides=TINY), data)
    processor = build_processor(ModelArguments(), model.config, data)
    return make_trainer(model, processor, data, DataArguments(), args)


def average(states: list[dict]) -> dict:
    expected = {name: value.clone() for name, value in states[0].items()}
    for state in states[1:]:
        for name, value in state.items():
            expected[name] += (1 - DECAY) * (value - expected[name])
    return expected


def assert_weights(path, expected: dict) -> None:
    saved = load_file(path)
    for name, value in expected.items():
        torch.testing.assert_close(saved[name], value, rtol=1e-6, atol=1e-7, msg=name)


def test_the_saved_model_and_checkpoints_hold_the_average(tmp_path):
    trainer = trainer_for(arguments(tmp_path))
    recorder = Recorder()
    trainer.add_callback(recorder)
    train_model(trainer)
    states = recorder.states
    assert len(states) == 5 and not torch.equal(states[-1]["nac.generator.codes"], states[0]["nac.generator.codes"])
    assert_weights(tmp_path / "model.safetensors", average(states))
    assert_weights(tmp_path / "checkpoint-2" / "model.safetensors", average(states[:3]))
    assert_weights(tmp_path / "checkpoint-2" / TRAINING_WEIGHTS, states[2])  # what training goes on from
    assert_weights(tmp_path / "checkpoint-4" / TRAINING_WEIGHTS, states[4])
    NACForClassification.from_pretrained(tmp_path / "checkpoint-2")  # a checkpoint is a model that loads


def test_evaluation_while_training_sees_the_averaged_weights(tmp_path):
    trainer = trainer_for(arguments(tmp_path, eval_strategy="steps", eval_steps=2, do_eval=True))
    train_model(trainer)
    logged = [entry["eval_loss"] for entry in trainer.state.log_history if "eval_loss" in entry]
    # The checkpoint of step 2 holds the averaged weights; evaluated on their own, they give the loss logged then.
    args = arguments(tmp_path / "plain", ema_decay=None, do_eval=True)
    plain = trainer_for(args)
    plain.model.load_state_dict(NACForClassification.from_pretrained(tmp_path / "checkpoint-2").state_dict())
    assert plain.evaluate()["eval_loss"] == pytest.approx(logged[0], rel=1e-5)
    assert trainer.evaluate()["eval_loss"] == pytest.approx(logged[-1], rel=1e-5)  # after training: the average


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    whole = tmp_path / "whole"
    train_model(trainer_for(arguments(whole)))
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-2", resumed / "checkpoint-2")
    trainer = trainer_for(arguments(resumed), seed=1)  # other initial weights: all must come from the checkpoint
    train_model(trainer, resume_from_checkpoint=str(resumed / "checkpoint-2"))
    assert json.loads((resumed / "trainer_state.json").read_text())["global_step"] == 4
    assert_weights(resumed / "model.safetensors", load_file(whole / "model.safetensors"))
    assert_weights(resumed / "checkpoint-4" / TRAINING_WEIGHTS, load_file(whole / "checkpoint-4" / TRAINING_WEIGHTS))


def test_bad_decays_are_refused(tmp_path):
    for decay in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="--ema_decay must lie in"):
            EMACallback(decay)
        with pytest.raises(ValueError, match="--ema_decay must lie in"):
            arguments(tmp_path, ema_decay=decay)


def test_weights_of_another_model_are_refused_before_anything_is_written(tmp_path):
    from nac_hf.ema import replace_weights

    trainer = trainer_for(arguments(tmp_path))
    trainer.model.save_pretrained(tmp_path / "saved")
    before = (tmp_path / "saved" / "model.safetensors").read_bytes()
    with pytest.raises(KeyError, match=r"holds no weights named \['base_model.model.classifier.weight'\]"):
        replace_weights(tmp_path / "saved", {"base_model.model.classifier.weight": torch.zeros(1)})
    assert (tmp_path / "saved" / "model.safetensors").read_bytes() == before


def test_the_kept_best_sharded_checkpoint_gets_its_average(tmp_path):
    # A sharded FSDP checkpoint's model part holds the training weights, which `load_best_model_at_end` loads; its
    # average lies beside it, and that is the model kept.
    model = torch.nn.Linear(3, 2)
    best = tmp_path / "checkpoint-2"
    (best / "pytorch_model_fsdp_0").mkdir(parents=True)
    average = {"weight": torch.full((2, 3), 0.25), "bias": torch.full((2,), -0.5)}
    save_file(average, best / AVERAGED_WEIGHTS)
    ema = EMACallback(DECAY)
    args = SimpleNamespace(load_best_model_at_end=True)
    ema.on_train_begin(args, None, None, model=model)
    ema.on_train_end(args, SimpleNamespace(best_model_checkpoint=str(best)), None, model=model)
    for name, value in model.named_parameters():
        assert torch.equal(value.detach(), average[name]), name
