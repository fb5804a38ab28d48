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

Under FSDP the average is sharded as the parameters are. A checkpoint is saved as FSDP is configured to: with whole
weights (`FULL_STATE_DICT`) as above; sharded (`SHARDED_STATE_DICT`), its model part holds the training weights and
the average is gathered into `averaged_weights.safetensors` beside it, which a resumed run and
`load_best_model_at_end` read.

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
from transformers.trainer import FSDP_MODEL_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


if torch.distributed.is_available():
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor, distribute_tensor
else:  # a torch built without distributed training: nothing is ever sharded
    FSDPModule = DTensor = ()


logger = logging.getLogger(__name__)

# What a checkpoint keeps of the weights training continues from (its model.safetensors holds the average).
TRAINING_WEIGHTS = "training_weights.safetensors"
# Where a sharded FSDP checkpoint (no model.safetensors; its model part holds the training weights) keeps the average.
AVERAGED_WEIGHTS = "averaged_weights.safetensors"


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
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        # Under FSDP every process gathers the shards together; one process writes, as Trainer's own save.
        average = whole_tensors(self.average, keep=args.should_save)
        if sharded_parts(checkpoint):  # its model part holds the training weights
            if args.should_save:
                save_file(average, checkpoint / AVERAGED_WEIGHTS)
            return
        trained = whole_tensors(trained_parameters(model), keep=args.should_save)
        if args.should_save:
            save_file(trained, checkpoint / TRAINING_WEIGHTS)
            replace_weights(checkpoint, average)

    @torch.no_grad()
    def on_train_end(self, args, state, control, model=None, **kwargs):
        parameters = trained_parameters(model)
        average = self.average
        if args.load_best_model_at_end and state.best_model_checkpoint:
            # The best checkpoint's average is kept: Trainer loaded it from its model.safetensors, or (a sharded
            # checkpoint, whose model part holds training weights) it lies beside it.
            path = Path(state.best_model_checkpoint) / AVERAGED_WEIGHTS
            saved = load_file(path) if path.is_file() else {}
            average = {name: like(parameters[name], value) for name, value in saved.items()}
        for name, value in average.items():
            parameters[name].copy_(value)
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
            parameters = trained_parameters(model)  # sharded again after the block's forward passes
            with torch.no_grad():
                for name, value in kept.items():
                    parameters[name].copy_(value)

    @torch.no_grad()
    def _restore(self, checkpoint: str, parameters: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
        """The average saved in `checkpoint`, with the weights training goes on from in the model: a checkpoint's
        model weights hold the average and its training weights lie beside them; a sharded FSDP checkpoint's model
        part holds the training weights (Trainer loaded them) and the average lies beside it. A checkpoint saved
        without EMA starts the average from the weights it holds."""
        folder = Path(checkpoint)
        if (folder / AVERAGED_WEIGHTS).is_file():
            saved = load_file(folder / AVERAGED_WEIGHTS)
        elif sharded_parts(folder):
            logger.warning("%s has no %s: the average starts from its weights", checkpoint, AVERAGED_WEIGHTS)
            return {name: parameter.detach().float().clone() for name, parameter in parameters.items()}
        else:
            saved = read_weights(folder)
            path = folder / TRAINING_WEIGHTS
            if not path.is_file():
                logger.warning("%s has no %s: the weights it holds start both training and the average",
                               checkpoint, TRAINING_WEIGHTS)
            for name, value in (load_file(path) if path.is_file() else {}).items():
                parameters[name].copy_(like(parameters[name], value))
        return {name: like(p, saved[name].to(torch.float32)) for name, p in parameters.items()}


def trained_parameters(model) -> dict[str, torch.nn.Parameter]:
    """The parameters of `model` that train, by name. Under FSDP2 they are the shards (DTensors) the average is kept
    as: every unit is resharded first (a forward pass without a backward one leaves the root unit gathered)."""
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    return {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}


def whole_tensors(tensors: dict[str, torch.Tensor], keep: bool = True) -> dict[str, torch.Tensor]:
    """`tensors` whole, contiguous and on the CPU, as safetensors writes them. A sharded one (a DTensor, under FSDP)
    is gathered from every process, so all of them call this together; those that will not write pass
    `keep=False` and get nothing back."""
    whole = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach()
        if isinstance(tensor, DTensor):
            tensor = tensor.full_tensor()
        if keep:
            whole[name] = tensor.contiguous().cpu()
    return whole


def like(parameter: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """A whole tensor `value` on `parameter`'s device, and under FSDP cut into the same shards (each process reads
    the same file, so nothing is sent)."""
    if isinstance(parameter, DTensor):
        return distribute_tensor(value.to(parameter.device), parameter.device_mesh, parameter.placements,
                                 src_data_rank=None)
    return value.to(parameter.device)


def sharded_parts(folder: str | os.PathLike, *more: str) -> list[Path]:
    """The parts of a sharded FSDP checkpoint in `folder`, each a folder of per-process shards: the model's
    (`pytorch_model_fsdp_0/`, ...), and those whose names start with one of `more` (e.g. `optimizer_`). None for a
    checkpoint of whole weights (also under FSDP with `FULL_STATE_DICT`, whose parts are files)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    prefixes = (f"{FSDP_MODEL_NAME}_", *more)
    return sorted(part for part in folder.iterdir() if part.is_dir() and part.name.startswith(prefixes))


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


__all__ = [
    "AVERAGED_WEIGHTS", "EMACallback", "TRAINING_WEIGHTS", "read_weights", "replace_weights", "trained_parameters",
    "sharded_parts", "whole_tensors",
]
