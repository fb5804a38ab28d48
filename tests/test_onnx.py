"""ONNX export (dynamo exporter) of every tokenizer type, checked with onnxruntime on other batch sizes and lengths."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from nac_hf import NACConfig, NACForClassification  # noqa: E402
from nac_hf.onnx_export import export_onnx, onnx_max_difference  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]


def tiny_model(kind: str) -> NACForClassification:
    torch.manual_seed(0)
    return NACForClassification(NACConfig.from_preset("tiny", num_labels=3, graph_fit_steps=50, tokenizer_type=kind))


@pytest.mark.parametrize("kind", ["patch", "conv", "byte", "point"])
def test_onnx_export_matches_pytorch_on_other_shapes(tmp_path, kind):
    model = tiny_model(kind)
    path = export_onnx(model, tmp_path / "model.onnx", batch_size=2, length=16)
    # Another batch size, and another length for bytes and points, than the export's example.
    assert onnx_max_difference(model, path, batch_size=3, length=11) <= 1e-4
    assert onnx_max_difference(model, path, batch_size=1, length=7) <= 1e-4


def test_export_script(tmp_path):
    tiny_model("byte").save_pretrained(tmp_path / "checkpoint")
    command = [sys.executable, str(ROOT / "scripts" / "export_onnx.py"), "--checkpoint",
               str(tmp_path / "checkpoint"), "--output", str(tmp_path / "model.onnx"), "--check"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "max abs difference" in done.stdout and (tmp_path / "model.onnx").stat().st_size > 0
    refused = subprocess.run([*command[:2], "--checkpoint", str(tmp_path), "--output", str(tmp_path / "x.onnx")],
                             capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode != 0 and "is not a NAC checkpoint" in refused.stderr


def test_a_model_with_modules_dropped_exports_and_compiles(tmp_path):
    from nac_hf.module_dropping import drop_modules

    model = tiny_model("patch").eval()
    drop_modules(model, keep_processor=3, keep_input=2)
    path = export_onnx(model, tmp_path / "dropped.onnx", batch_size=2)
    assert onnx_max_difference(model, path, batch_size=3) <= 1e-4
    explanation = torch._dynamo.explain(model)(pixel_values=torch.randn(2, 3, 16, 16))
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0
