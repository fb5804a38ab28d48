"""Export a NAC classifier to ONNX (the dynamo exporter) and check it against onnxruntime.

Needs the `onnx` extra: `pip install -e ".[onnx]"` (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .configuration_nac import NACConfig


ONNX_EXTRA = 'pip install -e ".[onnx]" (onnx, onnxscript and onnxruntime)'


class LogitsOnly(nn.Module):
    """The classifier's logits as a function of its main inputs only, the graph an ONNX runtime needs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values=None, input_ids=None, attention_mask=None, points=None) -> torch.Tensor:
        inputs = {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask,
                  "points": points}
        return self.model(**{name: value for name, value in inputs.items() if value is not None}).logits


def input_names(config: NACConfig) -> list[str]:
    """The inputs an exported model takes, by what the model reads."""
    return [config.main_input_name] + (["attention_mask"] if config.modality == "text" else [])


def example_onnx_inputs(config: NACConfig, batch_size: int = 2, length: int = 16, seed: int = 0) -> dict:
    """Valid inputs of the given batch size (and length: bytes per text, points per cloud)."""
    generator = torch.Generator().manual_seed(seed)
    if config.modality == "text":
        ids = torch.randint(5, config.vocab_size, (batch_size, length), generator=generator)
        mask = torch.ones(batch_size, length, dtype=torch.long)
        mask[0, length // 2:] = 0  # one padded text
        ids[0, length // 2:] = config.pad_token_id
        return {"input_ids": ids, "attention_mask": mask}
    if config.modality == "points":
        return {"points": torch.randn(batch_size, length, 3, generator=generator)}
    size = config.image_size
    return {"pixel_values": torch.randn(batch_size, config.num_channels, size, size, generator=generator)}


def dynamic_shapes(config: NACConfig) -> dict:
    """A dynamic batch for every input, and a dynamic length for bytes and points."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    if config.modality == "text":
        length = torch.export.Dim("length", min=2, max=config.max_position_embeddings)
        return {"input_ids": {0: batch, 1: length}, "attention_mask": {0: batch, 1: length}}
    if config.modality == "points":
        return {"points": {0: batch, 1: torch.export.Dim("num_points", min=2, max=1 << 20)}}
    return {"pixel_values": {0: batch}}


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
        LogitsOnly(model), (), kwargs=inputs, dynamo=True, dynamic_shapes=dynamic_shapes(config),
        opset_version=opset, input_names=input_names(config), output_names=["logits"], verbose=False,
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
