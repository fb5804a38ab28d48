"""scripts/drop_modules.py: the saved smaller model is the model `drop_modules` makes, and loads like any other."""

import json
import subprocess
import sys

import torch
from transformers import AutoModelForImageClassification, pipeline

from nac_hf import NACForClassification, NACImageProcessor
from nac_hf.module_dropping import drop_modules
from nac_test_utils import ROOT, tiny


SCRIPT = ROOT / "scripts" / "drop_modules.py"


def saved_digits_model(folder):
    torch.manual_seed(0)
    model = NACForClassification(tiny(num_labels=10, image_size=8, patch_size=2, num_channels=1, graph_fit_steps=50))
    model.save_pretrained(folder)
    NACImageProcessor(size={"height": 8, "width": 8}, num_channels=1).save_pretrained(folder)
    return model.eval()


def run(*arguments):
    return subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=600)


def test_the_saved_model_is_the_dropped_model(tmp_path):
    model = saved_digits_model(tmp_path / "ckpt")
    done = run("--checkpoint", str(tmp_path / "ckpt"), "--keep_processor", "3", "--order", "kernel_mass",
               "--output_dir", str(tmp_path / "small"), "--evaluate", "true")
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "small" / "dropped_modules.json").read_text())
    expected = drop_modules(model, keep_processor=3, order="kernel_mass")
    assert record["kept"] == expected and 0.0 <= record["top1_after"] <= 1.0

    small = AutoModelForImageClassification.from_pretrained(tmp_path / "small").eval()
    assert small.config.num_processor_modules == 3 and model.config.num_processor_modules == 3
    pixels = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(small(pixel_values=pixels).logits, model(pixel_values=pixels).logits)
    classify = pipeline("image-classification", model=str(tmp_path / "small"))
    assert len(classify(torch.rand(8, 8).mul(255).to(torch.uint8).numpy().astype("uint8"), top_k=2)) == 2


def test_a_bad_keep_or_order_is_refused_and_nothing_is_written(tmp_path):
    saved_digits_model(tmp_path / "ckpt")
    for arguments, message in ((["--keep_processor", "two"], "takes a count"),
                               (["--keep_processor", "99"], "between 1 and the 8"),
                               (["--keep_processor", "2", "--order", "size"], "invalid choice")):
        done = run("--checkpoint", str(tmp_path / "ckpt"), "--output_dir", str(tmp_path / "small"), *arguments)
        assert done.returncode != 0 and message in done.stderr, done.stderr[-2000:]
        assert not (tmp_path / "small").exists()
