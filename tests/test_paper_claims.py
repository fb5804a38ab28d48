"""The claim rows and their table: means and spreads over seeds, each model's best mode, the dropping row, and a
verdict that says when a claim does not hold."""

import pytest
import torch
from datasets import Dataset

from nac_hf import NACImageProcessor
from benchmarks.claims import accuracy_on, accuracy_row, best_mode, claims_table, dropping_row, verdict
from benchmarks.few_shot import vit_baseline
from benchmarks.common import mean_std
from benchmarks.robustness import digit_features


def test_accuracy_rows_are_means_and_spreads_in_points():
    row = accuracy_row("low_shot_5", [0.5, 0.7], [0.4, 0.4], nac_mode="codes", baseline_mode="full")
    assert row["id"] == "low_shot_5" and row["seeds"] == 2
    assert (row["nac"], row["nac_std"]) == pytest.approx((60.0, 100 * mean_std([0.5, 0.7])[1]))
    assert (row["baseline"], row["baseline_std"]) == (pytest.approx(40.0), 0.0)
    assert verdict(row) == "reproduced"  # 20 points ahead, the paper's margin is 10
    assert verdict(accuracy_row("low_shot_5", [0.45], [0.4])) == "partly"
    assert verdict(accuracy_row("ood", [0.40], [0.45])) == "not reproduced"
    table = claims_table([row]).splitlines()
    assert table[0].startswith("| claim | paper | NAC | ViT baseline | NAC − ViT |")
    assert table[2] == ("| low-shot adaptation, 5 examples per class | ≈ +10 points over ViT / Perceiver | "
                        "60.0 ± 14.1 % (codes) | 40.0 ± 0.0 % (full) | +20.0 | reproduced |")


def test_best_mode_is_chosen_per_shot_count():
    results = {"modes": {"full": {"shots": {"1": {"mean": 0.3, "std": 0.1}, "5": {"mean": 0.8, "std": 0.0}}},
                         "head": {"shots": {"1": {"mean": 0.4, "std": 0.2}, "5": {"mean": 0.7, "std": 0.1}}}}}
    assert best_mode(results, 1) == ("head", 0.4, 0.2) and best_mode(results, 5) == ("full", 0.8, 0.0)


def test_the_dropping_row_is_the_fastest_setting_within_three_points():
    dropping = {"baseline": {"accuracy": 0.95}, "rows": [
        {"order": "out_degree", "keep_input": 1.0, "keep_processor": 0.25, "accuracy": 0.94, "speedup": 3.0},
        {"order": "out_degree", "keep_input": 0.5, "keep_processor": 0.25, "accuracy": 0.50, "speedup": 6.0},
        {"order": "random", "keep_input": 1.0, "keep_processor": 0.25, "accuracy": 0.93, "speedup": 4.0},
        {"order": "random", "keep_input": 1.0, "keep_processor": 0.25, "accuracy": 0.92, "speedup": 4.4},
    ]}
    row = dropping_row(dropping)
    assert row["nac"] == pytest.approx(4.2) and row["setting"] == "random, inputs ×1, processors ×0.25"
    assert row["baseline"] is None and verdict(row) == "partly"  # faster, but not the paper's 8×
    assert "| 4.2× (random, inputs ×1, processors ×0.25) | — | — | partly |" in claims_table([row])
    # Several trained models: the loss is each one's own, and both count.
    other = {"baseline": {"accuracy": 0.99}, "rows": [
        {"order": "out_degree", "keep_input": 1.0, "keep_processor": 0.25, "accuracy": 0.99, "speedup": 5.0},
        {"order": "random", "keep_input": 1.0, "keep_processor": 0.25, "accuracy": 0.90, "speedup": 4.0},
        {"order": "random", "keep_input": 1.0, "keep_processor": 0.25, "accuracy": 0.90, "speedup": 4.0},
    ]}
    both = dropping_row([dropping, other])
    assert both["nac"] == pytest.approx(4.0) and both["setting"] == "out_degree, inputs ×1, processors ×0.25"


def test_accuracy_on_a_split_of_digit_images():
    model = vit_baseline(10, {i: str(i) for i in range(10)}, {str(i): i for i in range(10)})
    processor = NACImageProcessor(size={"height": 16, "width": 16}, num_channels=1)
    images = [[[(i * 7 + j) % 256 for j in range(8)] for _ in range(8)] for i in range(5)]
    split = Dataset.from_dict({"image": images, "label": [0, 1, 2, 3, 4]}, features=digit_features())
    predictions = model.eval()(**processor([row["image"] for row in split], return_tensors="pt")).logits.argmax(-1)
    expected = (predictions == torch.tensor(split["label"])).float().mean().item()
    assert accuracy_on(model, processor, split, batch_size=2) == pytest.approx(expected)
    assert 1.0e6 < model.num_parameters() < 1.3e6  # about the NAC `digits` preset's 1.10 M
