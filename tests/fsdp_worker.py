"""Run under `accelerate launch --config_file accelerate_configs/fsdp.yaml --num_processes 2 --mixed_precision no`
with train.py's flags and `--use_cpu true`: train a tiny NAC through `Trainer` with FSDP2 on CPUs (gloo), in
scripts/train.py's steps, then gather the whole model into `model.safetensors`. Writes per rank how the model was
sharded and how many steps this run took (`rank{r}.json`) and, on rank 0, the sharded model's logits of a fixed
evaluation batch (`fsdp_logits.pt`).

Accelerate runs FSDP on GPUs only: on CPUs it quietly trains with DDP instead. `allow_fsdp_on_cpus` lets it use FSDP
there too, so that the sharding, the sharded checkpoints and the gathering are tested without a GPU. Where the steps
differ from scripts/train.py's, FSDP needs what nac_hf does not do: a 1-element `log_bandwidth` instead of a scalar
(`scalars_as_vectors`), the shards gathered before the final save (`save_full_model`), and a sharded checkpoint
passed to `Trainer` as it is (`nac_hf.training.resolve_resume` takes only checkpoints with a `model.safetensors`)."""

import json
import sys
from pathlib import Path

import accelerate.state
import torch
from accelerate.utils import DistributedType
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from transformers import HfArgumentParser, TrainerCallback, set_seed

from nac_hf.training import (
    DataArguments,
    ModelArguments,
    NACTrainingArguments,
    build_model,
    build_processor,
    end_distributed,
    evaluate_model,
    load_run_data,
    make_trainer,
    record_run,
    training_arguments_defaults,
)


class StepsRun(TrainerCallback):
    """Counts the optimizer steps this process runs (a resumed run starts counting at its checkpoint)."""

    def __init__(self):
        self.count = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.count += 1


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


def scalars_as_vectors(model) -> list[str]:
    """Make each 0-dim parameter (the kernels' `log_bandwidth`) a 1-element vector, which `fully_shard` can shard
    ("fully_shard doesn't support scalar parameters"); the names of those changed. The forward is unchanged: they
    only ever broadcast."""
    names = []
    for module_name, module in model.named_modules():
        for name, parameter in list(module.named_parameters(recurse=False)):
            if parameter.dim() == 0:
                setattr(module, name, torch.nn.Parameter(parameter.detach().reshape(1)))
                names.append(f"{module_name}.{name}".lstrip("."))
    return names


def save_full_model(trainer, scalars: list[str]) -> None:
    """Write the whole model as `from_pretrained` reads it: under FSDP with sharded checkpoints, `save_model` writes
    no weights, so the shards are gathered into one state dict first (on every rank: it is a collective), with the
    parameters `scalars_as_vectors` changed saved as the scalars the model declares."""
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    gather = trainer.accelerator.get_state_dict

    def get_state_dict(model, *args, **kwargs):
        state_dict = gather(model, *args, **kwargs)  # empty on the ranks that do not save
        return {name: t.reshape(()) if name in scalars else t for name, t in state_dict.items()}

    trainer.accelerator.get_state_dict = get_state_dict
    trainer.save_model()


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


def main() -> int:
    allow_fsdp_on_cpus()
    parser = HfArgumentParser((ModelArguments, DataArguments, NACTrainingArguments))
    parser.set_defaults(**training_arguments_defaults())
    model_args, data_args, args = parser.parse_args_into_dataclasses()
    set_seed(args.seed)
    data = load_run_data(data_args, args)
    model = build_model(model_args, data)
    scalars = scalars_as_vectors(model)
    trainer = make_trainer(model, build_processor(model_args, model.config, data), data, data_args, args)
    steps_run = StepsRun()
    trainer.add_callback(steps_run)
    # A checkpoint folder given as it is: Trainer reads FSDP's sharded checkpoints itself.
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    save_full_model(trainer, scalars)
    metrics = {**result.metrics, **evaluate_model(trainer)}
    logits = sharded_logits(trainer)
    record = {"global_step": trainer.state.global_step, "steps_run": steps_run.count, "fsdp": trainer.is_fsdp_enabled,
              **sharding(trainer.model)}
    output = Path(args.output_dir)
    (output / f"rank{args.process_index}.json").write_text(json.dumps(record))
    if trainer.is_world_process_zero():
        torch.save(logits, output / "fsdp_logits.pt")
        record_run(trainer, data, model_args, data_args, metrics)
    end_distributed()  # as scripts/train.py does
    return 0


if __name__ == "__main__":
    sys.exit(main())
