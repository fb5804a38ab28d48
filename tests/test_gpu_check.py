"""The GPU check: without a CUDA GPU it refuses before running anything, and the CUDA tests it runs fail there instead
of skipping; its training and speed commands are ones the scripts take; its synthetic CIFAR reads as CIFAR does."""

import os
import re
import subprocess
import sys

import pytest
import torch

from benchmarks import speed
from benchmarks.common import argument_parser
from benchmarks.gpu_check import (
    CIFAR_LABELS,
    REQUIRE_CUDA,
    GPUCheckArguments,
    junit_counts,
    speed_command,
    train_command,
    write_synthetic_cifar,
)
from nac_hf.data import DataArguments, load_classification_data
from nac_test_utils import ROOT


without_a_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens on a machine without a GPU")


@without_a_gpu
def test_the_gpu_check_refuses_to_run_without_a_gpu(tmp_path):
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--output_dir", str(tmp_path / "check")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "needs a CUDA GPU" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "check").exists(), "it ran something before refusing"


@without_a_gpu
def test_the_cuda_tests_it_runs_fail_without_a_gpu_instead_of_skipping(tmp_path):
    junit = tmp_path / "junit.xml"
    command = [sys.executable, "-m", "pytest", "tests/test_cuda.py", "-q", "-p", "no:cacheprovider", "-k",
               "bf16_training_step", f"--junitxml={junit}"]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, **REQUIRE_CUDA}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0 and "sees no CUDA GPU" in done.stdout, done.stdout[-2000:]
    counts = junit_counts(junit)
    assert counts["skipped"] == 0 and counts["failures"] + counts["errors"] == counts["tests"] == 1
    # Without the variable (a CPU run of the suite), the same test is skipped.
    plain = subprocess.run(command, cwd=ROOT, env={k: v for k, v in os.environ.items() if k not in REQUIRE_CUDA},
                           capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and junit_counts(junit)["skipped"] == 1, plain.stdout[-2000:]


def test_its_commands_are_ones_the_scripts_take(tmp_path):
    args = GPUCheckArguments(output_dir=str(tmp_path))
    flags = subprocess.run([sys.executable, "scripts/train.py", "--help"], cwd=ROOT, capture_output=True,
                           text=True).stdout
    command = train_command(args, tmp_path / "data", tmp_path / "train")
    assert command[1] == "scripts/train.py" and command[command.index("--recipe") + 1] == "cifar"
    unknown = [arg for arg in command if arg.startswith("--") and not re.search(rf"{arg}\b", flags)]
    assert not unknown, f"scripts/train.py takes no {unknown}"
    assert command[command.index("--bf16") + 1] == command[command.index("--torch_compile") + 1] == "true"
    command = speed_command(args, tmp_path / "speed.json")
    assert command[1:3] == ["-m", "benchmarks.speed"]
    (parsed,) = argument_parser(speed.__doc__, speed.SpeedArguments).parse_args_into_dataclasses(command[3:])
    assert (parsed.device, parsed.dtype, parsed.compile) == ("cuda", "bfloat16", True)


def test_its_synthetic_cifar_reads_as_32_by_32_colour_images_of_the_ten_cifar_labels(tmp_path):
    folder = write_synthetic_cifar(tmp_path / "cifar", train_per_label=2, eval_per_label=1)
    data = load_classification_data(
        DataArguments(train_dir=str(folder / "train"), validation_dir=str(folder / "validation"))
    )
    assert data.label_names == list(CIFAR_LABELS) and data.modality == "image"
    assert [len(data.dataset[split]) for split in ("train", "validation")] == [20, 10]
    image = data.dataset["train"][0][data.input_column]
    assert image.size == (32, 32) and image.mode == "RGB"
