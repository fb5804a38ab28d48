"""Inputs and helpers shared by the tests."""

from pathlib import Path

import torch
from transformers import TrainingArguments

from nac_hf import NACConfig
from nac_hf.training import training_arguments_defaults


# A small image NAC for the digits (8×8 grayscale), quick to train in tests.
TINY = "image_size=8,patch_size=2,num_channels=1,graph_fit_steps=50"


# One model of every kind a NAC can be: the four tokenizer types, and the conditional circuit generator with
# several output modules (confidence pooling), as overrides of a preset.
MODEL_KINDS = {
    "patch-conditional-pooled": dict(conditioning_dim=24, conditional_signatures=True, num_output_modules=2),
    "conv": dict(tokenizer_type="conv"),
    "byte": dict(tokenizer_type="byte"),
    "point": dict(tokenizer_type="point"),
}


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
    if config.tokenizer_type in ("patch", "conv"):
        size = config.image_size
        return {"pixel_values": torch.randn(batch_size, config.num_channels, size, size, generator=generator)}
    if config.tokenizer_type == "byte":
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


def run_load_script(source, kind: str, how: str, cwd, **env) -> dict:
    """Run LOAD_SCRIPT in a fresh process with `env` added to the environment; its printed result."""
    import json
    import os
    import subprocess
    import sys

    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(Path(cwd) / "modules"), **env}
    done = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(source), kind, how],
        capture_output=True, text=True, env=environment, cwd=cwd, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Do you wish to run the custom code" not in done.stdout  # loading never stops to ask
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_script_inputs(kind: str, processor) -> dict:
    """The inputs LOAD_SCRIPT gives the model, made here with `processor`."""
    import numpy as np
    from PIL import Image

    if kind == "image":
        sample = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24), dtype=np.uint8))
        return processor(sample, return_tensors="pt")
    return processor(["Neural attentive circuits, published ✓"], return_tensors="pt")
