"""The speed benchmark: its FLOP counts match hand counts, its baselines land at the FLOPs they are sized to, and the
command writes every figure it documents with sane values, refusing what cannot run before building a model."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from benchmarks import speed
from benchmarks.common import flop_counter_mode, flops_per_example
from benchmarks.speed import FIGURES, dense_bf16_peak_tflops, matched_baseline, measure, nac_model
from nac_test_utils import ROOT


def vit_layer_flops(image_size: int = 32, patch_size: int = 4) -> float:
    """FLOPs per example of one layer of the ViT baseline: a two-layer model's less a one-layer model's."""
    pixels = torch.randn(1, 3, image_size, image_size)
    one, two = (flops_per_example(speed.vit_model(10, 3, image_size, patch_size, n), pixels) for n in (1, 2))
    return two - one


def test_a_baseline_is_sized_to_the_flops_it_is_given():
    pixels = torch.randn(1, 3, 32, 32)
    per_layer = vit_layer_flops()
    chosen = []
    for target in (0.5e9, 1.5e9):
        model, layers = matched_baseline("vit", target, num_labels=10, num_channels=3, image_size=32, patch_size=4)
        assert abs(flops_per_example(model, pixels) - target) <= per_layer / 2  # the nearest number of layers
        assert model.config.num_hidden_layers == layers
        chosen.append(layers)
    assert chosen[1] > chosen[0] > 1


@pytest.mark.parametrize("groups", [1, 8])
def test_a_convolutions_flops_are_its_multiply_adds_and_its_backward_pass_twice_them(groups):
    # one product for the input's gradient and one for the weight's, each as large as the forward's, for grouped
    # convolutions too (torch's own formula counts the weight's as if there were one group)
    conv = torch.nn.Conv2d(8, 16, 7, padding=3, groups=groups)
    pixels = torch.randn(2, 8, 12, 12, requires_grad=True)
    with flop_counter_mode() as forward:
        conv(pixels)
    with flop_counter_mode() as both:
        conv(pixels).sum().backward()
    multiply_adds = 2 * 16 * 144 * (8 // groups) * 49  # batch × output channels × positions × inputs per output
    assert forward.get_total_flops() == 2 * multiply_adds
    assert both.get_total_flops() == 3 * 2 * multiply_adds


def test_attention_on_a_cpu_is_counted_forward_and_backward():
    # On a CPU, scaled_dot_product_attention runs as a kernel torch's counter has no formula of its own for: without
    # the formulas registered in benchmarks.common, attention would count 0 FLOPs.
    batch, heads, length, width = 2, 3, 5, 4
    query, key, value = (torch.randn(batch, heads, length, width, requires_grad=True) for _ in range(3))
    products = 2 * batch * heads * length * length * width  # the FLOPs of one (L × W) @ (W × L) product per head
    with flop_counter_mode() as forward:
        F.scaled_dot_product_attention(query, key, value)
    with flop_counter_mode() as both:
        F.scaled_dot_product_attention(query, key, value).sum().backward()
    assert forward.get_total_flops() == 2 * products  # Q Kᵀ and P V
    assert both.get_total_flops() == (2 + 5) * products  # and Q Kᵀ again, dV, dP, dQ, dK


def assert_sane(entry: dict) -> None:
    """Every figure of FIGURES, with a value it can have."""
    assert set(FIGURES) - {"model"} <= set(entry)
    assert entry["parameters"] > 0 and entry["dtype"] in ("float32", "bfloat16")
    for key in ("eval_s", "train_s", "train_forward_s", "backward_s", "gflop_per_example", "train_gflop_per_example",
                "eval_gflops", "train_gflops", "gemm_gflops", "peak_rss_mb", "train_over_eval",
                "backward_over_train_forward"):
        assert entry[key] > 0, key
    assert entry["train_page_faults_mb"] >= 0
    # a backward pass takes about two products for each of the forward's (the first layer's input needs none)
    assert 2.5 < entry["train_over_eval_flops"] < 3.5
    assert entry["eval_over_gemm_bound"] > 1  # no small model outruns the device's large matrix product


def test_measure_reports_every_figure_and_trains_the_model():
    torch.manual_seed(0)
    model = nac_model("tiny")
    pixels, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 0, 1])
    before = [p.detach().clone() for p in model.parameters()]
    result = measure(model, pixels, labels, repeats=1)
    assert_sane(result)
    assert not {"peak_tflops", "eval_mfu", "train_mfu", "compile_s"} & set(result)  # no peak, no compilation
    assert all(p.grad is None for p in model.parameters())  # counting left no gradients behind
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))  # the step did train


def test_measure_in_bf16_reports_the_model_flop_utilisation_as_a_fraction_of_the_peak():
    torch.manual_seed(0)
    model = nac_model("tiny")
    pixels, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 0, 1])
    result = measure(model, pixels, labels, repeats=1, dtype=torch.bfloat16, peak_tflops=0.5)
    assert_sane(result)
    assert result["dtype"] == "bfloat16" and result["peak_tflops"] == 0.5
    # a tiny model on a CPU reaches far less than 500 GFLOP/s: a fraction, not a percentage or a rate
    assert 0 < result["eval_mfu"] < 1 and 0 < result["train_mfu"] < 1
    # autocast changes the precision, not the count
    assert result["gflop_per_example"] == pytest.approx(flops_per_example(model, pixels) / 1e9)


def test_the_data_sheet_peak_of_a_gpu_is_found_by_its_name():
    assert dense_bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert dense_bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert dense_bf16_peak_tflops("NVIDIA H200 NVL") == 835.0
    assert dense_bf16_peak_tflops("NVIDIA A10G") is None


def test_the_command_writes_every_documented_figure_of_the_variant_and_its_baseline(tmp_path):
    output = tmp_path / "speed.json"
    command = [sys.executable, "-m", "benchmarks.speed", "--preset", "tiny", "--batch_size", "2", "--repeats", "1",
               "--baselines", "vit", "--config_overrides", "num_hidden_layers=4", "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    (vit,) = result["baselines"]
    for entry in (result, vit):
        assert set(FIGURES) <= set(entry)
        assert_sane(entry)
    assert (result["device"], result["dtype"], result["keep_freed_memory"]) == ("cpu", "float32", True)
    assert result["model"] == "NAC tiny (num_hidden_layers=4)" and vit["model"].startswith("ViTForImageClassification")
    # the variant is what was measured: its FLOPs, not the preset's
    pixels = torch.randn(2, 3, 16, 16)
    variant, preset = (flops_per_example(nac_model("tiny", overrides=o), pixels) for o in ({"num_hidden_layers": 4},
                                                                                            None))
    assert result["gflop_per_example"] == pytest.approx(variant / 1e9)
    assert variant != pytest.approx(preset)  # the variant, not the preset, was measured
    for row in ("| NAC tiny (num_hidden_layers=4) |", "| ViTForImageClassification, 1 layers |"):
        assert done.stdout.count(row) == 2  # in both tables


@pytest.mark.parametrize("flags, message", [
    (["--config_overrides", "stochastic_kernl=false"], "not a NACConfig field"),
    (["--config_overrides", "kernel_temperature=-1"], "must be > 0"),
    (["--preset", "huge"], "huge"),
    (["--baselines", "vit,resnet"], "unknown baselines ['resnet']"),
] + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "torch sees no GPU here")]))
def test_the_command_refuses_what_cannot_run_before_building_a_model(monkeypatch, capsys, flags, message):
    def built(*args, **kwargs):
        raise AssertionError("a model was built")

    for name in ("NACForClassification", "measure_one", "child", "matched_baseline"):
        monkeypatch.setattr(speed, name, built)
    with pytest.raises(SystemExit) as exit:
        speed.main(flags)
    assert exit.value.code == 2 and message in capsys.readouterr().err
