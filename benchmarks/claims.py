"""The paper's claims measured side by side: a NAC against a non-modular baseline of about as many parameters (a
transformers ViT, `benchmarks.few_shot.vit_baseline`), same data, same training, several seeds.
`python -m benchmarks.paper_claims` runs the protocol; this module holds its parts: accuracy on a `datasets` split,
the claim rows and their Markdown table.

Claims (ids of `paper_claims.json`'s rows):

- `low_shot_1`, `low_shot_5`, `low_shot_10`: pre-trained on digits 0-4, adapted to 5-9 from k examples per digit
  (`benchmarks.few_shot`); each model's best adaptation mode, mean ± std over the adaptation seeds. The paper:
  about 10 points ahead of a ViT / Perceiver in the low-shot regime (CIFAR, CUB).
- `ood`: trained on the handwritten digits, evaluated on digits rendered from fonts (`benchmarks.robustness`); mean ±
  std over training seeds. The paper: about 2.5 points ahead out of distribution (Tiny-ImageNet-R).
- `ood_corruptions`: the same models on corrupted test digits, mean over corruptions and severities.
- `module_dropping` (when a `module_dropping.json` is given): the measured speed-up of the forward pass with modules
  dropped at most 3 points below the full model. The paper: 8× at under 3 % loss. No baseline: a ViT has no modules.
"""

from __future__ import annotations

import numpy as np
import torch

from .common import mean_std, top1


RESULTS_FILE = "paper_claims.json"

# What the paper claims, per row id: the claim in words, the paper's figure in words, and the margin (in points of
# top-1 for accuracy rows, a factor for module dropping) at which a row counts as reproduced.
# `low_shot_{k}` rows exist for any k (`claim`).
CLAIMS = {
    "ood": ("out of distribution: digits rendered from fonts", "≈ +2.5 points (Tiny-ImageNet-R)", 2.5),
    "ood_corruptions": ("out of distribution: corrupted digits", "≈ +2.5 points (Tiny-ImageNet-R)", 2.5),
    "module_dropping": ("speed-up with modules dropped at ≤ 3 points loss", "8× at < 3 % loss", 8.0),
}


def claim(claim_id: str) -> tuple[str, str, float]:
    """The claim in words, the paper's figure and the margin of a row id (`low_shot_{k}` for any k)."""
    if claim_id.startswith("low_shot_"):
        k = int(claim_id.removeprefix("low_shot_"))
        text = f"low-shot adaptation, {k} example{'s' if k > 1 else ''} per class"
        return text, "≈ +10 points over ViT / Perceiver", 10.0
    return CLAIMS[claim_id]


@torch.no_grad()
def accuracy_on(model, processor, dataset, batch_size: int = 256) -> float:
    """Top-1 of `model` (evaluation mode) on a split of images and labels (`image`, `label` columns)."""
    model.eval()
    logits = []
    for start in range(0, len(dataset), batch_size):
        images = dataset[start : start + batch_size]["image"]
        logits.append(model(pixel_values=processor(images, return_tensors="pt")["pixel_values"]).logits)
    return top1(torch.cat(logits), torch.tensor(list(dataset["label"])))


def best_mode(results: dict, shots: int) -> tuple[str, float, float]:
    """The adaptation mode of `run_few_shot`'s results with the best mean top-1 at `shots`: (mode, mean, std)."""
    cells = {mode: entry["shots"][str(shots)] for mode, entry in results["modes"].items()}
    mode = max(cells, key=lambda name: cells[name]["mean"])
    return mode, cells[mode]["mean"], cells[mode]["std"]


def accuracy_row(claim_id: str, nac: list[float], baseline: list[float], **extra) -> dict:
    """A claim row from per-seed top-1 fractions of both models: means and sample standard deviations in %."""
    text, paper, _ = claim(claim_id)
    (nac_mean, nac_std), (base_mean, base_std) = mean_std(nac), mean_std(baseline)
    return {
        "id": claim_id, "claim": text, "paper": paper,
        "nac": 100 * nac_mean, "baseline": 100 * base_mean, "nac_std": 100 * nac_std, "baseline_std": 100 * base_std,
        "seeds": len(nac), **extra,
    }


def dropping_row(dropping: dict | list[dict], max_loss_points: float = 3.0) -> dict:
    """The `module_dropping` row from `benchmarks.module_dropping`'s results (one, or several: one per trained
    model): the largest measured speed-up whose top-1 is on average at most `max_loss_points` below the full
    model's, the mean over the results and over the seeds of a random order."""
    text, paper, _ = CLAIMS["module_dropping"]
    grouped: dict[tuple, list[tuple[float, float]]] = {}
    for results in [dropping] if isinstance(dropping, dict) else dropping:
        for row in results["rows"]:
            loss = 100 * (results["baseline"]["accuracy"] - row["accuracy"])
            grouped.setdefault((row["order"], row["keep_input"], row["keep_processor"]), []).append(
                (loss, row["speedup"]))
    best = (1.0, 0.0, "none kept fewer")
    for (order, keep_input, keep_processor), measured in grouped.items():
        loss = float(np.mean([loss for loss, _ in measured]))
        speedup = float(np.mean([speedup for _, speedup in measured]))
        if loss <= max_loss_points and speedup > best[0]:
            best = (speedup, float(np.std([speedup for _, speedup in measured])),
                    f"{order}, inputs ×{keep_input:g}, processors ×{keep_processor:g}")
    return {"id": "module_dropping", "claim": text, "paper": paper, "nac": best[0], "baseline": None,
            "nac_std": best[1], "baseline_std": None, "setting": best[2]}


def verdict(row: dict) -> str:
    """Whether the row reproduces the paper: `reproduced` at the paper's margin, `partly` when the NAC is ahead (or
    faster) but by less, `not reproduced` otherwise."""
    margin = claim(row["id"])[2]
    if row["baseline"] is None:  # a factor, not a comparison
        return "reproduced" if row["nac"] >= margin else ("partly" if row["nac"] > 1 else "not reproduced")
    difference = row["nac"] - row["baseline"]
    return "reproduced" if difference >= margin else ("partly" if difference > 0 else "not reproduced")


def claims_table(rows: list[dict]) -> str:
    """The Markdown table "the paper's claims and this implementation"."""
    lines = ["| claim | paper | NAC | ViT baseline | NAC − ViT | |", "|---|---|---|---|---|---|"]
    for row in rows:
        if row["baseline"] is None:
            nac, base, difference = f"{row['nac']:.1f}× ({row['setting']})", "—", "—"
        else:
            nac = f"{row['nac']:.1f} ± {row['nac_std']:.1f} %"
            base = f"{row['baseline']:.1f} ± {row['baseline_std']:.1f} %"
            difference = f"{row['nac'] - row['baseline']:+.1f}"
            if "nac_mode" in row:
                nac, base = f"{nac} ({row['nac_mode']})", f"{base} ({row['baseline_mode']})"
        lines.append(f"| {row['claim']} | {row['paper']} | {nac} | {base} | {difference} | {verdict(row)} |")
    return "\n".join(lines)


__all__ = ["CLAIMS", "RESULTS_FILE", "accuracy_on", "accuracy_row", "best_mode", "claim", "claims_table",
           "dropping_row", "verdict"]
