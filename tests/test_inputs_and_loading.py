"""What a user hands a NAC and where it loads from: images of the model's size (or an explicit opt-in to another), a
`forward` whose first parameter is the main input as transformers expects, and checkpoints that are incomplete or
damaged refused with errors that name the file and the fix."""

import gc
import inspect
import json
import weakref
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import SafetensorError
from transformers import AutoModelForImageClassification, Trainer, TrainingArguments

from nac_hf import NACConfig, NACForClassification, NACImageProcessor, NACModel
from nac_hf.training import ModelArguments, build_processor, new_processor
from nac_test_utils import example_inputs, tiny


KINDS = {"image": "patch", "text": "byte", "points": "point"}


# ------------------------------------------------------------------------------------------------------------------
# Image size: the processor of a model resizes to its size; the model refuses another size unless asked to
# ------------------------------------------------------------------------------------------------------------------


def gray_image(height: int = 40, width: int = 30) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width), dtype=np.uint8))


def test_the_processor_of_a_model_resizes_to_its_image_size():
    model = NACForClassification(tiny(image_size=8, patch_size=2, num_channels=1)).eval()
    processor = NACImageProcessor.from_config(model.config)
    pixel_values = processor(gray_image(), return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 1, 8, 8)
    assert model(pixel_values).logits.shape == (1, 3)
    # The default processor is that of the default config (64x64 RGB), which this model refuses, naming both sizes.
    with pytest.raises(ValueError, match=r"expected pixel_values of 8x8 \(config.image_size\), got 64x64"):
        model(NACImageProcessor(num_channels=1)(gray_image(), return_tensors="pt")["pixel_values"])
    assert NACImageProcessor.from_config(model.config, do_normalize=False).do_normalize is False
    with pytest.raises(ValueError, match="reads input_ids .* its processor is NACByteTokenizer"):
        NACImageProcessor.from_config(tiny(tokenizer_type="byte"))


@pytest.mark.parametrize("exits", [False, True])
def test_the_opt_in_reaches_the_model_with_and_without_early_exits(exits):
    model = NACForClassification(tiny(exit_threshold=0.5 if exits else None)).eval()
    assert model.nac.has_exits() == exits
    larger = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="16x16 .* got 32x32"):
        model(larger)
    with pytest.raises(ValueError, match="16x16 .* got 32x32"):
        model.nac(larger)
    with torch.no_grad():
        assert model(larger, interpolate_pos_encoding=True).logits.shape == (2, 3)
        assert model.nac(larger, interpolate_pos_encoding=True).pooler_output.shape == (2, 32)


def test_a_folder_with_only_the_model_gives_the_processor_of_its_config(tmp_path):
    model = NACForClassification(tiny(image_size=8, patch_size=2, num_channels=1)).eval()
    model.save_pretrained(tmp_path)
    processor = NACImageProcessor.from_pretrained(tmp_path)
    assert (processor.size, processor.num_channels) == ({"height": 8, "width": 8}, 1)
    assert NACImageProcessor.from_pretrained(tmp_path, resample=0).resample == 0
    model(**processor(gray_image(), return_tensors="pt"))
    # A processor saved beside the model is the one that loads.
    NACImageProcessor(size=12, num_channels=1).save_pretrained(tmp_path)
    assert NACImageProcessor.from_pretrained(tmp_path).size == {"height": 12, "width": 12}


def test_a_folder_with_neither_processor_nor_model_config_still_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="preprocessor_config.json"):
        NACImageProcessor.from_pretrained(tmp_path)


def test_training_gives_a_model_the_processor_of_its_size(tmp_path):
    config = tiny(image_size=8, patch_size=2, num_channels=1)
    NACForClassification(config).save_pretrained(tmp_path)  # a checkpoint without a processor
    data = SimpleNamespace(modality="image")
    for processor in (new_processor(config), build_processor(ModelArguments(str(tmp_path)), config, data)):
        assert (processor.size, processor.num_channels) == ({"height": 8, "width": 8}, 1)


# ------------------------------------------------------------------------------------------------------------------
# forward's first parameter is the main input
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", [NACModel, NACForClassification])
def test_forward_names_the_main_input_first_as_transformers_checks(model_class):
    # transformers' test_model_main_input_name, as it is written: on the class
    model_signature = inspect.signature(getattr(model_class, "forward"))
    observed_main_input_name = list(model_signature.parameters.keys())[1]
    assert model_class.main_input_name == observed_main_input_name
    for modality, kind in KINDS.items():  # every model names every input it may take
        model = model_class(tiny(tokenizer_type=kind))
        arg_names = [*inspect.signature(model.forward).parameters.keys()]
        assert {"pixel_values", "input_ids", "points", "attention_mask", "interpolate_pos_encoding"} <= set(arg_names)


@pytest.mark.parametrize("modality", list(KINDS))
def test_the_signature_shown_binds_the_calls_forward_takes(modality):
    torch.manual_seed(0)
    config = tiny(tokenizer_type=KINDS[modality])
    model = NACForClassification(config).eval()
    inputs = example_inputs(config)
    main = inputs.pop(model.main_input_name)
    signature = inspect.signature(model.forward)
    # Bound as the signature says (the main input positionally), the call gives what the keyword call gives.
    bound = signature.bind(main, **inputs)
    assert bound.args == (main,)
    with torch.no_grad():
        expected = model(**{model.main_input_name: main}, **inputs).logits
        torch.testing.assert_close(model(*bound.args, **bound.kwargs).logits, expected, rtol=0, atol=0)
    with pytest.raises(TypeError):
        signature.bind(main, main)  # the other inputs are keywords only, as forward takes them
    with pytest.raises(ValueError, match=f"reads {model.main_input_name}"):
        other = "input_ids" if modality != "text" else "pixel_values"
        model(**{other: torch.zeros(2, 3, 16, 16, dtype=torch.long if other == "input_ids" else torch.float)})


@pytest.mark.parametrize("modality", list(KINDS))
def test_a_model_is_freed_when_its_last_reference_goes(modality):
    """No reference cycle through the model (e.g. a bound method kept on the instance): deleting the last reference
    frees it, and its memory, without waiting for the garbage collector."""
    model = NACForClassification(tiny(tokenizer_type=KINDS[modality]))
    alive = weakref.ref(model)
    gc.disable()
    try:
        del model
        assert alive() is None
    finally:
        gc.enable()


def test_trainer_keeps_the_columns_the_forward_names(tmp_path):
    model = NACForClassification(tiny(tokenizer_type="byte"))
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = Trainer(model=model, args=args)
    trainer._set_signature_columns_if_needed()
    assert {"input_ids", "attention_mask", "labels"} <= set(trainer._signature_columns)


# ------------------------------------------------------------------------------------------------------------------
# Bad checkpoints and configs
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_labels", [0, -1])
def test_a_classifier_without_labels_is_refused(tmp_path, num_labels):
    with pytest.raises(ValueError, match=rf"NACConfig.num_labels must be a positive int.*got {num_labels}"):
        NACForClassification(tiny(num_labels=num_labels))
    NACForClassification(tiny()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="num_labels"):
        NACForClassification.from_pretrained(tmp_path, num_labels=num_labels)
    with pytest.raises(ValueError, match="num_labels"):
        tiny().num_labels = num_labels
    with pytest.raises(ValueError, match="num_labels must be at least 1"):
        NACConfig(id2label={})


def test_a_folder_without_config_json_says_so_and_how_to_fix_it(tmp_path):
    model = NACForClassification(tiny()).eval()
    model.save_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    message = rf"{tmp_path} has no config.json.*config.save_pretrained\(.*config=config"
    for load in (NACForClassification.from_pretrained, NACModel.from_pretrained, NACConfig.from_pretrained):
        with pytest.raises(OSError, match=message):
            load(tmp_path)
    # transformers' Auto classes read config.json before they know the model is a NAC; their error names it too
    with pytest.raises(ValueError, match="config.json"):
        AutoModelForImageClassification.from_pretrained(tmp_path)
    # Both fixes load the weights.
    inputs = example_inputs(model.config)
    with torch.no_grad():
        given = NACForClassification.from_pretrained(tmp_path, config=model.config).eval()
        torch.testing.assert_close(given(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)
        model.config.save_pretrained(tmp_path)
        torch.testing.assert_close(NACForClassification.from_pretrained(tmp_path).eval()(**inputs).logits,
                                   model(**inputs).logits, rtol=0, atol=0)


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("damage", ["truncated", "header cut", "garbage"])
def test_a_damaged_weights_file_is_named_with_the_fix(tmp_path, damage):
    NACForClassification(tiny()).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    if damage == "truncated":
        truncate(weights)
    elif damage == "header cut":
        truncate(weights, keep=4 / weights.stat().st_size)
    else:
        weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + bytes(100))
    message = rf"{weights} cannot be read: the file is truncated or corrupt.*save_pretrained.*force_download=True"
    for load in (NACForClassification.from_pretrained, AutoModelForImageClassification.from_pretrained):
        with pytest.raises(OSError, match=message) as raised:
            load(tmp_path)
        assert isinstance(raised.value.__cause__, SafetensorError)


def test_a_damaged_shard_is_the_file_named(tmp_path):
    NACForClassification(tiny()).save_pretrained(tmp_path, max_shard_size="20KB")
    shards = sorted(set(json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"].values()))
    assert len(shards) > 2
    truncate(tmp_path / shards[1])
    with pytest.raises(OSError, match="truncated or corrupt") as raised:
        NACForClassification.from_pretrained(tmp_path)
    message = str(raised.value)
    assert str(tmp_path / shards[1]) in message and not any(str(tmp_path / s) in message for s in shards[::2])
