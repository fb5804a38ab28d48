"""FSDP2 through Accelerate and `Trainer` with accelerate_configs/fsdp.yaml, on two CPU processes (gloo): the model
sharded by propagator layer and read-in, sharded checkpoints that resume to the run they interrupted, and a final
model that loads without FSDP and computes what the sharded one computed."""

import json
from pathlib import Path

import pytest
import torch

from nac_hf import NACForClassification
from nac_test_utils import TINY
from test_distributed import ROOT, accelerate_launch


WORKER = ROOT / "tests" / "fsdp_worker.py"
# On CPUs: two processes, no mixed precision (the config's bf16 is for GPUs).
LAUNCH = ["--num_processes", "2", "--mixed_precision", "no"]
# 96 digits, 8 per process and step: 6 steps an epoch; a sharded checkpoint after step 3 and step 6.
RUN = [
    "--use_cpu", "true", "--preset", "tiny", "--config_overrides", TINY, "--max_train_samples", "96",
    "--max_eval_samples", "32", "--per_device_train_batch_size", "8", "--max_steps", "6", "--eval_strategy", "no",
    "--disable_tqdm", "true",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A run of 6 steps with checkpoints every 3, and a run resumed from its step-3 checkpoint to step 6."""
    folders = {name: tmp_path_factory.mktemp(name) for name in ("whole", "resumed")}
    whole = [*RUN, "--save_strategy", "steps", "--save_steps", "3", "--output_dir", str(folders["whole"])]
    resumed = [*RUN, "--save_strategy", "no", "--output_dir", str(folders["resumed"]),
               "--resume_from_checkpoint", str(folders["whole"] / "checkpoint-3")]
    for args in (whole, resumed):
        done = accelerate_launch("fsdp", LAUNCH, WORKER, args, timeout=300)
        assert done.returncode == 0, done.stderr[-4000:]
    return folders


def ranks(folder: Path) -> list[dict]:
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in range(2)]


def test_fsdp_shards_every_parameter_by_propagator_layer_and_read_in(runs):
    first, second = ranks(runs["whole"])
    assert first["fsdp"] and second["fsdp"], "Accelerate trained without FSDP"
    # The transformer-based wrap found the layers of the model's `_no_split_modules`; the model is the root unit.
    assert {"Propagator", "ReadIn", "NACForClassification"} <= set(first["units"])
    assert first["sharded_parameters"] == first["parameters"]
    # Each process holds about half of every parameter, and together all of it.
    assert 0.4 < first["local_fraction"] < 0.6
    assert first["local_fraction"] + second["local_fraction"] == pytest.approx(1.0)


def test_a_sharded_checkpoint_resumes_to_the_run_it_interrupted(runs):
    checkpoint = runs["whole"] / "checkpoint-3"
    assert not (checkpoint / "model.safetensors").exists(), "the checkpoint was not sharded"
    for part in ("pytorch_model_fsdp_0", "optimizer_0"):  # one file per process, and the index written last
        assert sorted(p.name for p in (checkpoint / part).iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert [r["steps_run"] for r in ranks(runs["resumed"])] == [3, 3]
    assert [r["global_step"] for r in ranks(runs["resumed"])] == [6, 6]
    # Weights, optimizer moments, schedule, random state and data order all came back: the same model as the run
    # that went through.
    whole, resumed = (torch.load(runs[name] / "fsdp_logits.pt") for name in ("whole", "resumed"))
    assert torch.equal(whole["pixel_values"], resumed["pixel_values"])
    torch.testing.assert_close(resumed["logits"], whole["logits"], rtol=1e-5, atol=1e-6)


def test_the_saved_model_loads_without_fsdp_and_computes_what_the_sharded_one_did(runs):
    expected = torch.load(runs["resumed"] / "fsdp_logits.pt")
    model = NACForClassification.from_pretrained(runs["resumed"]).eval()
    with torch.no_grad():
        logits = model(pixel_values=expected["pixel_values"]).logits
    torch.testing.assert_close(logits, expected["logits"])
    assert json.loads((runs["resumed"] / "all_results.json").read_text())["eval_samples"] == 32


@pytest.mark.xfail(strict=True, reason="under FSDP2 the model's class is torch's FSDPNACForClassification, so "
                   "save_pretrained copies torch's _fsdp_*.py instead of modeling_nac.py and maps the Auto class to it")
def test_the_folder_an_fsdp_run_saves_carries_the_nac_code(runs):
    folder = runs["resumed"]
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert (folder / "modeling_nac.py").exists() and not list(folder.glob("_fsdp*.py"))
    assert all(target.split(".")[0] in ("configuration_nac", "modeling_nac") for target in auto_map.values())
