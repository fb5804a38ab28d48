"""The speed benchmark: what it measures, side by side with the baselines it builds at the NAC's FLOP count."""

import json
import subprocess
import sys

import pytest
import torch

from benchmarks.common import flop_counter_mode, flops_per_example, train_flops_per_example
from benchmarks.speed import dense_bf16_peak_tflops, matched_baseline, measure, nac_model
from nac_test_utils import ROOT


def test_a_baseline_is_sized_to_the_flops_it_is_given():
    pixels = torch.randn(1, 3, 32, 32)
    for target in (0.5e9, 1.5e9):
        model, layers = matched_baseline("vit", target, num_labels=10, num_channels=3, image_size=32, patch_size=4)
        per_layer = flops_per_example(matched_baseline("vit", 0, 10, 3, 32, 4)[0], pixels)
        assert abs(flops_per_example(model, pixels) - target) <= per_layer  # within one layer of the target
    assert matched_baseline("vit", 1.5e9, 10, 3, 32, 4)[1] > matched_baseline("vit", 0.5e9, 10, 3, 32, 4)[1]


@pytest.mark.parametrize("groups", [1, 8])
def test_a_convolutions_backward_pass_counts_twice_the_forwards_flops(groups):
    # one product for the input's gradient and one for the weight's, each as large as the forward's, for grouped
    # convolutions too (torch's own formula counts the weight's as if there were one group)
    conv = torch.nn.Conv2d(8, 16, 7, padding=3, groups=groups)
    pixels = torch.randn(2, 8, 12, 12, requires_grad=True)
    with flop_counter_mode() as forward:
        conv(pixels)
    with flop_counter_mode() as both:
        conv(pixels).sum().backward()
    assert forward.get_total_flops() == 2 * 2 * 16 * (8 // groups) * 49 * 144
    assert both.get_total_flops() == 3 * forward.get_total_flops()


def test_the_training_flops_of_a_vit_count_its_attentions_backward_pass():
    # on a CPU, SDPA's backward pass is a kernel torch's counter has no formula of its own for; without it a ViT's
    # training step counted 2.8 times its forward's FLOPs, the attention's backward left out
    model = matched_baseline("vit", 0, num_labels=10, num_channels=3, image_size=32, patch_size=4)[0]
    pixels, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    assert train_flops_per_example(model, pixels, labels) / flops_per_example(model, pixels) > 2.95


def test_measure_reports_times_flops_and_memory():
    torch.manual_seed(0)
    model = nac_model("tiny")
    pixels, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 0, 1])
    before = [p.detach().clone() for p in model.parameters()]
    result = measure(model, pixels, labels, repeats=1)
    assert result["eval_s"] > 0 and result["train_s"] > 0 and result["peak_rss_mb"] > 0
    assert result["train_page_faults_mb"] >= 0
    assert result["train_over_eval"] == pytest.approx(result["train_s"] / result["eval_s"])  # one turn: its ratio
    # the GEMM rate of the same turn, and the eval forward's time over its FLOPs' time at that rate
    assert result["gemm_gflops"] > 0
    assert result["eval_over_gemm_bound"] == pytest.approx(
        result["eval_s"] / (result["gflop_per_example"] * 4 / result["gemm_gflops"])
    )
    assert result["gflop_per_example"] == pytest.approx(flops_per_example(model, pixels) / 1e9)
    train_flops = train_flops_per_example(model, pixels, labels)
    assert result["train_gflop_per_example"] == pytest.approx(train_flops / 1e9)
    # a backward pass takes two products for each of the forward's (the first layer's input needs no gradient)
    assert 2.5 < result["train_over_eval_flops"] < 3.5
    assert result["train_gflops"] == pytest.approx(train_flops * 4 / result["train_s"] / 1e9)
    # the step in its parts: the training forward, timed apart from its backward pass
    assert result["train_forward_s"] > 0 and result["backward_s"] > 0 and result["backward_over_train_forward"] > 0
    assert all(p.grad is None for p in model.parameters())  # counting left no gradients behind
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))  # the step did train


def test_the_script_writes_every_figure(tmp_path):
    output = tmp_path / "speed.json"
    command = [sys.executable, "-m", "benchmarks.speed", "--preset", "tiny", "--batch_size", "2",
               "--repeats", "1", "--baselines", "vit", "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    for key in ("eval_s", "train_s", "gflop_per_example", "gemm_gflops", "eval_over_gemm_bound", "peak_rss_mb",
                "train_gflop_per_example", "train_over_eval_flops", "train_gflops", "train_forward_s",
                "backward_s", "backward_over_train_forward"):
        assert result[key] > 0, key
    assert (result["device"], result["dtype"]) == ("cpu", "float32")
    (vit,) = result["baselines"]
    assert vit["model"].startswith("ViTForImageClassification") and vit["train_s"] > 0
    assert vit["gemm_gflops"] > 0 and vit["eval_over_gemm_bound"] > 0  # each model beside its own GEMM turns
    assert "| NAC tiny |" in done.stdout and "| eval / GEMM bound |" in done.stdout
    assert "| backward / forward FLOPs |" in done.stdout
    assert result["keep_freed_memory"] is True  # as scripts/train.py does on CPUs


def test_the_script_times_a_variant_of_the_preset_and_refuses_a_bad_one(tmp_path):
    output = tmp_path / "speed.json"
    script = [sys.executable, "-m", "benchmarks.speed", "--preset", "tiny", "--batch_size", "2",
              "--repeats", "1", "--baselines", ""]
    done = subprocess.run(script + ["--config_overrides", "stochastic_kernel=false", "--output", str(output)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    assert result["config_overrides"] == "stochastic_kernel=false" and result["train_s"] > 0
    assert result["model"] == "NAC tiny (stochastic_kernel=false)"
    assert nac_model("tiny", overrides={"stochastic_kernel": False}).config.stochastic_kernel is False
    for bad, message in (("stochastic_kernl=false", "not a NACConfig field"), ("kernel_temperature=-1", "must be > 0")):
        done = subprocess.run(script + ["--config_overrides", bad], capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert done.returncode == 2 and message in done.stderr, done.stderr[-3000:]


def test_measure_in_bf16_reports_the_model_flop_utilisation():
    torch.manual_seed(0)
    model = nac_model("tiny")
    pixels, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 0, 1])
    result = measure(model, pixels, labels, repeats=1, dtype=torch.bfloat16, peak_tflops=0.5)
    assert result["dtype"] == "bfloat16"
    for key in ("eval", "train"):
        assert result[f"{key}_mfu"] == pytest.approx(result[f"{key}_gflops"] / 500)
    assert "train_mfu" not in measure(model, pixels, labels, repeats=1)  # no peak, no MFU


def test_the_data_sheet_peak_of_a_gpu_is_found_by_its_name():
    assert dense_bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert dense_bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert dense_bf16_peak_tflops("NVIDIA H200 NVL") == 835.0
    assert dense_bf16_peak_tflops("NVIDIA A10G") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_the_script_refuses_a_gpu_it_does_not_have():
    command = [sys.executable, "-m", "benchmarks.speed", "--device", "cuda"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode != 0 and "torch sees no GPU here" in done.stderr
