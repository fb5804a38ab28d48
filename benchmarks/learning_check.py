"""python -m benchmarks.learning_check --preset tiny --seeds 0,1,2 [--config_overrides "seeder_noise=false"]
    [--steps 1200] [--output learning.json]

How well a NAC learns at a small shape, in a plain training loop: a quick check of initialisation and defaults.

The loop: scikit-learn's 8×8 digits (`nac_hf.data.digits_dataset`: its stratified 80/20 split) read by a
`NACImageProcessor` at 8×8 (pixels scaled to [-1, 1]), AdamW (lr 1e-3, weight decay 0.05) with a one-cycle schedule
over --steps steps of batch 64 (reshuffled each epoch), cross-entropy. The model is the preset at 8×8 input with
patch size 2 and one channel, everything else from the preset and the config defaults (the paper's: seeder noise,
one read-in head, drop-path, LayerScale 0.1, code noise). Prints and writes, per seed, the held-out and training
top-1 and the wall time, then their mean and standard deviation.
"""

import json
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from nac_hf import NACConfig, NACForClassification, NACImageProcessor
from nac_hf.data import digits_dataset
from nac_hf.evaluation import EvaluationSet, predict
from nac_hf.training import parse_config_overrides

from .common import argument_parser, mean_std, top1, write_json


@dataclass
class LearningArguments:
    preset: str = field(default="tiny", metadata={"help": "The NACConfig preset, trained at 8×8, patch 2, one channel."})
    config_overrides: str = field(
        default="", metadata={"help": 'NAC config fields to change, e.g. "seeder_noise=false,num_read_in_heads=4".'}
    )
    seeds: str = field(default="0,1,2", metadata={"help": "One run per seed, comma-separated."})
    steps: int = field(default=1200, metadata={"help": "Optimizer steps of each run."})
    output: str | None = field(default=None, metadata={"help": "Write the runs and their summary as JSON here."})


def digits_splits(batch_size: int = 512) -> tuple[EvaluationSet, EvaluationSet]:
    """The training and the held-out digits as pixel values `(N, 1, 8, 8)` in [-1, 1], with their labels."""
    processor = NACImageProcessor(size={"height": 8, "width": 8}, num_channels=1)

    def read(split) -> EvaluationSet:
        pixels = processor(list(split["image"]), return_tensors="pt")["pixel_values"]  # (N, 1, 8, 8)
        batches = [{"pixel_values": pixels[i : i + batch_size]} for i in range(0, len(pixels), batch_size)]
        return EvaluationSet(batches=batches, labels=torch.tensor(list(split["label"])), source="scikit-learn digits")

    digits = digits_dataset()
    return read(digits["train"]), read(digits["test"])


def run(preset: str, overrides: dict, seed: int, steps: int, batch_size: int = 64) -> dict:
    torch.manual_seed(seed)
    train, test = digits_splits()
    pixels, labels = torch.cat([batch["pixel_values"] for batch in train.batches]), train.labels
    config = NACConfig.from_preset(preset, **{"image_size": 8, "patch_size": 2, "num_channels": 1, "num_labels": 10,
                                              **overrides})
    model = NACForClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    order, position = torch.randperm(len(pixels), generator=generator), 0
    start = time.perf_counter()
    model.train()
    for _ in range(steps):
        if position + batch_size > len(pixels):
            order, position = torch.randperm(len(pixels), generator=generator), 0
        batch = order[position : position + batch_size]
        position += batch_size
        loss = F.cross_entropy(model(pixels[batch]).logits, labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    seconds = time.perf_counter() - start
    return {"seed": seed, "test_top1": top1(predict(model, test), test.labels),
            "train_top1": top1(predict(model, train), train.labels), "train_seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    (args,) = argument_parser(__doc__, LearningArguments).parse_args_into_dataclasses(argv)
    overrides = parse_config_overrides(args.config_overrides)
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        runs.append(run(args.preset, overrides, seed, args.steps))
        print(json.dumps(runs[-1]), flush=True)
    test_mean, test_std = mean_std([r["test_top1"] for r in runs])
    summary = {
        "preset": args.preset, "config_overrides": args.config_overrides, "steps": args.steps, "runs": runs,
        "test_top1_mean": test_mean, "test_top1_std": test_std,
        "train_top1_mean": mean_std([r["train_top1"] for r in runs])[0],
    }
    print(f"held-out top-1 {100 * test_mean:.1f} ± {100 * test_std:.1f} % over {len(runs)} seeds "
          f"(train {100 * summary['train_top1_mean']:.1f} %)")
    if args.output:
        write_json(args.output, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
