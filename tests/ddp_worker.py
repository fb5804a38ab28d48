"""Run under `torchrun --nproc_per_node 2`: train a tiny NAC with DDP and record, per rank, which training examples
its dataloader serves in the first epoch and a checksum of its final weights."""

import hashlib
import json
import sys
import weakref

from transformers import HfArgumentParser, TrainingArguments, set_seed

from nac_hf.training import (
    DataArguments,
    ModelArguments,
    build_model,
    build_processor,
    end_distributed,
    load_run_data,
    make_trainer,
    training_arguments_defaults,
)


def pixel_digest(pixel_values) -> str:
    return hashlib.sha256(pixel_values.float().numpy().round(4).tobytes()).hexdigest()


def main() -> None:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    parser.set_defaults(**training_arguments_defaults())
    model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    set_seed(training_args.seed)
    data = load_run_data(data_args, training_args)
    model = build_model(model_args, data)
    trainer = make_trainer(model, build_processor(model_args, model.config, data), data, data_args, training_args)
    # The examples this rank is served in an epoch: Accelerate shards the batches by rank. A stream has no indices:
    # its examples are named by a digest of their pixels.
    if data_args.streaming:
        indices = [pixel_digest(image) for batch in trainer.get_train_dataloader() for image in batch["pixel_values"]]
    else:
        indices = [int(i) for batch in trainer.get_train_dataloader().batch_sampler for i in batch]
    trainer.train()
    digest = hashlib.sha256()
    for name, tensor in sorted(trainer.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    record = {
        "rank": training_args.process_index,
        "world_size": training_args.world_size,
        "indices": indices,
        "global_step": trainer.state.global_step,
        "weights": digest.hexdigest(),
        "parallel_mode": str(training_args.parallel_mode),
        "find_unused_parameters": training_args.ddp_find_unused_parameters,
        "wrapper": type(trainer.model_wrapped).__name__,
    }
    wrapper = weakref.ref(trainer.model_wrapped)
    end_distributed(trainer)  # the trainer is still in use here; scripts/train.py calls it once its trainer is gone
    record["wrapper_released"] = wrapper() is None
    with open(f"{training_args.output_dir}/rank{record['rank']}.json", "w") as handle:
        json.dump(record, handle)


if __name__ == "__main__":
    sys.exit(main())
