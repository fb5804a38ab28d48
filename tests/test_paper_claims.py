"""The fair protocol and the claim rows: the same trials for every family, choices made on validation only, paired
differences with a t interval over pre-training seeds, verdicts at the paper's margins; and one tiny run of the
whole command, which resumes where it stopped."""

import json
import math

import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from scipy import stats

from nac_hf import NACImageProcessor
from nac_hf.data import ClassificationData
from benchmarks import paper_claims, protocol
from benchmarks.claims import accuracy_on, claims_table, row
from benchmarks.robustness import digit_features


def test_every_family_gets_the_same_trials_drawn_once():
    first, again = protocol.trials(4), protocol.trials(4)
    assert first == again and len({(t.learning_rate, t.strength) for t in first}) == 4
    low, high = protocol.LEARNING_RATES
    assert all(low <= t.learning_rate <= high and 0 <= t.strength <= 2 for t in first)
    assert protocol.trials(2) == first[:2]  # a smaller budget is a prefix of a larger one


def test_tuning_keeps_the_trial_best_on_validation(monkeypatch, tmp_path):
    scores = {0.001: 0.7, 0.002: 0.9, 0.004: 0.8}
    monkeypatch.setattr(protocol, "train_family", lambda family, trial, data_args, epochs, seed, folder: {
        "validation": scores[trial.learning_rate], "folder": str(folder)})
    trial_list = [protocol.Trial(lr, 1.0) for lr in scores]
    tuned = protocol.tune(protocol.FAMILIES["vit"], trial_list, None, 1, 42, tmp_path)
    assert tuned["trial"].learning_rate == 0.002 and tuned["best"]["validation"] == 0.9
    assert [run["validation"] for run in tuned["runs"]] == [0.7, 0.9, 0.8]


def test_paired_differences_are_averaged_within_each_pretraining_seed():
    nac = {"42": [0.60, 0.70], "43": [0.50, 0.50], "44": [0.80, 0.60]}
    baseline = {"42": [0.50, 0.60], "43": [0.50, 0.40], "44": [0.60, 0.60]}
    paired = protocol.paired_interval(nac, baseline)
    per_seed = [10.0, 5.0, 10.0]
    assert paired["per_seed_diff"] == pytest.approx(per_seed)
    half = stats.t.ppf(0.975, 2) * stats.tstd(per_seed) / math.sqrt(3)
    assert paired["diff"] == pytest.approx(25 / 3)
    assert (paired["ci_low"], paired["ci_high"]) == pytest.approx((25 / 3 - half, 25 / 3 + half))
    assert (paired["nac"], paired["baseline"]) == pytest.approx((61.6667, 53.3333), abs=1e-3)
    with pytest.raises(ValueError, match="same pre-training seeds"):
        protocol.paired_interval(nac, {"42": [0.5, 0.6]})


def test_a_claim_holds_only_where_the_whole_interval_clears_its_margin():
    paired = {"nac": 70.0, "baseline": 58.0, "diff": 12.0, "ci_low": 10.5, "ci_high": 13.5}
    assert row("low_shot_5", "glyphs", "ViT", paired)["verdict"] == "holds"
    assert row("low_shot_5", "glyphs", "ViT", {**paired, "ci_low": 9.0})["verdict"] == "not reproduced"
    assert row("ood_fonts", "glyphs", "ViT", {**paired, "ci_low": 2.5})["verdict"] == "holds"
    lossless = {"nac": 90.0, "baseline": 91.0, "diff": -1.0, "ci_low": -2.0, "ci_high": 0.0}
    assert row("dropping", "glyphs", "whole", lossless, speedups=[8.5, 9.0, 8.1])["verdict"] == "holds"
    # Every model must hold the operating point: one slower model is enough to fail the claim.
    assert row("dropping", "glyphs", "whole", lossless, speedups=[12.0, 12.0, 6.6])["verdict"] == "not reproduced"
    assert row("early_exit", "digits", "whole", lossless, speedups=[0.9, 0.95, 1.0])["verdict"] == "not reproduced"
    # A baseline that did not learn its pre-training task (below half the NAC's validation top-1) proves nothing.
    failed = row("low_shot_5", "glyphs", "Perceiver", paired, learned=(0.70, 0.30))
    assert failed["verdict"] == "baseline did not learn"
    assert failed["pretrain_validation"] == {"nac": 0.70, "baseline": 0.30}
    assert row("low_shot_5", "glyphs", "ViT", paired, learned=(0.70, 0.36))["verdict"] == "holds"
    with pytest.raises(ValueError, match="unknown claim"):
        row("ood", "glyphs", "ViT", paired)


def test_the_table_gives_each_row_its_interval_and_verdict():
    paired = {"nac": 61.0, "baseline": 65.0, "diff": -4.0, "ci_low": -6.5, "ci_high": -1.5}
    table = claims_table([row("ood_fonts", "glyphs", "Perceiver", paired)]).splitlines()
    assert table[0].startswith("| claim | benchmark | paper | NAC | baseline | NAC − baseline [95 % CI] |")
    assert table[2] == ("| out of distribution: font families never trained on | glyphs | ≈ +2.5 points "
                        "(Tiny-ImageNet-R) | 61.0 % | Perceiver: 65.0 % | -4.0 [-6.5, -1.5] | not reproduced |")


def data_of(labels: int) -> ClassificationData:
    features = Features({"image": Image(), "label": ClassLabel(names=[str(i) for i in range(labels)])})
    split = Dataset.from_dict({"image": [[[0] * 8] * 8], "label": [0]}, features=features)
    return ClassificationData(DatasetDict(train=split, validation=split), "image", "image", "label",
                              [str(i) for i in range(labels)], "test")


def test_the_baselines_have_about_the_nacs_parameters_and_read_the_same_images():
    data = data_of(26)
    models = {name: family.build(data, 1.0) for name, family in protocol.FAMILIES.items()}
    nac = models["nac"].num_parameters()
    for name, model in models.items():
        assert abs(model.num_parameters() / nac - 1) < 0.10, name
        processor = protocol.processor_for(protocol.FAMILIES[name], model)
        pixels = processor([torch.zeros(8, 8, dtype=torch.uint8).numpy()], return_tensors="pt")["pixel_values"]
        assert pixels.shape == (1, protocol.FAMILIES[name].channels, 16, 16)
        assert model.eval()(pixel_values=pixels).logits.shape == (1, 26)
    assert models["nac"].config.module_dropout == pytest.approx(0.2)  # strength 1: the preset's regularisers
    assert protocol.FAMILIES["vit"].build(data, 0.5).config.hidden_dropout_prob == pytest.approx(0.05)


def test_cached_results_are_not_computed_twice(tmp_path):
    calls = []
    compute = lambda: calls.append(1) or {"value": len(calls)}  # noqa: E731
    assert protocol.cached(tmp_path / "a.json", compute) == {"value": 1}
    assert protocol.cached(tmp_path / "a.json", compute) == {"value": 1} and len(calls) == 1


def test_accuracy_on_a_split_of_digit_images():
    data = data_of(10)
    model = protocol.FAMILIES["vit"].build(data, 0.0).eval()
    processor = NACImageProcessor(size={"height": 16, "width": 16}, num_channels=1)
    images = [[[(i * 7 + j) % 256 for j in range(8)] for _ in range(8)] for i in range(5)]
    split = Dataset.from_dict({"image": images, "label": [0, 1, 2, 3, 4]}, features=digit_features())
    predictions = model(**processor([row["image"] for row in split], return_tensors="pt")).logits.argmax(-1)
    expected = (predictions == torch.tensor(split["label"])).float().mean().item()
    assert accuracy_on(model, processor, split, batch_size=2) == pytest.approx(expected)


def test_the_command_writes_every_row_with_its_interval_and_resumes(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    results = tmp_path / "claims.json"
    argv = ["--output_dir", str(tmp_path / "run"), "--results", str(results), "--benchmarks", "glyphs",
            "--baselines", "vit,perceiver", "--tuning_trials", "2", "--pretrain_seeds", "2", "--adapt_seeds", "2",
            "--shots", "1", "--adapt_steps", "1", "--glyph_renders", "1", "--glyph_epochs", "0.05", "--repeats", "1"]
    paper_claims.main(argv)
    written = json.loads(results.read_text())
    protocol_record = written["protocol"]
    assert protocol_record["tuning_trials"] == {"nac": 2, "vit": 2, "perceiver": 2}
    assert (protocol_record["pretrain_seeds"], protocol_record["adapt_seeds"]) == (2, 2)
    assert protocol_record["selection"] == "validation"
    ids = [(entry["id"], entry["baseline_name"]) for entry in written["rows"]]
    assert ids == [(claim, baseline) for claim in ("low_shot_1", "ood_fonts", "ood_corruptions")
                   for baseline in ("ViT", "Perceiver")] + [("dropping", "the same NAC, whole"),
                                                           ("early_exit", "the same NAC, whole")]
    for entry in written["rows"]:
        assert entry["ci_low"] <= entry["diff"] <= entry["ci_high"]
        assert entry["verdict"] in ("holds", "not reproduced", "baseline did not learn")
        assert entry["benchmark"] == "glyphs"
    low_shot = written["details"]["glyphs"]["low_shot"]
    assert set(low_shot["nac"]["1"]["selection"]) == {"full", "head", "codes", "extend", "prototype"}
    assert set(low_shot["nac"]["1"]["test"]) == {"42", "43"}  # pre-training seeds, each with its adaptation seeds
    assert all(len(runs) == 2 for runs in low_shot["perceiver"]["1"]["test"].values())
    assert len(written["details"]["glyphs"]["operating_points"]["dropping"]) == 2  # one per trained NAC
    # A rerun into the same folder trains and adapts nothing again and gives the same rows.
    capsys.readouterr()
    paper_claims.main(argv)
    assert "validation top-1" not in capsys.readouterr().out
    again = json.loads(results.read_text())
    assert [r["diff"] for r in again["rows"][:6]] == [r["diff"] for r in written["rows"][:6]]
