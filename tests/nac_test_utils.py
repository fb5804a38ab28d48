"""Inputs and helpers shared by the tests."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import TrainingArguments

from nac_hf import NACConfig
from nac_hf.training import training_arguments_defaults


ROOT = Path(__file__).resolve().parents[1]

def image_dataset_folder(folder, num_train: int = 64, num_validation: int = 16, shards: int = 4) -> Path:
    """A local dataset repository of distinct random 8×8 grayscale images with a ClassLabel of 3 names, the training
    split in `shards` parquet files: what `load_dataset(folder)` reads like a Hub dataset, also as a stream."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    rng = np.random.default_rng(0)
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b", "c"])})

    def split(count: int) -> Dataset:
        images = [Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)) for _ in range(count)]
        return Dataset.from_dict({"image": images, "label": [i % 3 for i in range(count)]}, features=features)

    (Path(folder) / "data").mkdir(parents=True)
    train = split(num_train)
    for index in range(shards):
        train.shard(shards, index, contiguous=True).to_parquet(
            Path(folder) / "data" / f"train-{index:05d}-of-{shards:05d}.parquet"
        )
    split(num_validation).to_parquet(Path(folder) / "data" / "validation-00000-of-00001.parquet")
    return Path(folder)


def parameters_moved_by_training(model, pixel_values: torch.Tensor, output_dir) -> set[str]:
    """Train `model` for 3 `Trainer` steps (AdamW, weight decay 0.1) on these images with labels 0, 1, 2, 0, ...;
    the names of the parameters that changed at all."""
    from datasets import Dataset
    from transformers import Trainer

    labels = [i % 4 if i % 4 < 3 else 0 for i in range(len(pixel_values))]
    examples = Dataset.from_dict({"pixel_values": pixel_values.tolist(), "labels": labels}).with_format("torch")
    args = TrainingArguments(
        output_dir=str(output_dir), max_steps=3, per_device_train_batch_size=8, learning_rate=1e-2, weight_decay=0.1,
        report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True,
    )
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    Trainer(model=model, args=args, train_dataset=examples).train()
    return {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}


def tiny(**overrides) -> NACConfig:
    """The `tiny` preset with three labels: the model most tests build."""
    return NACConfig.from_preset("tiny", **{"num_labels": 3, **overrides})


# A small image NAC for the digits (8×8 grayscale), quick to train in tests.
TINY = "image_size=8,patch_size=2,num_channels=1,graph_fit_steps=50"


# One model of every kind a NAC can be: the four tokenizer types, the conditional circuit generator with several
# output modules (confidence pooling), and processors that read the input themselves, as overrides of a preset.
MODEL_KINDS = {
    "patch-conditional-pooled": dict(conditioning_dim=24, conditional_signatures=True, num_output_modules=2),
    "processors-read-in": dict(processors_read_in=True, num_input_modules=8, num_processor_modules=8),
    "conv": dict(tokenizer_type="conv"),
    "byte": dict(tokenizer_type="byte", byte_context_layers=1),
    "point": dict(tokenizer_type="point"),
}


def run_checkpoint_script(model, name: str, folder: Path, *arguments: str) -> dict:
    """Save `model` (an 8×8 gray image classifier) with its image processor to `folder / "ckpt"`, run
    `python -m benchmarks.{name}` on it with `--output_dir folder / "out"` and `arguments` in a fresh process, and
    return the `{name}.json` it wrote."""
    from nac_hf import NACImageProcessor

    model.save_pretrained(folder / "ckpt")
    NACImageProcessor(size={"height": 8, "width": 8}, num_channels=1).save_pretrained(folder / "ckpt")
    command = [sys.executable, "-m", f"benchmarks.{name}", "--checkpoint", str(folder / "ckpt"), "--output_dir",
               str(folder / "out"), *arguments]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((folder / "out" / f"{name}.json").read_text())


def script(name: str):
    """A script of `scripts/` as a module, so that tests call its functions as the script does."""
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_run(model_args, data_args, training_args) -> dict:
    """A whole run of `scripts/train.py` (data, model, train, evaluate, record, publish); its metrics."""
    return script("train").run(model_args, data_args, training_args)


def training_args(output_dir, **overrides) -> TrainingArguments:
    """The script's TrainingArguments, shortened for tests: one epoch, batch 32, no saving or evaluation per epoch."""
    settings = {
        **training_arguments_defaults(),
        "output_dir": str(output_dir),
        "num_train_epochs": 1,
        "per_device_train_batch_size": 32,
        "logging_steps": 5,
        "disable_tqdm": True,
        "save_strategy": "no",
        "eval_strategy": "no",
        **overrides,
    }
    return TrainingArguments(**settings)


def example_inputs(config: NACConfig, batch_size: int = 3, seed: int = 0) -> dict:
    """Valid model inputs for the config's tokenizer type."""
    generator = torch.Generator().manual_seed(seed)
    if config.modality == "image":
        size = config.image_size
        return {"pixel_values": torch.randn(batch_size, config.num_channels, size, size, generator=generator)}
    if config.modality == "text":
        length = 12
        input_ids = torch.randint(5, config.vocab_size, (batch_size, length), generator=generator)
        attention_mask = torch.ones(batch_size, length, dtype=torch.long)
        input_ids[0, 8:] = config.pad_token_id
        attention_mask[0, 8:] = 0
        return {"input_ids": input_ids, "attention_mask": attention_mask}
    return {"points": torch.randn(batch_size, 40, 3, generator=generator)}


# Loads a saved NAC (a folder or a repository id) the way a user does, in a fresh process, and prints what it got:
# argv = source, kind ("image" or "text"), "remote" (nac_hf not importable, trust_remote_code=True) or "installed".
LOAD_SCRIPT = """
import json, sys
source, kind, how = sys.argv[1:4]
if how == "remote":
    sys.modules["nac_hf"] = None  # as on a machine without nac_hf
else:
    import nac_hf  # noqa: F401
import numpy as np, torch
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, AutoModelForSequenceClassification
from transformers import AutoImageProcessor, AutoTokenizer, pipeline
remote = {"trust_remote_code": True} if how == "remote" else {}
config = AutoConfig.from_pretrained(source, **remote)
bare = AutoModel.from_pretrained(source, **remote)
if kind == "image":
    model = AutoModelForImageClassification.from_pretrained(source, **remote).eval()
    processor = AutoImageProcessor.from_pretrained(source, **remote)
    sample = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24), dtype=np.uint8))
    inputs = processor(sample, return_tensors="pt")
    task = "image-classification"
else:
    model = AutoModelForSequenceClassification.from_pretrained(source, **remote).eval()
    processor = AutoTokenizer.from_pretrained(source, **remote)
    sample = "Neural attentive circuits, published ✓"
    inputs = processor([sample], return_tensors="pt")
    task = "text-classification"
with torch.no_grad():
    logits = model(**inputs).logits
predictions = pipeline(task, model=source, **remote)(sample, top_k=len(config.id2label))
print(json.dumps({
    "logits": logits.tolist(),
    "classes": [type(config).__name__, type(bare).__name__, type(model).__name__, type(processor).__name__],
    "modules": sorted({type(model).__module__, type(bare).__module__}),
    "pipeline": predictions,
}))
"""


def run_python(code: str, *args, cwd, timeout: int = 300, **env) -> dict:
    """Run `code` in a fresh Python process (Hub offline, its own remote-code cache under `cwd`, `env` added to the
    environment) and return the JSON object it prints last."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(Path(cwd) / "modules"), **env}
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True, text=True, env=environment, cwd=cwd, timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Do you wish to run the custom code" not in done.stdout  # loading never stops to ask
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_load_script(source, kind: str, how: str, cwd, **env) -> dict:
    """Run LOAD_SCRIPT in a fresh process: how a user loads `source` ("remote": without nac_hf)."""
    return run_python(LOAD_SCRIPT, source, kind, how, cwd=cwd, **env)


def load_script_inputs(kind: str, processor) -> dict:
    """The inputs LOAD_SCRIPT gives the model, made here with `processor`."""
    if kind == "image":
        sample = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24), dtype=np.uint8))
        return processor(sample, return_tensors="pt")
    return processor(["Neural attentive circuits, published ✓"], return_tensors="pt")
