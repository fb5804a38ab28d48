"""An exponential moving average (EMA) of a model's weights while `Trainer` trains it, as a `TrainerCallback`.

After every optimizer step each trained parameter's average moves towards it: `average += (1 − decay) (parameter −
average)`. The averaged weights are the model a run keeps:

- each checkpoint's `model.safetensors` holds them (so `from_pretrained(checkpoint)`, `load_best_model_at_end` and
  anything that publishes a checkpoint take the averaged model), and the weights training continues from are kept
  beside them in `training_weights.safetensors`, so that a resumed run goes on exactly (`resume_from`);
- `nac_hf.training.NACTrainer` evaluates with them, so that per-epoch evaluation and model selection judge the model
  that is saved;
- at the end of training they are copied into the model (unless `load_best_model_at_end` has just loaded the best
  checkpoint, whose averaged weights stay), so that `trainer.save_model()` saves them.

The average needs many steps: its half-life is ln 2 / (1 − decay) steps, about 17,300 at DeiT's 0.99996 and 6,900
at 0.9999. For a short run choose a smaller decay.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


logger = logging.getLogger(__name__)

# What a checkpoint keeps of the weights training continues from (its model.safetensors holds the average).
TRAINING_WEIGHTS = "training_weights.safetensors"


class EMACallback(TrainerCallback):
    """Keeps the exponential moving average of the trained parameters (float32, on their device) and makes it the
    saved model; see the module's docstring. Set `resume_from` to the checkpoint a run resumes from before
    `trainer.train(...)` (`nac_hf.training.train_model` does) so that the average and the training weights are read
    back from it."""

    def __init__(self, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema_decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.average: dict[str, torch.Tensor] | None = None
        self.resume_from: str | None = None
        self.finished = False

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        parameters = trained_parameters(model)
        self.finished = False
        if self.resume_from is not None:
            self.average = self._restore(self.resume_from, parameters)
        else:
            self.average = {name: parameter.detach().float().clone() for name, parameter in parameters.items()}

    @torch.no_grad()
    def on_step_end(self, args, state, control, model=None, **kwargs):
        parameters = trained_parameters(model)
        names = list(self.average)
        averages = [self.average[name] for name in names]
        torch._foreach_lerp_(averages, [parameters[name].detach().float() for name in names], 1.0 - self.decay)

    def on_save(self, args, state, control, model=None, **kwargs):
        if not args.should_save:  # one process writes, as Trainer's own save
            return
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        parameters = trained_parameters(model)
        trained = {name: parameter.detach().contiguous().cpu() for name, parameter in parameters.items()}
        save_file(trained, checkpoint / TRAINING_WEIGHTS)
        replace_weights(checkpoint, self.average)

    @torch.no_grad()
    def on_train_end(self, args, state, control, model=None, **kwargs):
        if not (args.load_best_model_at_end and state.best_model_checkpoint):
            parameters = trained_parameters(model)
            for name, average in self.average.items():
                parameters[name].copy_(average)
        self.finished = True

    @contextlib.contextmanager
    def averaged_weights(self, model):
        """Run the block with the averaged weights in `model`, then put its own back. Does nothing before training
        began or after it ended (the model then holds the weights that are kept)."""
        if self.average is None or self.finished:
            yield
            return
        parameters = trained_parameters(model)
        kept = {name: parameters[name].detach().clone() for name in self.average}
        with torch.no_grad():
            for name, average in self.average.items():
                parameters[name].copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in kept.items():
                    parameters[name].copy_(value)

    @torch.no_grad()
    def _restore(self, checkpoint: str, parameters: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
        """The average saved in `checkpoint` (its model weights), with the training weights put back into the
        model; a checkpoint saved without EMA starts the average from its weights."""
        saved = read_weights(checkpoint)
        average = {name: saved[name].to(p.device, torch.float32) for name, p in parameters.items()}
        path = Path(checkpoint) / TRAINING_WEIGHTS
        if path.is_file():
            for name, value in load_file(path).items():
                parameters[name].copy_(value)
        else:
            logger.warning("%s has no %s: the weights it holds start both training and the average", checkpoint,
                           TRAINING_WEIGHTS)
        return average


def trained_parameters(model) -> dict[str, torch.nn.Parameter]:
    """The parameters of `model` that train, by name."""
    return {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}


def weight_files(folder: str | os.PathLike) -> list[str]:
    """The safetensors files of a saved model (one, or the shards of a large one)."""
    files = sorted(glob.glob(os.path.join(folder, "model*.safetensors")))
    if not files:
        raise FileNotFoundError(f"{folder} holds no model*.safetensors")
    return files


def read_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a saved model's safetensors files, by name."""
    weights = {}
    for path in weight_files(folder):
        weights.update(load_file(path))
    return weights


def replace_weights(folder: str | os.PathLike, values: dict[str, torch.Tensor]) -> None:
    """Write `values` over the tensors of the same names in a saved model's safetensors files, keeping every other
    tensor, their dtypes and the files' metadata; each file is replaced whole (written beside, then renamed). A name
    the files lack raises a `KeyError` before anything is written."""
    files = {}
    for path in weight_files(folder):
        with safe_open(path, framework="pt") as weights:
            files[path] = weights.metadata(), {name: weights.get_tensor(name) for name in weights.keys()}
    missing = values.keys() - {name for _, tensors in files.values() for name in tensors}
    if missing:
        raise KeyError(f"{folder} holds no weights named {sorted(missing)[:5]}: it was saved from another model")
    for path, (metadata, tensors) in files.items():
        for name in tensors.keys() & values.keys():
            tensors[name] = values[name].to(device="cpu", dtype=tensors[name].dtype).contiguous()
        save_file(tensors, path + ".partial", metadata=metadata)
        os.replace(path + ".partial", path)


__all__ = ["EMACallback", "TRAINING_WEIGHTS", "read_weights", "replace_weights", "trained_parameters"]
