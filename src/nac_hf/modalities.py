"""What differs between the inputs a NAC reads — images, texts and point clouds — said once, in a record each.

A config's `tokenizer_type` decides what the model reads (`modality_of(config)`). Everything that follows from it is
a question to that record: the model input and its mask, the Auto classes that load the model and its processor, the
pipeline task, inputs to check a model with, and the axes of those inputs that may change size in an export. Adding a
modality means adding a record to `MODALITIES` (and its input tokenizer to the model).

This file travels with a saved model for `trust_remote_code`, so it imports only the standard library, torch and
transformers, and names nac_hf's classes by string.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import transformers


# The largest batch, and the most points per cloud, an exported graph is traced to accept.
MAX_EXPORT_BATCH = 4096
MAX_POINTS = 1 << 20


@dataclass(frozen=True)
class Modality:
    """What a NAC reading one kind of input takes, loads with and is checked with.

    Attributes:
        name: `"image"`, `"text"` or `"points"`, as `config.modality` and the data of a run say it.
        tokenizer_types: the `config.tokenizer_type` values that read it, the default for new models first.
        main_input_name: the forward keyword that carries it (`model.main_input_name`).
        mask_name: the forward keyword of its padding mask `(B, V)`, or None when examples are never padded.
        auto_model_class: the transformers Auto class that loads a classifier of it.
        processor_class: the nac_hf class that turns raw inputs into model inputs, or None when none is needed.
        processor_auto_class: the transformers Auto class that loads that processor, or None.
        processor_description: the processor and the file it is saved in, as error messages name it.
        pipeline_task: the transformers pipeline task of a classifier of it, or None when transformers has none.
        length_axis: the name of the axis of the inputs whose size differs between examples (bytes per text, points
            per cloud), or None when every example has the same shape.
    """

    name: str
    tokenizer_types: tuple[str, ...]
    main_input_name: str
    mask_name: str | None
    auto_model_class: str
    processor_class: str | None
    processor_auto_class: str | None
    processor_description: str | None
    pipeline_task: str | None
    length_axis: str | None
    # (config, batch_size, length, generator) -> (main input, mask or None): random valid model inputs.
    random_inputs: Callable[[Any, int, int, torch.Generator], tuple] = field(repr=False)
    # (config, generator) -> one raw example, as a processor or a pipeline reads it.
    raw_example: Callable[[Any, torch.Generator], Any] = field(repr=False)
    # config -> the keyword arguments of a new processor for it.
    processor_settings: Callable[[Any], dict] | None = field(default=None, repr=False)
    # config -> the longest example along `length_axis`.
    longest: Callable[[Any], int] | None = field(default=None, repr=False)

    def auto_model(self):
        """The transformers Auto class that loads a classifier of this input."""
        return getattr(transformers, self.auto_model_class)

    def auto_processor(self):
        """The transformers Auto class that loads the processor, or None when this input needs none."""
        return getattr(transformers, self.processor_auto_class) if self.processor_auto_class else None

    def sample_inputs(self, config, batch_size: int = 2, length: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
        """Random valid model inputs of `batch_size` examples (of `length` tokens or points where the length varies;
        texts come with one padded example), by their forward keywords."""
        generator = torch.Generator().manual_seed(seed)
        main, mask = self.random_inputs(config, batch_size, length, generator)
        return {self.main_input_name: main, **({self.mask_name: mask} if mask is not None else {})}

    def raw_sample(self, config, seed: int = 0):
        """One fixed raw example (a PIL image, a string, a `(1, N, 3)` point cloud): what a user hands the processor,
        or the model itself when there is no processor, and what a pipeline of this task takes."""
        return self.raw_example(config, torch.Generator().manual_seed(seed))

    def model_inputs(self, raw, processor) -> dict:
        """The model inputs of a raw example: through `processor`, or as they are when this input needs none."""
        if processor is None:
            return {self.main_input_name: raw}
        return processor(raw, return_tensors="pt")

    def dynamic_shapes(self, config) -> dict[str, dict[int, Any]]:
        """`torch.export` dynamic shapes of `sample_inputs`: a dynamic batch, and a dynamic length along
        `length_axis` (from 2 to `longest(config)`)."""
        axes = {0: torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)}
        if self.length_axis is not None:
            axes[1] = torch.export.Dim(self.length_axis, min=2, max=self.longest(config))
        return {name: dict(axes) for name in self.sample_inputs(config, batch_size=1, length=2)}


def _random_images(config, batch_size: int, length: int, generator: torch.Generator) -> tuple:
    size = config.image_size
    return torch.randn(batch_size, config.num_channels, size, size, generator=generator), None  # (B, C, H, W)


def _random_texts(config, batch_size: int, length: int, generator: torch.Generator) -> tuple:
    ids = torch.randint(5, config.vocab_size, (batch_size, length), generator=generator)  # (B, V), bytes only
    mask = torch.ones(batch_size, length, dtype=torch.long)
    mask[0, length // 2:] = 0  # one padded text
    ids[0, length // 2:] = config.pad_token_id
    return ids, mask


def _random_points(config, batch_size: int, length: int, generator: torch.Generator) -> tuple:
    return torch.randn(batch_size, length, 3, generator=generator), None  # (B, N, 3)


def _raw_image(config, generator: torch.Generator):
    from transformers.image_transforms import to_pil_image

    # Twice the model's size, so that the processor's resize is part of what is checked.
    size = 2 * config.image_size
    pixels = torch.randint(0, 256, (size, size, 3), dtype=torch.uint8, generator=generator)
    return to_pil_image(pixels, input_data_format="channels_last")


def _raw_text(config, generator: torch.Generator) -> str:
    return "Neural attentive circuits ✓"  # a multi-byte character among the bytes


def _raw_points(config, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(1, 64, 3, generator=generator)  # (1, N, 3)


MODALITIES: dict[str, Modality] = {
    "image": Modality(
        name="image",
        tokenizer_types=("patch", "conv"),
        main_input_name="pixel_values",
        mask_name=None,
        auto_model_class="AutoModelForImageClassification",
        processor_class="NACImageProcessor",
        processor_auto_class="AutoImageProcessor",
        processor_description="image processor (preprocessor_config.json)",
        pipeline_task="image-classification",
        length_axis=None,
        random_inputs=_random_images,
        raw_example=_raw_image,
        processor_settings=lambda config: {
            "size": {"height": config.image_size, "width": config.image_size},
            "num_channels": config.num_channels,
        },
    ),
    "text": Modality(
        name="text",
        tokenizer_types=("byte",),
        main_input_name="input_ids",
        mask_name="attention_mask",
        auto_model_class="AutoModelForSequenceClassification",
        processor_class="NACByteTokenizer",
        processor_auto_class="AutoTokenizer",
        processor_description="tokenizer (tokenizer_config.json)",
        pipeline_task="text-classification",
        length_axis="length",
        random_inputs=_random_texts,
        raw_example=_raw_text,
        processor_settings=lambda config: {"model_max_length": config.max_position_embeddings},
        longest=lambda config: config.max_position_embeddings,
    ),
    # transformers has no point-cloud task: a classifier of points loads with the vision classifiers' Auto class and
    # has no pipeline; clouds go to the model as they are, with no processor.
    "points": Modality(
        name="points",
        tokenizer_types=("point",),
        main_input_name="points",
        mask_name="points_mask",
        auto_model_class="AutoModelForImageClassification",
        processor_class=None,
        processor_auto_class=None,
        processor_description=None,
        pipeline_task=None,
        length_axis="num_points",
        random_inputs=_random_points,
        raw_example=_raw_points,
        longest=lambda config: MAX_POINTS,
    ),
}

TOKENIZER_TYPES: tuple[str, ...] = tuple(kind for modality in MODALITIES.values() for kind in modality.tokenizer_types)


def modality_of(source) -> Modality:
    """The record of what a model reads: `source` is a config (anything with a `tokenizer_type`) or a tokenizer
    type (`"patch"`, `"conv"`, `"byte"`, `"point"`)."""
    tokenizer_type = getattr(source, "tokenizer_type", source)
    for modality in MODALITIES.values():
        if tokenizer_type in modality.tokenizer_types:
            return modality
    raise ValueError(f"unknown tokenizer_type {tokenizer_type!r}; choose one of {list(TOKENIZER_TYPES)}")


__all__ = ["MODALITIES", "Modality", "TOKENIZER_TYPES", "modality_of"]
