import json

import pytest

from benchmarks.preset_search import chosen, main, parse_variants
from benchmarks.task_comparison import TASKS, parameter_counts
from nac_hf import NACForClassification

from test_task_comparison import TINY, flags


def test_variants_are_parsed_as_config_overrides_after_the_preset():
    variants = parse_variants("ctx:byte_context_layers=1,intermediate_size=96; pri:processors_read_in=true")
    assert variants == {"preset": {}, "ctx": {"byte_context_layers": 1, "intermediate_size": 96},
                        "pri": {"processors_read_in": True}}
    for bad, message in (("ctx", "NAME:FIELD=VALUE"), ("a:hidden_size=8;a:hidden_size=16", "twice"),
                         ("x:code_noise=0.1", "regularisers come from --strength"), ("x:nonsense=1", "not a NACConfig")):
        with pytest.raises(ValueError, match=message):
            parse_variants(bad)


def test_the_search_scores_each_variant_on_validation_and_keeps_its_changes(tmp_path):
    argv = ["--task", "shapes", "--output_dir", str(tmp_path / "run"), "--results", str(tmp_path / "search.json"),
            "--variants", "narrow:intermediate_size=64", "--epochs", "0.5", *flags(TINY["shapes"])]
    results = main(argv)
    assert json.loads((tmp_path / "search.json").read_text()) == results
    assert [row["name"] for row in results["variants"]] == ["preset", "narrow"]
    assert results["setting"]["scored_on"] == "validation" and results["command"].endswith(" ".join(argv))
    baseline = parameter_counts(TASKS["shapes"])["pointnet"]
    for row in results["variants"]:
        model = NACForClassification.from_pretrained(tmp_path / "run" / "variants" / row["name"])
        assert model.num_parameters() == row["parameters"]
        assert row["size_gap"] == pytest.approx(baseline / row["parameters"] - 1, abs=1e-4)
        assert 0 <= row["validation"] <= 1
        assert row["comparable"] == (abs(row["size_gap"]) <= 0.10)
    comparable = [row for row in results["variants"] if row["comparable"]]
    assert results["chosen"] == max(comparable, key=lambda row: row["validation"])["name"]
    narrow = NACForClassification.from_pretrained(tmp_path / "run" / "variants" / "narrow")
    assert narrow.config.intermediate_size == 64
    assert results["variants"][1]["parameters"] < results["variants"][0]["parameters"]


def test_the_chosen_variant_is_the_best_of_those_about_the_baselines_size():
    rows = [{"name": "preset", "validation": 0.57, "comparable": True},
            {"name": "big", "validation": 0.60, "comparable": False},
            {"name": "narrow", "validation": 0.58, "comparable": True}]
    assert chosen(rows) == "narrow"
    assert chosen([{**rows[0], "comparable": False}, rows[1]]) == "preset"
