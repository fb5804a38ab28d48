import json
import os
import socket
import subprocess
import sys
from pathlib import Path



ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(script: Path, args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script), *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


TINY_RUN = [
    "--preset", "tiny",
    "--config_overrides", "image_size=8,patch_size=2,num_channels=1,graph_fit_steps=50",
    "--max_train_samples", "96",
    "--max_eval_samples", "32",
    "--per_device_train_batch_size", "8",
    "--num_train_epochs", "1",
    "--save_strategy", "no",
    "--eval_strategy", "no",
    "--disable_tqdm", "true",
]


def test_two_process_ddp_ranks_shard_the_data_and_agree(tmp_path):
    done = torchrun(ROOT / "tests" / "ddp_worker.py", [*TINY_RUN, "--output_dir", str(tmp_path)])
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert all("DISTRIBUTED" in r["parallel_mode"] for r in ranks)
    assert ranks[0]["find_unused_parameters"] is False
    first, second = (set(r["indices"]) for r in ranks)
    assert first and second and not first & second, "both ranks were served the same examples"
    assert first | second == set(range(96))
    # 96 examples, 8 per device, 2 devices: an effective batch of 16, so 6 optimizer steps.
    assert [r["global_step"] for r in ranks] == [6, 6]
    assert ranks[0]["weights"] == ranks[1]["weights"], "the ranks ended with different weights"


def test_train_script_runs_under_torchrun(tmp_path):
    done = torchrun(ROOT / "scripts" / "train.py", [*TINY_RUN, "--output_dir", str(tmp_path), "--eval_strategy", "epoch"])
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((tmp_path / "all_results.json").read_text())
    assert "eval_top1_accuracy" in results and "train_loss" in results
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "preprocessor_config.json").exists()
