"""The hand-written autograd functions have the gradients of their formulas, and the fused and written-out forms of
the attention agree."""

import pytest
import torch

import nac_hf.functional_nac as functional
from nac_hf.functional_nac import written_out_kernel_attention
from nac_hf.modeling_nac import truncate


@pytest.mark.parametrize(
    "kernel_batch, output_attentions, piece_bytes, heads_inside",
    [(1, True, None, False), (3, True, None, False), (1, False, None, False), (3, False, None, False),
     (1, False, 1, False), (3, False, 1, False), (3, False, None, True), (3, False, 1, True)],
)
def test_kernel_modulated_attention_has_the_gradients_of_its_formula(
    kernel_batch, output_attentions, piece_bytes, heads_inside, monkeypatch
):
    if piece_bytes is not None:  # the backward pass one example at a time, as it goes through a large batch
        monkeypatch.setattr(functional, "CPU_ATTENTION_PIECE_BYTES", piece_bytes)
    generator = torch.Generator().manual_seed(0)

    def heads_first(*shape):  # (B, H, N, d); heads_inside: a view of (B, N, H, d), as ModulatedAttention gives them
        if heads_inside:
            return torch.randn(shape[0], shape[2], shape[1], shape[3], generator=generator,
                               dtype=torch.float64).transpose(1, 2)
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    query = heads_first(3, 2, 5, 4)
    key, value = (heads_first(3, 2, 7, 4) for _ in range(2))
    kernel = torch.rand(kernel_batch, 1, 5, 7, generator=generator, dtype=torch.float64)
    kernel = kernel * (torch.rand(kernel.shape, generator=generator, dtype=torch.float64) > 0.4)  # pairs that are cut
    kernel[..., :, 0] = 0.5  # every receiver hears someone (a silent one is checked below)
    leaves = [t.requires_grad_() for t in (query, key, value, kernel)]
    context, weights = functional.kernel_modulated_attention(query, key, value, kernel, output_attentions)
    expected_context, expected_weights = written_out_kernel_attention(query, key, value, kernel)
    torch.testing.assert_close(context, expected_context)
    if output_attentions:  # else the weights are never formed as a tensor of their own
        torch.testing.assert_close(weights, expected_weights)
    upstream = torch.randn(context.shape, generator=generator, dtype=torch.float64)
    grads = torch.autograd.grad(context, leaves, upstream)
    expected = torch.autograd.grad(expected_context, leaves, upstream)
    for name, got, want in zip(("query", "key", "value", "kernel"), grads, expected):
        torch.testing.assert_close(got, want, msg=name)
    assert grads[3][kernel == 0].abs().sum() > 0  # the straight-through gradient reaches pairs that do not talk
    # A receiver that hears no sender reads nothing, and nothing flows back from it.
    silent = kernel.detach().clone().index_fill_(2, torch.tensor([1]), 0.0).requires_grad_()
    context, _ = functional.kernel_modulated_attention(query, key, value, silent)
    grads = torch.autograd.grad(context, [query, silent], upstream)
    assert torch.all(context[:, :, 1] == 0) and all(torch.isfinite(g).all() for g in grads)
    assert torch.all(grads[0][:, :, 1] == 0) and torch.all(grads[1][:, :, 1] == 0)
    # Without a gradient to the kernel (evaluation): SDPA, its silent rows set to 0 only when there are some.
    for without_grad in (kernel.detach(), silent.detach()):
        got, _ = functional.kernel_modulated_attention(query, key, value, without_grad)
        torch.testing.assert_close(got, written_out_kernel_attention(query, key, value, without_grad)[0])
    assert torch.all(functional.kernel_modulated_attention(query, key, value, silent.detach())[0][:, :, 1] == 0)
    scores = torch.randn(3, 2, 5, 7, dtype=torch.float64, generator=generator).requires_grad_()
    positive = (kernel.detach() + 0.05).requires_grad_()  # away from 0, where the cut makes the function a kink
    assert torch.autograd.gradcheck(functional.KernelModulatedSoftmax.apply, (scores, positive))


def test_the_relaxed_bernoulli_draw_has_the_gradient_of_its_formula():
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(5, 7, generator=generator, dtype=torch.float64).clamp(0.01, 0.99).requires_grad_()
    uniform = torch.rand(3, 5, 7, generator=generator, dtype=torch.float64)
    noise = uniform.log() - (-uniform).log1p()  # logistic
    talks = torch.rand(5, 7, generator=generator) > 0.3
    sample = functional.RelaxedBernoulliSample.apply(probs, noise, talks, 0.5)
    logits = (probs.log() - (-probs).log1p() + noise) / 0.5
    expected = truncate(torch.sigmoid(logits), talks)  # straight-through: the gradient ignores the cut
    torch.testing.assert_close(sample, expected)
    assert torch.all(sample[:, ~talks] == 0)
    upstream = torch.randn(sample.shape, generator=generator, dtype=torch.float64)
    (grad,) = torch.autograd.grad(sample, probs, upstream)
    (want,) = torch.autograd.grad(expected, probs, upstream)
    torch.testing.assert_close(grad, want)
    assert torch.autograd.gradcheck(
        lambda p: functional.RelaxedBernoulliSample.apply(p, noise, torch.ones_like(talks), 0.5), (probs,)
    )


def test_the_gated_gelu_has_the_gradient_of_its_formula():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 4, 10, generator=generator, dtype=torch.float64, requires_grad=True)
    value, gate = hidden.chunk(2, dim=-1)
    expected = value * torch.nn.functional.gelu(gate)
    got = functional.gated_gelu(hidden)
    assert got.grad_fn.name() == "GatedGELUBackward"
    torch.testing.assert_close(got, expected)
    upstream = torch.randn(got.shape, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(got, hidden, upstream)[0],
                               torch.autograd.grad(expected, hidden, upstream)[0])
    assert torch.autograd.gradcheck(functional.GatedGELU.apply, (hidden,))
    with torch.no_grad():  # plain operations where no gradient is needed (what export traces)
        torch.testing.assert_close(functional.gated_gelu(hidden), expected.detach())


def test_the_written_out_attention_equals_the_fused_cpu_kernel():
    # Devices without the CPU flash kernel (GPUs) take the written-out form of KernelModulatedAttention's forward.
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(3, 2, 5, 4, generator=generator)
    key, value = (torch.randn(3, 2, 7, 4, generator=generator) for _ in range(2))
    kernel = torch.rand(3, 1, 5, 7, generator=generator) * (torch.rand(3, 1, 5, 7, generator=generator) > 0.4)
    kernel[..., 0] = 0.5
    bias, _ = functional.attention_bias(kernel)
    fused = functional.attention_and_log_normaliser(query, key, value, bias, 0.5, fused=True)
    written_out = functional.attention_and_log_normaliser(query, key, value, bias, 0.5, fused=False)
    for got, want in zip(written_out, fused):
        torch.testing.assert_close(got, want)
