import json
import os
import subprocess
import sys
import textwrap

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


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["nac_hf"] = None  # nac_hf is not importable in this process
    import json, torch
    from transformers import AutoModel, AutoModelForImageClassification, AutoModelForSequenceClassification
    from transformers import AutoImageProcessor, AutoTokenizer, pipeline
    folder, kind = sys.argv[1], sys.argv[2]
    try:
        import nac_hf  # noqa: F401
        raise SystemExit("nac_hf should not be importable here")
    except ImportError:
        pass
    result = {}
    if kind == "image":
        model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
        bare = AutoModel.from_pretrained(folder, trust_remote_code=True)
        processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        pixels = torch.load(folder + "/pixels.pt")
        with torch.no_grad():
            result["logits"] = model(pixel_values=pixels).logits.tolist()
        result["bare"] = type(bare).__name__
        result["processor"] = type(processor).__name__
        classify = pipeline("image-classification", model=folder, trust_remote_code=True)
        from PIL import Image
        result["pipeline"] = classify(Image.new("RGB", (20, 20), (120, 30, 200)))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
        batch = tokenizer(["héllo wörld", "a"], padding=True, return_tensors="pt")
        with torch.no_grad():
            result["logits"] = model(**batch).logits.tolist()
        result["module"] = type(model).__module__
        classify = pipeline("text-classification", model=folder, trust_remote_code=True)
        result["pipeline"] = classify("remote code works")
    print(json.dumps(result))
    """
)


def run_without_nac_hf(folder, kind: str) -> dict:
    env = {**os.environ, "HF_MODULES_CACHE": str(folder.parent / "modules"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(folder), kind],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder.parent,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_remote_code_loads_images_where_nac_hf_is_not_installed(tmp_path):
    folder = tmp_path / "nac-image"
    model = image_folder(folder)
    pixels = torch.randn(2, 3, 16, 16)
    torch.save(pixels, folder / "pixels.pt")
    result = run_without_nac_hf(folder, "image")
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, rtol=0, atol=1e-6)
    assert result["bare"] == "NACModel" and result["processor"] == "NACImageProcessor"
    assert {entry["label"] for entry in result["pipeline"]} <= set(LABELS.values())


def test_remote_code_loads_text_where_nac_hf_is_not_installed(tmp_path):
    folder = tmp_path / "nac-text"
    model = text_folder(folder)
    result = run_without_nac_hf(folder, "text")
    batch = NACByteTokenizer()(["héllo wörld", "a"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch).logits
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, rtol=0, atol=1e-6)
    assert "nac_hf" not in result["module"]
    assert result["pipeline"][0]["label"] in LABELS.values()


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
