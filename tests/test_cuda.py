"""The model on a CUDA GPU: the same function as on the CPU, with the same gradients, in bf16 and compiled; and the
speed benchmark's GPU run. Skipped on machines without one, unless NAC_REQUIRE_CUDA=1 (as `python -m
benchmarks.gpu_check` runs them): then each fails there instead."""

import json
import os
import subprocess
import sys
from copy import deepcopy

import pytest
import torch

import nac_hf.modeling_nac as modeling
from nac_hf import NACForClassification
from nac_hf.functional_nac import written_out_kernel_attention
from nac_test_utils import MODEL_KINDS, ROOT, example_inputs, tiny


# Where a GPU is expected, a missing one is a failure, not a reason to skip.
REQUIRE_CUDA = os.environ.get("NAC_REQUIRE_CUDA") == "1"
pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() and not REQUIRE_CUDA, reason="needs a CUDA GPU (NAC_REQUIRE_CUDA=1: fail instead)"
)
GPU = torch.device("cuda")


@pytest.fixture(autouse=True)
def a_cuda_gpu():
    if not torch.cuda.is_available():
        pytest.fail(f"NAC_REQUIRE_CUDA=1 but torch {torch.__version__} sees no CUDA GPU (torch.cuda.is_available() is "
                    "False): run these tests on a machine with an NVIDIA GPU and a CUDA build of torch")

# Everything a training forward draws, switched off, so that the CPU and the GPU (whose random streams differ)
# compute the same function: the kernel draw, drop-path, code and seeder noise, module dropout, Gumbel pooling.
NO_DRAWS = dict(stochastic_kernel=False, drop_path_rate=0.0, code_noise=0.0, seeder_noise=False, module_dropout=0.0,
                output_pooling="mean")


def on(device, inputs: dict) -> dict:
    return {name: value.to(device) for name, value in inputs.items()}


@pytest.fixture(autouse=True)
def full_float32_precision():
    """No TF32 in matmuls and convolutions, so that the GPU computes in float32 as the CPU does."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.mark.parametrize("per_example_kernel", [False, True])
def test_kernel_modulated_attention_on_the_gpu_has_the_gradients_of_its_formula(per_example_kernel):
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(3, 2, 5, 4, generator=generator, dtype=torch.float64)
    key, value = (torch.randn(3, 2, 7, 4, generator=generator, dtype=torch.float64) for _ in range(2))
    kernel = torch.rand(3 if per_example_kernel else 1, 1, 5, 7, generator=generator, dtype=torch.float64)
    kernel = kernel * (torch.rand(kernel.shape, generator=generator, dtype=torch.float64) > 0.4)
    kernel[..., :, 0] = 0.5  # every receiver hears someone
    silent = kernel.clone().index_fill_(2, torch.tensor([1]), 0.0)  # receiver 1 hears no sender
    upstream = torch.randn(3, 2, 5, 4, generator=generator, dtype=torch.float64)
    results = []
    for device in (torch.device("cpu"), GPU):
        leaves = [t.to(device).requires_grad_() for t in (query, key, value, kernel)]
        context, _ = modeling.kernel_modulated_attention(*leaves)
        grads = torch.autograd.grad(context, leaves, upstream.to(device))
        expected_context, _ = written_out_kernel_attention(*leaves)
        expected = torch.autograd.grad(expected_context, leaves, upstream.to(device))
        torch.testing.assert_close(context, expected_context)
        for name, got, want in zip(("query", "key", "value", "kernel"), grads, expected):
            torch.testing.assert_close(got, want, msg=f"{name} on {device}")
        assert grads[3][kernel.to(device) == 0].abs().sum() > 0  # the straight-through gradient to cut pairs
        leaves[3] = silent.to(device).requires_grad_()
        heard_nothing, _ = modeling.kernel_modulated_attention(*leaves)
        silent_grads = torch.autograd.grad(heard_nothing, leaves, upstream.to(device))
        assert torch.all(heard_nothing[:, :, 1] == 0) and all(torch.isfinite(g).all() for g in silent_grads)
        assert torch.all(silent_grads[0][:, :, 1] == 0) and torch.all(silent_grads[3][..., 1, :] == 0)
        results.append((context, *grads, heard_nothing, *silent_grads))
    for on_cpu, on_gpu in zip(*results):
        torch.testing.assert_close(on_gpu.cpu(), on_cpu)


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_a_training_step_on_the_gpu_is_the_one_on_the_cpu(kind):
    config = tiny(**MODEL_KINDS[kind], **NO_DRAWS)
    torch.manual_seed(0)
    model = NACForClassification(config)
    inputs, labels = example_inputs(config), torch.tensor([0, 1, 2])
    if config.conditioning_dim:
        inputs["conditioning"] = torch.randn(3, 4, config.conditioning_dim)
    steps = []
    for device in (torch.device("cpu"), GPU):
        copy = deepcopy(model).to(device)
        out = copy.train()(**on(device, inputs), labels=labels.to(device))
        out.loss.backward()
        with torch.no_grad():
            evaluated = copy.eval()(**on(device, inputs)).logits
        steps.append((out.loss, evaluated, {name: p.grad for name, p in copy.named_parameters()}))
    (cpu_loss, cpu_eval, cpu_grads), (gpu_loss, gpu_eval, gpu_grads) = steps
    torch.testing.assert_close(gpu_loss.cpu(), cpu_loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gpu_eval.cpu(), cpu_eval, rtol=1e-4, atol=1e-5)
    for name, grad in cpu_grads.items():
        assert (grad is None) == (gpu_grads[name] is None), name
        if grad is not None:
            torch.testing.assert_close(gpu_grads[name].cpu(), grad, rtol=1e-3, atol=1e-5, msg=name)


def test_with_every_draw_on_the_gpu_trains_with_the_gradients_of_the_written_out_attention(monkeypatch):
    # The kernel drawn per example, drop-path and noise, all drawn alike in both passes (the same seed).
    config = tiny(graph_prior="none", kernel_truncation=0.6)
    inputs, labels = on(GPU, example_inputs(config)), torch.tensor([0, 1, 2], device=GPU)
    gradients = []
    for written_out in (False, True):
        if written_out:
            monkeypatch.setattr(
                modeling, "kernel_modulated_attention",
                lambda q, k, v, kernel, output_attentions=False: written_out_kernel_attention(q, k, v, kernel),
            )
        torch.manual_seed(0)
        model = NACForClassification(config).to(GPU).train()
        model(**inputs, labels=labels).loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, grad in gradients[0].items():
        torch.testing.assert_close(grad, gradients[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_bf16_training_step_on_the_gpu():
    config = tiny(**NO_DRAWS)
    torch.manual_seed(0)
    model = NACForClassification(config).to(GPU).train()
    inputs, labels = on(GPU, example_inputs(config)), torch.tensor([0, 1, 2], device=GPU)
    full = model(**inputs, labels=labels).loss
    with torch.autocast(GPU.type, dtype=torch.bfloat16):
        out = model(**inputs, labels=labels)
    out.loss.backward()
    torch.testing.assert_close(out.loss.float(), full, rtol=0.05, atol=0.05)  # bf16 keeps 8 bits of mantissa
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("training", [False, True])
def test_the_compiled_model_on_the_gpu_is_one_graph_and_the_eager_one(training):
    config = tiny(**NO_DRAWS)
    torch.manual_seed(0)
    model = NACForClassification(config).to(GPU).train(training)
    inputs, labels = on(GPU, example_inputs(config)), torch.tensor([0, 1, 2], device=GPU)
    eager = model(**inputs, labels=labels).loss
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)(**inputs, labels=labels).loss  # a graph break raises
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    if training:
        (eager_grads, compiled_grads) = (
            torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
            for loss in (eager, compiled)
        )
        for got, want in zip(compiled_grads, eager_grads):
            if want is not None:
                torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)


def test_the_speed_benchmark_runs_on_the_gpu(tmp_path):
    output = tmp_path / "speed.json"
    command = [sys.executable, "-m", "benchmarks.speed", "--preset", "tiny", "--batch_size", "4", "--repeats", "1",
               "--device", "cuda", "--dtype", "bfloat16", "--compile", "--baselines", "vit", "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    assert result["device"] == torch.cuda.get_device_name(GPU) and result["dtype"] == "bfloat16"
    for row in (result, result["baselines"][0]):
        assert row["eval_s"] > 0 and row["train_s"] > 0 and row["peak_device_mb"] > 0
    assert result["train_compiled_s"] > 0 and result["compile_s"] > 0
    # the tiny model's peak, without the 8192² bf16 matrices of the GEMM timed beside it (128 MiB each)
    assert result["peak_device_mb"] < 128
