import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from ddp_worker import pixel_digest
from nac_hf.data import DataArguments
from nac_hf.training import ModelArguments, build_model, build_processor, load_run_data, prepare_datasets
from nac_test_utils import image_dataset_folder, training_args


ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "accelerate_configs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# A launch that runs longer than this has hung: the runs here take seconds.
HANG_SECONDS = 240


def torchrun(script: Path, args: list[str], timeout: int = HANG_SECONDS) -> subprocess.CompletedProcess:
    def command() -> list[str]:
        return [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script), *args,
        ]

    return launch(command, timeout)


def accelerate_launch(config: str, launch_flags: list[str], script: Path, args: list[str],
                      timeout: int = HANG_SECONDS) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file accelerate_configs/<config>.yaml [launch_flags] script [args]`."""
    def command() -> list[str]:
        return [
            sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / f"{config}.yaml"),
            "--main_process_port", str(free_port()), *launch_flags, str(script), *args,
        ]

    return launch(command, timeout)


def launch(command: Callable[[], list[str]], timeout: int) -> subprocess.CompletedProcess:
    """Run a launcher and its processes to the end. A launch still running after `timeout` seconds has hung (as the
    gloo teardown did before `end_distributed` freed the DDP wrapper first): it is stopped with SIGABRT, on which every
    process of it prints its Python stacks (faulthandler), and is run once more on a fresh port, the stacks given as a
    warning. A second hang fails the test with its stacks."""
    for attempt in range(2):
        process = subprocess.Popen(
            command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=launch_env(), cwd=ROOT,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
            return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        except subprocess.TimeoutExpired:
            stderr = stop_hung(process)
        report = f"{' '.join(process.args)} hung for {timeout} s; the stacks of its processes:\n{stderr[-8000:]}"
        if attempt:
            pytest.fail(report)
        warnings.warn(report)


def stop_hung(process: subprocess.Popen) -> str:
    """Abort a hung launch and every process under it (torchrun starts its workers in sessions of their own) and
    return what they wrote to stderr."""
    pids = [process.pid, *descendants(process.pid)]
    for pid in reversed(pids):  # one at a time, workers first, so that their stacks do not interleave
        signal_all([pid], signal.SIGABRT)
        wait_until_ended(pid)
    try:
        return process.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        signal_all(pids, signal.SIGKILL)  # those the abort did not end
        return process.communicate()[1]


def descendants(pid: int) -> list[int]:
    """The processes started by `pid`, by their children, and so on (Linux's /proc)."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            children += [int(child) for child in (task / "children").read_text().split()]
    return [grandchild for child in children for grandchild in (child, *descendants(child))]


def wait_until_ended(pid: int, seconds: float = 10) -> None:
    """Wait, at most `seconds`, for `pid` to end (or to be left unreaped)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX":
                return
        except OSError:
            return
        time.sleep(0.05)


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def launch_env() -> dict:
    # PYTHONFAULTHANDLER: a process aborted as hung prints where each of its threads was.
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONFAULTHANDLER": "1"}


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
    # The DDP wrapper (its gradient reducer holds the gloo group) was freed before the group was destroyed.
    assert [(r["wrapper"], r["wrapper_released"]) for r in ranks] == [("DistributedDataParallel", True)] * 2
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


def test_two_processes_read_disjoint_parts_of_a_stream(tmp_path):
    folder = image_dataset_folder(tmp_path / "images", num_train=64, shards=4)
    run = [*TINY_RUN[:4], "--per_device_train_batch_size", "8", "--save_strategy", "no", "--eval_strategy", "no",
           "--disable_tqdm", "true", "--dataset_name", str(folder), "--streaming", "true", "--max_steps", "3",
           "--dataloader_num_workers", "2", "--output_dir", str(tmp_path / "run")]
    done = torchrun(ROOT / "tests" / "ddp_worker.py", run)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((tmp_path / "run" / f"rank{r}.json").read_text()) for r in range(2)]
    first, second = (set(r["indices"]) for r in ranks)
    assert len(first) == len(second) == 32 and not first & second, "the ranks were served the same examples"
    # Together they are served every example of the stream once, as one process would make them.
    data_args = DataArguments(dataset_name=str(folder))
    model_args = ModelArguments(preset="tiny", config_overrides=TINY_RUN[3])
    data = load_run_data(data_args, training_args(tmp_path / "plain"))
    model = build_model(model_args, data)
    train, _, _ = prepare_datasets(data, build_processor(model_args, model.config, data), data_args, model.config)
    assert first | second == {pixel_digest(example["pixel_values"]) for example in train}
    assert [r["global_step"] for r in ranks] == [3, 3] and ranks[0]["weights"] == ranks[1]["weights"]


@pytest.mark.parametrize("overrides", ["module_dropout=0.3", "exit_training=true"])
def test_ddp_trains_with_module_dropout_or_exit_losses_without_searching_for_unused_parameters(tmp_path, overrides):
    run = [*TINY_RUN, "--output_dir", str(tmp_path)]
    run[3] += "," + overrides
    done = torchrun(ROOT / "tests" / "ddp_worker.py", run)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["find_unused_parameters"] is False and [r["global_step"] for r in ranks] == [6, 6]
    assert ranks[0]["weights"] == ranks[1]["weights"]


def test_a_process_leaves_its_group_at_the_end_of_a_run(tmp_path):
    import torch.distributed as dist

    from nac_hf.training import end_distributed

    end_distributed()  # no group: nothing to leave
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    end_distributed()
    assert not dist.is_initialized()


# What each process of `accelerate launch` finds in its environment: how many processes, which precision, and FSDP.
ENV_DUMP = """import json, os, sys
keys = ("WORLD_SIZE", "ACCELERATE_MIXED_PRECISION", "ACCELERATE_USE_FSDP", "FSDP_VERSION", "FSDP_AUTO_WRAP_POLICY",
        "FSDP_STATE_DICT_TYPE", "FSDP_RESHARD_AFTER_FORWARD", "FSDP_CPU_RAM_EFFICIENT_LOADING")
with open(os.path.join(sys.argv[1], f"rank{os.environ.get('RANK', '0')}.json"), "w") as handle:
    json.dump({key: os.environ.get(key) for key in keys}, handle)
"""


@pytest.mark.parametrize(
    "config, processes, fsdp",
    [
        ("single_gpu_bf16", 1, None),
        ("multi_gpu", 2, None),
        ("fsdp", 2, ("2", "TRANSFORMER_BASED_WRAP", "SHARDED_STATE_DICT")),
    ],
)
def test_each_accelerate_config_launches_the_processes_it_describes(tmp_path, config, processes, fsdp):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(CONFIGS / f"{config}.yaml"))
    assert loaded.num_processes == processes and loaded.mixed_precision == "bf16" and not loaded.use_cpu
    script = tmp_path / "env_dump.py"
    script.write_text(ENV_DUMP)
    done = accelerate_launch(config, [], script, [str(tmp_path)], timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(processes)]
    assert all(r["ACCELERATE_MIXED_PRECISION"] == "bf16" for r in ranks), "Trainer would not train in bf16"
    assert all(r["WORLD_SIZE"] == (str(processes) if processes > 1 else None) for r in ranks)
    if fsdp is None:
        assert all(r["ACCELERATE_USE_FSDP"] in (None, "false") for r in ranks)
    else:
        version, wrap, state_dict = fsdp
        assert all(r["ACCELERATE_USE_FSDP"] == "true" for r in ranks)
        assert ranks[0]["FSDP_VERSION"] == version and ranks[0]["FSDP_AUTO_WRAP_POLICY"] == wrap
        assert ranks[0]["FSDP_STATE_DICT_TYPE"] == state_dict and ranks[0]["FSDP_RESHARD_AFTER_FORWARD"] == "true"
        assert ranks[0]["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true"


HANGING = """import subprocess, sys, time
def waiting():
    time.sleep(600)
if len(sys.argv) == 1:  # in a session of its own, as torchrun starts its workers
    subprocess.Popen([sys.executable, __file__, "worker"], start_new_session=True)
waiting()
"""


def test_a_hung_launch_is_stopped_with_its_stacks_and_fails_when_its_rerun_hangs(tmp_path):
    script = tmp_path / "hanging.py"
    script.write_text(HANGING)
    with pytest.warns(UserWarning, match="hung for 1 s") as warned, pytest.raises(pytest.fail.Exception) as failed:
        launch(lambda: [sys.executable, str(script)], timeout=1)
    for report in (str(warned[0].message), str(failed.value)):
        # both processes, the launcher and the one it started, were aborted where they waited
        assert report.count("in waiting") == 2, report
