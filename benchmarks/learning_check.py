"""How well a NAC learns at a small shape, in a plain training loop: a quick check of initialisation and defaults.

    python -m benchmarks.learning_check --preset tiny --seeds 0,1,2 [--config_overrides "seeder_noise=false"] \\
        [--steps 1200] [--output learning.json]

The loop: scikit-learn's 8×8 digits scaled to [-1, 1], a stratified 80/20 split (random_state 0), AdamW (lr 1e-3,
weight decay 0.05) with a one-cycle schedule over --steps steps of batch 64 (reshuffled each epoch), cross-entropy.
The model is the preset at 8×8 input with patch size 2 and one channel, everything else from the preset and the
config defaults (the paper's: seeder noise, one read-in head, drop-path, LayerScale 0.1, code noise). Prints and
writes, per seed, the held-out and training top-1 and the wall time, then their mean and standard deviation.
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from nac_hf import NACConfig, NACForClassification
from nac_hf.training import parse_config_overrides


def digits_split():
    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0 - 0.5) / 0.5
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target.astype(np.int64), test_size=0.2, random_state=0, stratify=digits.target
    )
    return (torch.from_numpy(x_train)[:, None], torch.from_numpy(y_train),
            torch.from_numpy(x_test)[:, None], torch.from_numpy(y_test))


@torch.no_grad()
def top1(model, images, labels) -> float:
    model.eval()
    correct = sum((model(images[i:i + 512]).logits.argmax(-1) == labels[i:i + 512]).sum().item()
                  for i in range(0, len(images), 512))
    return correct / len(images)


def run(preset: str, overrides: dict, seed: int, steps: int, batch_size: int = 64) -> dict:
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = digits_split()
    config = NACConfig.from_preset(preset, **{"image_size": 8, "patch_size": 2, "num_channels": 1, "num_labels": 10,
                                              **overrides})
    model = NACForClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    order, position = torch.randperm(len(x_train), generator=generator), 0
    start = time.perf_counter()
    model.train()
    for _ in range(steps):
        if position + batch_size > len(x_train):
            order, position = torch.randperm(len(x_train), generator=generator), 0
        batch = order[position:position + batch_size]
        position += batch_size
        loss = F.cross_entropy(model(x_train[batch]).logits, y_train[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    seconds = time.perf_counter() - start
    return {"seed": seed, "test_top1": top1(model, x_test, y_test), "train_top1": top1(model, x_train, y_train),
            "train_seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--config_overrides", default="", help='e.g. "seeder_noise=false,num_read_in_heads=4"')
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    overrides = parse_config_overrides(args.config_overrides)
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        runs.append(run(args.preset, overrides, seed, args.steps))
        print(json.dumps(runs[-1]), flush=True)
    tests = [r["test_top1"] for r in runs]
    summary = {
        "preset": args.preset, "config_overrides": args.config_overrides, "steps": args.steps, "runs": runs,
        "test_top1_mean": statistics.mean(tests),
        "test_top1_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
        "train_top1_mean": statistics.mean(r["train_top1"] for r in runs),
    }
    print(f"held-out top-1 {100 * summary['test_top1_mean']:.1f} ± {100 * summary['test_top1_std']:.1f} % over "
          f"{len(runs)} seeds (train {100 * summary['train_top1_mean']:.1f} %)")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(summary, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
