"""Export a NAC classifier to ONNX (the dynamo exporter) and check it against onnxruntime.

Needs the `onnx` extra: `pip install -e ".[onnx]"` (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .configuration_nac import NACConfig
from .modalities import modality_of


ONNX_EXTRA = 'pip install -e ".[onnx]" (onnx, onnxscript and onnxruntime)'


class LogitsOnly(nn.Module):
    """The classifier's logits as a function of its inputs only (by their forward keywords), the graph an ONNX
    runtime needs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**inputs).logits


def example_onnx_inputs(config: NACConfig, batch_size: int = 2, length: int = 16, seed: int = 0) -> dict:
    """Valid inputs of the given batch size (and length: bytes per text, points per cloud)."""
    return modality_of(config).sample_inputs(config, batch_size, length, seed)


def dynamic_shapes(config: NACConfig) -> dict:
    """A dynamic batch for every input, and a dynamic length for bytes and points."""
    return modality_of(config).dynamic_shapes(config)


def export_onnx(model: nn.Module, path: str | Path, opset: int | None = None, batch_size: int = 2,
                length: int = 16) -> Path:
    """Write the classifier's logits graph to `path` with dynamic batch (and length) axes."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        raise ImportError(f"exporting to ONNX needs onnxscript: {ONNX_EXTRA}") from None
    config = model.config
    model = model.eval()
    inputs = example_onnx_inputs(config, batch_size, length)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.onnx.export(
        LogitsOnly(model), (), kwargs={"inputs": inputs}, dynamic_shapes={"inputs": dynamic_shapes(config)},
        dynamo=True, opset_version=opset, input_names=list(inputs), output_names=["logits"], verbose=False,
    )
    program.save(str(path))
    return path


def onnx_max_difference(model: nn.Module, path: str | Path, batch_size: int = 3, length: int = 11) -> float:
    """Largest absolute difference between onnxruntime's logits and PyTorch's on fresh inputs."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(f"checking an ONNX export needs onnxruntime: {ONNX_EXTRA}") from None
    inputs = example_onnx_inputs(model.config, batch_size, length, seed=1)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wanted = {node.name for node in session.get_inputs()}
    feeds = {name: value.numpy() for name, value in inputs.items() if name in wanted}
    (logits,) = session.run(["logits"], feeds)
    with torch.no_grad():
        expected = model.eval()(**inputs).logits
    return float((torch.from_numpy(logits) - expected).abs().max())


__all__ = ["example_onnx_inputs", "export_onnx", "onnx_max_difference"]
