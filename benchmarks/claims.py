"""The paper's claims as rows of `docs/results/claims.json`, each measured under the fair protocol
(`benchmarks.protocol`) by `python -m benchmarks.paper_claims`, and their Markdown table.

Row ids and what the paper claims (the margin a row's 95 % interval must clear for the claim to hold):

- `low_shot_1`, `low_shot_5`, `low_shot_10`: adaptation to classes never seen from k examples each: about +10
  points over a ViT / Perceiver (CIFAR, CUB);
- `ood_fonts`, `ood_corruptions`, `ood_mnist`, `ood_mnist_reverse`: out of distribution (fonts never trained on,
  corrupted test images, scikit-learn's digits → MNIST and back): about +2.5 points (Tiny-ImageNet-R);
- `dropping`: modules dropped at a point chosen on validation, every model measured at least 8× faster at less than
  3 points of loss (the paper: 8× at < 3 %). Its baseline is the same model with all its modules;
- `early_exit`: read out before the last layer at a threshold chosen on validation, at less than 3 points of loss,
  faster than the full model. The paper makes no early-exit claim; the row says what it costs and saves.
"""

from __future__ import annotations

import torch

from .common import top1


RESULTS_FILE = "claims.json"

# Row id: (the claim in words, the paper's figure, the margin the interval's lower end must reach, in points).
CLAIMS = {
    "ood_fonts": ("out of distribution: font families never trained on", "≈ +2.5 points (Tiny-ImageNet-R)", 2.5),
    "ood_corruptions": ("out of distribution: corrupted test images", "≈ +2.5 points (Tiny-ImageNet-R)", 2.5),
    "ood_mnist": ("out of distribution: trained on scikit-learn's digits, tested on MNIST",
                  "≈ +2.5 points (Tiny-ImageNet-R)", 2.5),
    "ood_mnist_reverse": ("out of distribution: trained on MNIST, tested on scikit-learn's digits",
                          "≈ +2.5 points (Tiny-ImageNet-R)", 2.5),
    "dropping": ("modules dropped: ≥ 8× faster at < 3 points loss, every model", "8× at < 3 % loss", -3.0),
    "early_exit": ("early exit at < 3 points loss, faster than the full model", "no claim", -3.0),
}
SPEEDUP_CLAIM = 8.0  # the dropping row's speed-up, measured per model
# A comparison says nothing about the NAC where the baseline did not learn its pre-training task: below this share of
# the NAC's validation top-1 there, a row is "baseline did not learn" whatever its interval.
LEARNED_SHARE = 0.5


def claim(claim_id: str) -> tuple[str, str, float]:
    """The claim in words, the paper's figure and the margin of a row id (`low_shot_{k}` for any k)."""
    if claim_id.startswith("low_shot_"):
        k = int(claim_id.removeprefix("low_shot_"))
        return f"low-shot adaptation, {k} example{'s' if k > 1 else ''} per class", "≈ +10 points", 10.0
    if claim_id not in CLAIMS:
        raise ValueError(f"unknown claim {claim_id!r}; known: low_shot_K, {', '.join(CLAIMS)}")
    return CLAIMS[claim_id]


# Pixel values of the sets evaluated, by the set's fingerprint and the processor's settings: every model reading
# images alike reuses them instead of running the processor over the set again.
_PIXEL_VALUES: dict[tuple[str, str], torch.Tensor] = {}


def pixel_values(processor, dataset, batch_size: int = 512) -> torch.Tensor:
    """The `image` column of `dataset` through `processor`, once per set and processor settings."""
    key = (dataset._fingerprint, processor.to_json_string())
    if key not in _PIXEL_VALUES:
        _PIXEL_VALUES[key] = torch.cat([
            processor(dataset[start : start + batch_size]["image"], return_tensors="pt")["pixel_values"]
            for start in range(0, len(dataset), batch_size)
        ])
    return _PIXEL_VALUES[key]


@torch.no_grad()
def accuracy_on(model, processor, dataset, batch_size: int = 512) -> float:
    """Top-1 of `model` (evaluation mode) on a split of images and labels (`image`, `label` columns)."""
    model.eval()
    pixels = pixel_values(processor, dataset)
    logits = [model(pixel_values=pixels[start : start + batch_size]).logits for start in range(0, len(pixels), batch_size)]
    return top1(torch.cat(logits), torch.tensor(list(dataset["label"])))


def row(claim_id: str, benchmark: str, baseline_name: str, paired: dict, *, speedups: list[float] | None = None,
        learned: tuple[float, float] | None = None, **extra) -> dict:
    """A claims.json row from `benchmarks.protocol.paired_interval`'s result (points), with its verdict: "holds"
    where the interval's lower end reaches the claim's margin (and, for dropping, every model's measured speed-up
    reaches 8×; for early exit, the mean speed-up exceeds 1), "not reproduced" otherwise; "baseline did not learn"
    where `learned` (the NAC's and the baseline's mean validation top-1 on the pre-training task) shows the baseline
    below `LEARNED_SHARE` of the NAC."""
    text, paper, margin = claim(claim_id)
    holds = paired["ci_low"] >= margin
    if claim_id == "dropping":
        holds = holds and min(speedups) >= SPEEDUP_CLAIM
    elif claim_id == "early_exit":
        holds = holds and sum(speedups) / len(speedups) > 1.0
    verdict = "holds" if holds else "not reproduced"
    if learned is not None and learned[1] < LEARNED_SHARE * learned[0]:
        verdict = "baseline did not learn"
    result = {"id": claim_id, "benchmark": benchmark, "baseline_name": baseline_name, "claim": text, "paper": paper,
              "margin": margin, **paired, "verdict": verdict, **extra}
    if learned is not None:
        result["pretrain_validation"] = {"nac": learned[0], "baseline": learned[1]}
    if speedups is not None:
        result["speedups"] = speedups
    return result


def claims_table(rows: list[dict]) -> str:
    """The Markdown table of the claims: each row's benchmark, baseline, both means, the difference and its 95 %
    interval, and the verdict."""
    lines = ["| claim | benchmark | paper | NAC | baseline | NAC − baseline [95 % CI] | verdict |",
             "|---|---|---|---|---|---|---|"]
    for entry in rows:
        nac = f"{entry['nac']:.1f} %"
        if entry.get("speedups"):
            nac += f" ({', '.join(f'{s:.1f}×' for s in entry['speedups'])})"
        lines.append(
            f"| {entry['claim']} | {entry['benchmark']} | {entry['paper']} | {nac} | {entry['baseline_name']}: "
            f"{entry['baseline']:.1f} % | {entry['diff']:+.1f} [{entry['ci_low']:+.1f}, {entry['ci_high']:+.1f}] | "
            f"{entry['verdict']} |")
    return "\n".join(lines)


__all__ = ["CLAIMS", "LEARNED_SHARE", "RESULTS_FILE", "SPEEDUP_CLAIM", "accuracy_on", "claim", "claims_table", "pixel_values", "row"]
