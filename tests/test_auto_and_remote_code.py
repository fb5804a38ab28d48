import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    pipeline,
)

from nac_hf import NACByteTokenizer, NACConfig, NACForClassification, NACImageProcessor, NACModel
from nac_test_utils import load_script_inputs, run_load_script


LABELS = {0: "cat", 1: "dog", 2: "bird"}


def image_folder(path, **overrides):
    config = NACConfig.from_preset("tiny", id2label=LABELS, label2id={v: k for k, v in LABELS.items()}, **overrides)
    model = NACForClassification(config).eval()
    model.save_pretrained(path)
    size = config.image_size
    NACImageProcessor(size={"height": size, "width": size}).save_pretrained(path)
    return model


def text_folder(path):
    config = NACConfig.from_preset("tiny", tokenizer_type="byte", id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    model = NACForClassification(config).eval()
    model.save_pretrained(path)
    NACByteTokenizer(model_max_length=config.max_position_embeddings).save_pretrained(path)
    return model


def test_auto_classes_resolve_to_nac(tmp_path):
    model = image_folder(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), NACConfig)
    assert type(AutoModel.from_pretrained(tmp_path)) is NACModel
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is NACForClassification
    assert type(AutoModelForSequenceClassification.from_pretrained(tmp_path)) is NACForClassification
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is NACImageProcessor
    assert isinstance(AutoModel.from_config(NACConfig.from_preset("tiny")), NACModel)
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=pixels).logits, loaded(pixel_values=pixels).logits)
    # The bare model loaded from a classifier checkpoint has the classifier's NAC weights.
    bare = AutoModel.from_pretrained(tmp_path)
    assert torch.equal(bare.generator.codes, model.nac.generator.codes)


def test_auto_tokenizer(tmp_path):
    text_folder(tmp_path)
    assert type(AutoTokenizer.from_pretrained(tmp_path)) is NACByteTokenizer


def test_saved_folder_carries_code_and_auto_map(tmp_path):
    image_folder(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_nac.NACConfig",
        "AutoModel": "modeling_nac.NACModel",
        "AutoModelForImageClassification": "modeling_nac.NACForClassification",
        "AutoModelForSequenceClassification": "modeling_nac.NACForClassification",
    }
    for name in ("configuration_nac.py", "modeling_nac.py", "graph_priors.py", "image_processing_nac.py"):
        assert (tmp_path / name).exists(), name


@pytest.mark.parametrize("kind", ["image", "text"])
def test_remote_code_loads_where_nac_hf_is_not_installed(tmp_path, kind):
    folder = tmp_path / f"nac-{kind}"
    model = (image_folder if kind == "image" else text_folder)(folder)
    result = run_load_script(folder, kind, "remote", cwd=tmp_path)
    processor = (AutoImageProcessor if kind == "image" else AutoTokenizer).from_pretrained(folder)
    with torch.no_grad():
        expected = model(**load_script_inputs(kind, processor)).logits
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, rtol=0, atol=1e-6)
    processor_class = "NACImageProcessor" if kind == "image" else "NACByteTokenizer"
    assert result["classes"] == ["NACConfig", "NACModel", "NACForClassification", processor_class]
    assert all(module.startswith("transformers_modules.") for module in result["modules"])
    assert {entry["label"] for entry in result["pipeline"]} == set(LABELS.values())


def test_image_classification_pipeline(tmp_path):
    model = image_folder(tmp_path)
    classify = pipeline("image-classification", model=str(tmp_path))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30), dtype=np.uint8))  # grayscale
    predictions = classify(image, top_k=3)
    assert [p["label"] for p in predictions] != [] and {p["label"] for p in predictions} == set(LABELS.values())
    pixels = NACImageProcessor(size={"height": 16, "width": 16})(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probs = model(pixel_values=pixels).logits.softmax(-1)[0]
    best = predictions[0]
    assert best["label"] == LABELS[int(probs.argmax())]
    assert best["score"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_text_classification_pipeline(tmp_path):
    model = text_folder(tmp_path)
    classify = pipeline("text-classification", model=str(tmp_path))
    prediction = classify("Neural attentive circuits ✓", top_k=None)
    assert {p["label"] for p in prediction} == set(LABELS.values())
    batch = NACByteTokenizer()("Neural attentive circuits ✓", return_tensors="pt")
    with torch.no_grad():
        probs = model(**batch).logits.softmax(-1)[0]
    best = max(prediction, key=lambda p: p["score"])
    assert best["label"] == LABELS[int(probs.argmax())]
    assert best["score"] == pytest.approx(float(probs.max()), abs=1e-5)
