"""FSDP2 through Accelerate and `Trainer` with accelerate_configs/fsdp.yaml, on two CPU processes (gloo), in runs of
scripts/train.py: the model sharded by propagator layer and read-in, sharded checkpoints that resume (also as
`--resume_from_checkpoint last`) to the run they interrupted, a final model that loads with a plain `from_pretrained`
and computes what the sharded one computed, and weight averaging (`--ema_decay`) with sharded checkpoints."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nac_hf import NACForClassification
from nac_hf.ema import AVERAGED_WEIGHTS
from nac_hf.training import is_complete_checkpoint
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
# With weight averaging, also evaluated (with the average) at every checkpoint.
EMA = ["--ema_decay", "0.5", "--eval_strategy", "steps", "--eval_steps", "3"]


def launch(*args: str) -> None:
    done = accelerate_launch("fsdp", LAUNCH, WORKER, [*RUN, *args], timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Runs of 6 steps with checkpoints every 3, without and with weight averaging, and each resumed from its step-3
    checkpoint: the first by `--resume_from_checkpoint last` in a folder whose newest checkpoint lacks an index."""
    folders = {name: tmp_path_factory.mktemp(name) for name in ("whole", "resumed", "ema_whole", "ema_resumed")}
    launch("--save_strategy", "steps", "--save_steps", "3", "--output_dir", str(folders["whole"]))
    for step in (3, 6):
        shutil.copytree(folders["whole"] / f"checkpoint-{step}", folders["resumed"] / f"checkpoint-{step}")
    (folders["resumed"] / "checkpoint-6" / "optimizer_0" / ".metadata").unlink()  # as if killed while saving
    launch("--save_strategy", "no", "--output_dir", str(folders["resumed"]), "--resume_from_checkpoint", "last")
    launch(*EMA, "--save_strategy", "steps", "--save_steps", "3", "--output_dir", str(folders["ema_whole"]))
    launch(*EMA, "--save_strategy", "no", "--output_dir", str(folders["ema_resumed"]),
           "--resume_from_checkpoint", str(folders["ema_whole"] / "checkpoint-3"))
    return folders


def ranks(folder: Path) -> list[dict]:
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in range(2)]


def assert_same_model(first: Path, second: Path) -> None:
    """Both runs' sharded models computed the same logits."""
    first, second = (torch.load(folder / "fsdp_logits.pt") for folder in (first, second))
    assert torch.equal(first["pixel_values"], second["pixel_values"])
    torch.testing.assert_close(second["logits"], first["logits"], rtol=1e-5, atol=1e-6)


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
    assert is_complete_checkpoint(checkpoint)
    # `last` passed over the newest checkpoint, whose optimizer part has no index, and set it aside.
    assert not is_complete_checkpoint(runs["resumed"] / "checkpoint-6.incomplete")
    assert not (runs["resumed"] / "checkpoint-6").exists()
    assert [r["steps_run"] for r in ranks(runs["resumed"])] == [3, 3]
    assert [r["global_step"] for r in ranks(runs["resumed"])] == [6, 6]
    # Weights, optimizer moments, schedule, random state and data order all came back: the same model as the run
    # that went through.
    assert_same_model(runs["whole"], runs["resumed"])


def test_the_saved_model_loads_without_fsdp_and_computes_what_the_sharded_one_did(runs):
    for run in ("resumed", "ema_resumed"):
        expected = torch.load(runs[run] / "fsdp_logits.pt")
        model = NACForClassification.from_pretrained(runs[run]).eval()
        with torch.no_grad():
            logits = model(pixel_values=expected["pixel_values"]).logits
        torch.testing.assert_close(logits, expected["logits"], msg=run)
    assert json.loads((runs["resumed"] / "all_results.json").read_text())["eval_samples"] == 32


def test_the_folder_an_fsdp_run_saves_carries_the_nac_code(runs):
    folder = runs["resumed"]
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert (folder / "modeling_nac.py").exists() and not list(folder.glob("_fsdp*.py"))
    assert auto_map["AutoConfig"] == "configuration_nac.NACConfig"
    models = {name: target for name, target in auto_map.items() if name != "AutoConfig"}
    assert models and all(target.startswith("modeling_nac.NAC") for target in models.values()), auto_map


def test_weight_averaging_keeps_the_average_beside_sharded_checkpoints_and_saves_it(runs):
    whole = runs["ema_whole"]
    final = load_file(whole / "model.safetensors")
    for step in (3, 6):
        checkpoint = whole / f"checkpoint-{step}"
        assert is_complete_checkpoint(checkpoint) and not (checkpoint / "model.safetensors").exists()
        averaged = load_file(checkpoint / AVERAGED_WEIGHTS)  # gathered: whole tensors, of every trained parameter
        assert averaged.keys() == {name for name, value in final.items() if value.is_floating_point()}
        assert all(averaged[name].shape == final[name].shape for name in averaged)
    # The saved model is the average of the last step, not the training weights (those of the run without it).
    for name, value in load_file(whole / "checkpoint-6" / AVERAGED_WEIGHTS).items():
        torch.testing.assert_close(final[name], value, rtol=0, atol=0, msg=name)
    plain = load_file(runs["whole"] / "model.safetensors")
    assert not torch.allclose(final["nac.generator.codes"], plain["nac.generator.codes"])
    # Evaluation at step 6 saw the average: the model saved, evaluated once more at the end.
    logged = [entry["eval_loss"] for entry in json.loads((whole / "trainer_state.json").read_text())["log_history"]
              if "eval_loss" in entry]
    final_eval = json.loads((whole / "eval_results.json").read_text())["eval_loss"]
    assert len(logged) == 2 and logged[-1] == pytest.approx(final_eval, rel=1e-6)
    # A run resumed from step 3 restored the average and the training weights: the same model at step 6.
    assert [r["steps_run"] for r in ranks(runs["ema_resumed"])] == [3, 3]
    assert_same_model(whole, runs["ema_resumed"])
