"""Run under `accelerate launch --config_file accelerate_configs/fsdp.yaml --num_processes 2 --mixed_precision no`
with train.py's flags and `--use_cpu true`: scripts/train.py's own run (`main`), training a tiny NAC with FSDP2 on CPUs
(gloo). A probe attached where the script makes its `Trainer` writes, at the end of training, per rank how the model
was sharded and how many steps this run took (`rank{r}.json`) and, on rank 0, the sharded model's logits of a fixed
evaluation batch (`fsdp_logits.pt`).

What CPU testing needs: Accelerate runs FSDP on GPUs only, and on CPUs quietly trains with DDP instead.
`allow_fsdp_on_cpus` lets it use FSDP there too, so that the sharding, the sharded checkpoints and the gathering of the
final model are tested without a GPU. Apart from that and the probe, the run is scripts/train.py's as a user launches
it."""

import json
from pathlib import Path

import accelerate.state
import torch
from accelerate.utils import DistributedType
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from transformers import TrainerCallback

from nac_test_utils import script


def allow_fsdp_on_cpus() -> None:
    """Have Accelerate shard with FSDP in a multi-process CPU run given an FSDP plugin (by `accelerate launch
    --config_file fsdp.yaml`), where it would otherwise leave the plugin unused and train with DDP."""
    original = accelerate.state.AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            accelerate.state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    accelerate.state.AcceleratorState.__init__ = init


class Probe(TrainerCallback):
    """Counts the optimizer steps this process runs (a resumed run starts counting at its checkpoint) and, when
    training ends (after any averaged weights are put in the model, before it is saved), records the sharding and
    the sharded model's logits."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.steps_run = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps_run += 1

    def on_train_end(self, args, state, control, model=None, **kwargs):
        logits = sharded_logits(self.trainer)
        record = {"global_step": state.global_step, "steps_run": self.steps_run, "fsdp": self.trainer.is_fsdp_enabled,
                  **sharding(model)}
        output = Path(args.output_dir)
        output.mkdir(parents=True, exist_ok=True)
        (output / f"rank{args.process_index}.json").write_text(json.dumps(record))
        if state.is_world_process_zero:
            torch.save(logits, output / "fsdp_logits.pt")


def sharding(model) -> dict:
    """What FSDP made of the model on this rank: the classes it shards as units, the parameters that are DTensors,
    and this rank's share of their elements, with every unit's parameters sharded as between steps (the root's stay
    gathered after a forward pass without a backward one)."""
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    parameters = list(model.parameters())
    sharded = [p for p in parameters if isinstance(p, DTensor)]
    return {
        "units": sorted({type(m).__name__.removeprefix("FSDP") for m in model.modules() if isinstance(m, FSDPModule)}),
        "sharded_parameters": len(sharded),
        "parameters": len(parameters),
        "local_fraction": sum(p.to_local().numel() for p in sharded) / max(1, sum(p.numel() for p in sharded)),
    }


@torch.no_grad()
def sharded_logits(trainer, count: int = 16) -> dict:
    """The logits of the first `count` evaluation examples, computed by the sharded model on every rank."""
    batch = trainer.data_collator([trainer.eval_dataset[i] for i in range(count)])
    model = trainer.model.eval()
    logits = model(pixel_values=batch["pixel_values"].to(trainer.args.device)).logits
    return {"pixel_values": batch["pixel_values"].cpu(), "logits": logits.float().cpu()}


def main() -> None:
    allow_fsdp_on_cpus()
    train = script("train")
    make_trainer = train.make_trainer

    def probed(*args, **kwargs):
        trainer = make_trainer(*args, **kwargs)
        trainer.add_callback(Probe(trainer))
        return trainer

    train.make_trainer = probed
    train.main()


if __name__ == "__main__":
    main()
