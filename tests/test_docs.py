"""The README's code runs, its results table and docs/results.md say what their json files say, and its links lead
somewhere."""

import json
import re

import torch
from transformers import AutoModelForImageClassification

from benchmarks import results_page
from nac_hf import NACForClassification, NACImageProcessor
from nac_test_utils import ROOT, tiny


README = (ROOT / "README.md").read_text()


def python_block_after(heading: str) -> str:
    section = README.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_few_shot_trainer_snippet_fine_tunes_and_saves_a_model(tmp_path, monkeypatch):
    pretrained = tmp_path / "pretrained"
    torch.manual_seed(0)
    NACForClassification(tiny(num_labels=5, image_size=8, patch_size=2, num_channels=1, graph_fit_steps=50)) \
        .save_pretrained(pretrained)
    NACImageProcessor(size={"height": 8, "width": 8}, num_channels=1).save_pretrained(pretrained)
    code = python_block_after("## Few-shot fine-tuning")
    assert len(code.strip().splitlines()) <= 20
    code = code.replace('"outputs/nac-digits-0-4"', repr(str(pretrained))).replace("max_steps=100", "max_steps=2")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)

    adapted = AutoModelForImageClassification.from_pretrained(tmp_path / "outputs" / "nac-digits-5-9")
    assert adapted.config.id2label == {0: "5", 1: "6", 2: "7", 3: "8", 4: "9"}
    before = NACForClassification.from_pretrained(pretrained)
    trained = {name for name, p in adapted.named_parameters() if not torch.equal(p, before.get_parameter(name))}
    assert "nac.generator.codes" in trained and "classifier.linear.weight" in trained
    assert all(name.startswith(("nac.generator.codes", "head_norm.", "classifier.")) for name in trained)


def test_the_results_page_and_table_are_written_from_their_json_files():
    page, table = results_page.render()
    assert (ROOT / "docs" / "results.md").read_text() == page, "run python -m benchmarks.results_page"
    assert results_page.with_table(README, table) == README, "run python -m benchmarks.results_page"
    for name in re.findall(r"\]\(docs/results/([\w.-]+\.json)\)", table):
        assert (ROOT / "docs" / "results" / name).exists()


def test_every_local_link_of_the_docs_leads_to_a_file():
    for document in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
            if "://" in target:
                continue
            assert (document.parent / target).exists(), f"{document.name} links to a missing {target}"


def test_a_task_comparison_gets_its_row_its_verdict_and_what_was_tried_when_behind(tmp_path, monkeypatch):
    def family(name, runs):
        return {"name": name, "params": 668_311, "runs": runs, "mean": sum(runs) / len(runs), "std": 0.01,
                "trial": {"learning_rate": 5.5e-4, "strength": 0.03},
                "tuning": [{"validation": 0.58, "train_seconds": 60}, {"validation": 0.55, "train_seconds": 90}],
                "details": [{"train_seconds": 60}, {"train_seconds": 120}]}

    results = {"task": "reviews", "command": "python -m benchmarks.task_comparison --task reviews --output_dir D",
               "nac": family("NAC", [0.60, 0.62]), "baseline": family("BERT", [0.59, 0.60]),
               "paired_diff": {"mean": 0.015, "ci_low": -0.01, "ci_high": 0.04},
               "protocol": {"epochs": 5, "trials": [{"learning_rate": 5.5e-4, "strength": 0.03},
                                                    {"learning_rate": 2.2e-3, "strength": 0.54}]},
               "published": {"seed": 42}, "train_seconds": 600, "wall_seconds": 600,
               "majority_answer": {"label": "negative", "test_top1": 0.5044}}
    search = {"command": "python -m benchmarks.preset_search --task reviews", "baseline": "BERT",
              "setting": {"learning_rate": 5.5e-4, "strength": 0.03, "epochs": 5, "seed": 42},
              "variants": [{"name": "preset", "overrides": {}, "validation": 0.573, "parameters": 668_311,
                            "size_gap": -0.002, "comparable": True, "train_seconds": 60.0},
                           {"name": "context-1", "overrides": {"byte_context_layers": 1}, "validation": 0.592,
                            "parameters": 743_575, "size_gap": -0.103, "comparable": False,
                            "train_seconds": 90.0}],
              "chosen": "preset"}
    (tmp_path / "reviews.json").write_text(json.dumps(results))
    (tmp_path / "preset-search-reviews.json").write_text(json.dumps(search))
    monkeypatch.setattr(results_page, "RESULTS", tmp_path)
    text, rows = results_page.tasks()
    assert len(rows) == 1 and rows[0]["json"] == "reviews.json"
    assert "NAC 61.00 ± 1.00 %, BERT 59.50 ± 1.00 %" in rows[0]["figure"]
    assert "over 2 seeds (always answering 'negative': 50.44 %)" in rows[0]["figure"]
    assert "+1.5 [-1.0, +4.0] points: competitive" in rows[0]["figure"]
    assert "context-1 (byte_context_layers=1): 59.20 %, 0.744 M parameters (BERT -10.3 %, too far from its size), trained in 1.5 min" in text
    assert "Chosen: preset." in text and "a training of the NAC took 1.0 to 2.0 min, of the BERT 1.0 to 2.0 min" in text
    assert "Not yet run: listops, shapes." in text and "behind" not in text
    results["paired_diff"].update(mean=-0.031, ci_low=-0.08)
    (tmp_path / "reviews.json").write_text(json.dumps(results))
    text, rows = results_page.tasks()
    assert rows[0]["figure"].endswith("not shown competitive")
    assert ("The NAC is 3.1 points behind on the mean; tried for it: the learning rates 0.00055 at strength 0.03, "
            "0.0022 at strength 0.54, and the preset's variants context-1 on validation (below).") in text
    (tmp_path / "preset-search-reviews.json").unlink()
    assert "and no variant of the preset yet." in results_page.tasks()[0]
