"""Published NAC folders load where only torch, transformers and pillow are installed.

Two steps, in two environments (`.ci/run` runs both):

    python tests/bare_env/check_bare_load.py assemble OUT   # the full environment, with nac_hf
    python tests/bare_env/check_bare_load.py check OUT      # a venv with only torch, transformers, pillow

`assemble` publishes tiny untrained models with `nac_hf.hub.publish(..., dry_run=...)`, the assembly that
`scripts/push_to_hub.py` uploads: an image classifier with its image processor, a byte-text classifier with its
tokenizer and a point-cloud classifier; and it saves (`save_pretrained`) a point-cloud classifier with a
ring-of-cliques graph regulariser, whose graphon is made when it loads and whose evaluation forward pass needs no
scipy (the regulariser's node matching runs in training or when labels are given). Beside each folder, `expected.json` holds the
inputs and what the original model answers.

`check` loads every folder through `AutoConfig`, `AutoModel`, the task's Auto class (or, for points, the class the
`auto_map` names) and `pipeline(...)`, all with `trust_remote_code=True`, and compares with `expected.json`. It first
makes sure that this environment is bare: nac_hf, scipy, networkx, scikit-learn and matplotlib cannot be imported.
This file imports only what a bare environment has at module level; nac_hf is imported inside `assemble`.
"""

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


NOT_IN_A_BARE_INSTALL = ("nac_hf", "scipy", "networkx", "sklearn", "matplotlib")
TEXT = "Neural attentive circuits, loaded bare ✓"
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def inputs_of(kind: str) -> dict:
    """The raw inputs of a folder's check, the same in both environments (written to expected.json)."""
    generator = np.random.default_rng(0)
    if kind == "image":
        return {"image": generator.integers(0, 256, (20, 20, 3)).tolist()}
    if kind == "text":
        return {"text": TEXT}
    return {"points": generator.standard_normal((2, 32, 3)).round(4).tolist()}


def model_inputs(kind: str, raw: dict, processor) -> tuple[dict, object]:
    """Model inputs made with `processor`, and the input the pipeline takes."""
    if kind == "image":
        from PIL import Image

        image = Image.fromarray(np.array(raw["image"], dtype=np.uint8))
        return processor(image, return_tensors="pt"), image
    if kind == "text":
        return processor([raw["text"]], return_tensors="pt"), raw["text"]
    return {"points": torch.tensor(raw["points"], dtype=torch.float32)}, None


# ------------------------------------------------------------------------------------------------------------------
# In the full environment


def assemble(out: Path) -> None:
    from nac_hf import NACByteTokenizer, NACConfig, NACForClassification, NACImageProcessor
    from nac_hf.hub import publish

    tiny = {"graph_fit_steps": 50}
    configs = {
        "image": NACConfig.from_preset("tiny", num_labels=3, **tiny),
        "text": NACConfig.from_preset("tiny", tokenizer_type="byte", num_labels=2, **tiny),
        "points": NACConfig.from_preset("tiny", tokenizer_type="point", num_labels=4, **tiny),
        "points-regularised": NACConfig.from_preset(
            "tiny", tokenizer_type="point", num_labels=4, graph_regularizer="ring-of-cliques",
            graph_regularizer_weight=0.1, graph_num_groups=4, **tiny,
        ),
    }
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nac-bare-") as scratch:
        for name, config in configs.items():
            kind = name.split("-")[0]
            config.id2label = {i: f"{name}-class-{i}" for i in range(config.num_labels)}
            config.label2id = {label: i for i, label in config.id2label.items()}
            torch.manual_seed(0)
            model = NACForClassification(config).eval()
            raw = inputs_of(kind)
            expected = {"kind": kind, "inputs": raw, "classes": ["NACConfig", "NACModel", "NACForClassification"]}
            processor = None
            if config.graph_regularizer != "none":
                # Loading makes the regulariser's graphon: checked on the folder save_pretrained writes.
                folder = out / name
                model.save_pretrained(folder)
                expected["graph_target"] = model.nac.graph_target.tolist()
            else:
                if kind == "image":
                    size = {"height": config.image_size, "width": config.image_size}
                    processor = NACImageProcessor(size=size, num_channels=config.num_channels)
                elif kind == "text":
                    processor = NACByteTokenizer(model_max_length=config.max_position_embeddings)
                checkpoint = Path(scratch) / name
                model.save_pretrained(checkpoint)
                if processor is not None:
                    processor.save_pretrained(checkpoint)
                folder = Path(publish(checkpoint, f"nac-bare/{name}", dry_run=out / name))
            inputs, _ = model_inputs(kind, raw, processor)
            with torch.no_grad():
                expected["logits"] = model(**inputs).logits.tolist()
            (folder / "expected.json").write_text(json.dumps(expected))
            print(f"assembled {folder}")


# ------------------------------------------------------------------------------------------------------------------
# In the bare environment


def check_environment() -> None:
    present = [name for name in NOT_IN_A_BARE_INSTALL if importlib.util.find_spec(name) is not None]
    if present:
        sys.exit(f"not a bare environment: {', '.join(present)} can be imported; run this in a venv with only "
                 "torch, transformers and pillow")


def check(out: Path) -> None:
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer, pipeline
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    check_environment()
    remote = {"trust_remote_code": True}
    folders = sorted(path.parent for path in out.glob("*/expected.json"))
    if not folders:
        sys.exit(f"no assembled folders in {out}; run `assemble {out}` first, with nac_hf installed")
    for folder in folders:
        expected = json.loads((folder / "expected.json").read_text())
        kind = expected["kind"]
        config = AutoConfig.from_pretrained(folder, **remote)
        bare = AutoModel.from_pretrained(folder, **remote).eval()
        if kind == "points":  # no pipeline task: the classifier the auto_map names
            auto_class = config.auto_map["AutoModelForImageClassification"]
            model_class = get_class_from_dynamic_module(auto_class, folder)
        else:
            task_auto = "AutoModelForImageClassification" if kind == "image" else "AutoModelForSequenceClassification"
            model_class = getattr(transformers, task_auto)
        model = model_class.from_pretrained(folder, **remote).eval()
        classes = [type(config).__name__, type(bare).__name__, type(model).__name__]
        assert classes == expected["classes"], f"{folder.name}: loaded {classes}, expected {expected['classes']}"
        modules = {type(config).__module__, type(bare).__module__, type(model).__module__}
        assert all(module.startswith("transformers_modules.") for module in modules), modules
        if "graph_target" in expected:
            torch.testing.assert_close(bare.graph_target, torch.tensor(expected["graph_target"]), rtol=0, atol=0)
            torch.testing.assert_close(model.nac.graph_target, bare.graph_target, rtol=0, atol=0)
        processor = None
        if kind == "image":
            processor = AutoImageProcessor.from_pretrained(folder, **remote)
        elif kind == "text":
            processor = AutoTokenizer.from_pretrained(folder, **remote)
        inputs, sample = model_inputs(kind, expected["inputs"], processor)
        with torch.no_grad():
            logits = model(**inputs).logits
            pooled = bare(**inputs).pooler_output
        reference = torch.tensor(expected["logits"])
        torch.testing.assert_close(logits, reference, **TOLERANCE)
        assert pooled.shape == (logits.shape[0], config.hidden_size)
        checked = "AutoConfig, AutoModel, " + type(model).__name__
        if processor is not None:
            task = "image-classification" if kind == "image" else "text-classification"
            answers = pipeline(task, model=str(folder), **remote)(sample, top_k=config.num_labels)
            scores = reference[0].softmax(-1)
            want = {config.id2label[i]: float(scores[i]) for i in range(config.num_labels)}
            got = {answer["label"]: answer["score"] for answer in answers}
            assert got.keys() == want.keys(), f"{folder.name}: pipeline labels {sorted(got)}"
            assert all(abs(got[label] - want[label]) < 1e-4 for label in want), f"{folder.name}: {got} vs {want}"
            checked += f", {type(processor).__name__}, pipeline({task!r})"
        print(f"{folder.name}: {checked} give the original's outputs (max |Δlogit| "
              f"{float((logits - reference).abs().max()):.1e})")
    print(f"{len(folders)} folders load bare (torch {torch.__version__}, transformers {transformers.__version__})")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("assemble", "check"):
        sys.exit(__doc__)
    from transformers.utils import logging

    logging.set_verbosity_error()  # the load reports of AutoModel on a classifier's folder, progress bars
    logging.disable_progress_bar()
    {"assemble": assemble, "check": check}[sys.argv[1]](Path(sys.argv[2]).resolve())
