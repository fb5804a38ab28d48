"""The hand-written autograd functions of the model, beside the reference forms that check them.

The model's attention and activation compute functions whose gradients autograd would also find; here their forward
and backward passes are written out so that they keep one tensor where autograd would keep every intermediate
(`GatedGELU`, `RelaxedBernoulliSample`, `KernelModulatedSoftmax`, `KernelModulatedAttention`). The reference forms
(`naive_read_in`, `written_out_kernel_attention`) are the same functions as formulas for autograd to differentiate;
tests and benchmarks compare against them, and the model runs `written_out_kernel_attention` when
`attn_implementation="eager"`. `LargestTensor` measures the memory an
operation takes. docs/architecture.md gives the equations.

This file travels with the modeling code when a model is saved for `trust_remote_code`, so it imports only the
standard library and torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode


def checks_values() -> bool:
    """Whether to check input values (label and byte-id ranges, empty masks). Such checks branch on tensor values,
    which `torch.compile` and `torch.export` cannot trace; they run in eager mode only."""
    return not torch.compiler.is_compiling()


# ----------------------------------------------------------------------------------------------------------------
# GEGLU
# ----------------------------------------------------------------------------------------------------------------


class GatedGELU(torch.autograd.Function):
    """GEGLU, `value ⊙ GELU(gate)` with `hidden = [value, gate]` split in halves over the last axis, with its gradient
    written out: the gradients of both halves are written into one tensor of hidden's shape, where autograd would
    write each half apart and then concatenate them (a strided copy of the whole gradient). Keeps what autograd keeps:
    hidden and `GELU(gate)`."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor) -> torch.Tensor:
        value, gate = hidden.chunk(2, dim=-1)
        activated = F.gelu(gate)
        ctx.save_for_backward(hidden, activated)
        return activated * value

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        hidden, activated = ctx.saved_tensors
        value, gate = hidden.chunk(2, dim=-1)
        grad_hidden = torch.empty_like(hidden)
        grad_value, grad_gate = grad_hidden.chunk(2, dim=-1)
        torch.mul(grad, activated, out=grad_value)
        torch.ops.aten.gelu_backward.grad_input(grad * value, gate, grad_input=grad_gate)
        return grad_hidden


def gated_gelu(hidden: torch.Tensor) -> torch.Tensor:
    """`value ⊙ GELU(gate)` of `hidden = [value, gate]`: `GatedGELU` when a gradient is needed in eager mode, plain
    operations otherwise (what export and compilation trace)."""
    if torch.is_grad_enabled() and hidden.requires_grad and not torch.compiler.is_compiling():
        return GatedGELU.apply(hidden)  # compilers fuse the plain form themselves
    value, gate = hidden.chunk(2, dim=-1)
    return value * F.gelu(gate)



# ----------------------------------------------------------------------------------------------------------------
# SKMDPA: the sampled kernel and kernel-modulated attention
# ----------------------------------------------------------------------------------------------------------------


class RelaxedBernoulliSample(torch.autograd.Function):
    """`y = σ((logit p + n) / T) ⊙ talks`: a reparameterised relaxed-Bernoulli draw with probability p from the
    logistic noise `n = logit u` (u uniform), cut where modules do not talk, with the gradient to p as if it were not
    cut (straight-through): `∂y/∂p = y (1 − y) / (T p (1 − p))`. Keeps one tensor of the draw's size for the backward
    pass, where autograd would keep each step of the formula. p `([B,] R, S)`, n `(B, R, S)`."""

    @staticmethod
    def forward(ctx, probs: torch.Tensor, noise: torch.Tensor, talks: torch.Tensor, temperature: float):
        sample = torch.add(noise, torch.logit(probs)).div_(temperature).sigmoid_()
        ctx.save_for_backward(probs, sample)
        ctx.temperature = temperature
        return sample * talks

    @staticmethod
    def backward(ctx, grad_sample: torch.Tensor):
        probs, sample = ctx.saved_tensors
        grad = torch.sub(1.0, sample).mul_(sample).mul_(grad_sample)  # in one tensor of the draw's size
        grad_probs = grad.sum_to_size(probs.shape) / (ctx.temperature * probs * (1.0 - probs))
        return grad_probs, None, None, None


def kernel_softmax_probabilities(scores: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """`p = exp(s − peak) / Σ_v K̃ exp(s − peak)`, so that the kernel-modulated weights are `p ⊙ K̃`; peak is the
    strongest talking pair's `s + log K̃` in each row, and `exp(s − peak)` is capped at 1 where a pair does not talk.
    A receiver that hears no sender gets `p = 0` on its row."""
    talks = kernel > 0
    tiny = torch.finfo(scores.dtype).tiny
    peak = (scores + kernel.clamp_min(tiny).log()).masked_fill_(~talks, float("-inf")).amax(-1, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    cap = torch.where(talks, float("inf"), 0.0).to(scores.dtype)
    exponent = torch.minimum(scores - peak, cap).exp_()
    normaliser = (exponent * kernel).sum(-1, keepdim=True)
    return exponent.div_(normaliser.masked_fill_(normaliser == 0, float("inf")))


def kernel_softmax_gradients(
    probabilities: torch.Tensor, weights: torch.Tensor, kernel: torch.Tensor, grad_weights: torch.Tensor,
    needs_kernel: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The gradients of the weights `w = p ⊙ K̃` to the scores and to K̃, from their gradient g (w and g are
    overwritten): `∂L/∂s = w ⊙ (g − Σ_v w g)` and `∂L/∂K̃ = p ⊙ (g − Σ_v w g)`, summed to K̃'s shape."""
    centred = grad_weights.sub_((weights * grad_weights).sum(-1, keepdim=True))
    grad_kernel = (probabilities * centred).sum_to_size(kernel.shape) if needs_kernel else None
    return weights.mul_(centred), grad_kernel


class KernelModulatedSoftmax(torch.autograd.Function):
    """`w = K̃ ⊙ exp(s) / Σ_v K̃ ⊙ exp(s)` over the last axis, i.e. `softmax(s + log K̃)`, with the gradient written out.

    scores `s` `(B, H, R, S)`; kernel `K̃` `(B|1, 1, R, S)`, 0 where a pair does not talk. The gradient reaches K̃
    also where it is 0 in the forward pass (straight-through): `∂L/∂K̃ = p ⊙ (g − Σ_v w g)` with `p = exp(s) / Σ K̃
    exp(s)`, and `∂L/∂s = w ⊙ (g − Σ_v w g)`, g the gradient of the weights. `exp(s)` is taken relative to the
    strongest talking pair of the row, and for a pair that does not talk capped at 1, so that its gradient stays
    bounded; a receiver that hears no sender has no weights and sends no gradient. Only `p` is kept for the backward
    pass, where autograd would keep every intermediate of the formula.
    """

    @staticmethod
    def forward(ctx, scores: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        probabilities = kernel_softmax_probabilities(scores, kernel)
        ctx.save_for_backward(probabilities, kernel)
        return probabilities * kernel

    @staticmethod
    def backward(ctx, grad_weights: torch.Tensor):
        probabilities, kernel = ctx.saved_tensors
        weights = probabilities * kernel
        return kernel_softmax_gradients(probabilities, weights, kernel, grad_weights.clone(), ctx.needs_input_grad[1])


# The backward pass of `KernelModulatedAttention` works through the batch in pieces of about this many bytes of
# (H, R, S) tensors on a CPU, so that its passes over the attention run in cache and reuse memory: a tensor of tens of
# MiB is a fresh allocation (and page faults) every time, and each pass over it goes to main memory.
CPU_ATTENTION_PIECE_BYTES = 2**21


def attention_and_log_normaliser(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor, scale: float,
    fused: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`softmax(scale q kᵀ + bias) v` and the log of its normaliser `log Σ_v exp(scale q·k_v + bias_v)`, `(B, H, R, 1)`.
    `fused` (by default on a CPU): in one kernel, the CPU flash-attention SDPA kernel, which returns its log-sum-exp;
    otherwise written out."""
    if query.device.type == "cpu" if fused is None else fused:
        context, log_normaliser = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, attn_mask=bias.to(query.dtype), scale=scale
        )
        return context, log_normaliser.unsqueeze(-1).to(query.dtype)
    logits = torch.matmul(query, key.transpose(-1, -2)).mul_(scale).add_(bias)  # (B, H, R, S)
    log_normaliser = logits.logsumexp(-1, keepdim=True)
    return torch.matmul(logits.sub_(log_normaliser).exp_(), value), log_normaliser


def has_silent_rows(silent: torch.Tensor) -> bool:
    """Whether a receiver hears no sender, so that its context must be set to 0. On a CPU the pass over the context is
    skipped when every receiver hears someone; on a GPU, asking would wait for the device, and when compiling or
    exporting it would break the graph, so there the rows are always set."""
    return silent.device.type != "cpu" or not checks_values() or bool(silent.any())


def attention_bias(kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The additive attention mask `log K̃` `(B|1, 1, R, S)`, -inf where a pair does not talk and 0 on the rows of
    receivers that hear no sender (so that softmax stays finite there), and those rows, `(B|1, 1, R, 1)`: their
    context is set to 0. A sampled K̃ below the smallest normal float counts as that float (the logarithm of a
    subnormal number is many times slower, and its weight is 0 either way)."""
    silent_pair = kernel == 0
    bias = kernel.clamp_min(torch.finfo(kernel.dtype).tiny).log_().masked_fill_(silent_pair, float("-inf"))
    silent = silent_pair.all(-1, keepdim=True)
    return bias.masked_fill_(silent, 0.0), silent


class KernelModulatedAttention(torch.autograd.Function):
    """`KernelModulatedSoftmax(q kᵀ/√d, K̃) @ v` with its gradient written out, as flash attention does it: the
    forward pass keeps no `(B, H, R, S)` tensor (only the context and the log-normaliser of each row), and the
    backward pass recomputes the weights piece by piece over the batch (`CPU_ATTENTION_PIECE_BYTES`).

    query `(B, H, R, d)`, key and value `(B, H, S, d)`, kernel K̃ `(B|1, 1, R, S)`, 0 where a pair does not talk. With
    s the scaled scores, `lse = log Σ_v K̃ exp(s)` and `peak` the largest `s + log K̃` of a talking pair in the row,
    `p = exp(s − lse)` where a pair talks and `exp(min(s, peak) − lse)` where it does not (`exp(s − peak)` capped at
    1, over the normaliser), and the weights are `w = p ⊙ K̃`. Then `∂L/∂s = w ⊙ (g − Σ_v w g)` with g = dO vᵀ and
    `Σ_v w g = dO · O`, `∂L/∂K̃ = p ⊙ (g − Σ_v w g)` (straight-through: also where K̃ is 0), `∂L/∂v = wᵀ dO`."""

    @staticmethod
    def forward(ctx, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kernel: torch.Tensor):
        scale = 1.0 / math.sqrt(query.shape[-1])
        bias, silent = attention_bias(kernel.detach())
        with torch.autocast(value.device.type, enabled=False):  # in the dtype it is given, as the backward is
            # detached: this Function gives the gradients (export traces its forward with autograd on)
            context, log_normaliser = attention_and_log_normaliser(
                query.detach(), key.detach(), value.detach(), bias, scale
            )
        if has_silent_rows(silent):
            context = context.masked_fill_(silent, 0.0)
            log_normaliser = log_normaliser.masked_fill_(silent, float("inf"))  # so that p = 0 on a silent row
        ctx.save_for_backward(query, key, value, kernel, bias, context, log_normaliser)
        ctx.scale = scale
        return context

    @staticmethod
    def backward(ctx, grad_context: torch.Tensor):
        # bias is log K̃ but 0 on silent rows, where the log-normaliser (inf) makes p = 0 all the same
        query, key, value, kernel, log_kernel, context, log_normaliser = ctx.saved_tensors
        scale = ctx.scale
        grad_context = grad_context.to(value.dtype)  # read piece by piece: strided is as good as contiguous
        uncapped = torch.where(kernel > 0, float("inf"), 0.0)  # where the cap at the peak does not apply
        row_dot = (grad_context * context).sum(-1, keepdim=True)  # Σ_v w g = dO · O: (B, H, R, 1)
        # In the memory layout of the inputs (heads usually a view of the feature axis), so that the gradients reach
        # the projections without a transposing copy; each piece is written in while it is in cache.
        grad_query, grad_key, grad_value = (torch.empty_like(t) for t in (query, key, value))
        needs_kernel = ctx.needs_input_grad[3]
        grad_kernel = kernel.new_empty((query.shape[0], 1) + kernel.shape[2:]) if needs_kernel else None
        batch, heads, receivers, head_dim = query.shape
        senders = key.shape[2]
        per_piece = batch
        # In eager mode on a CPU, the piece's (H, R, S) tensors and its keys and values each in cache; a compiler
        # fuses the passes itself, and would unroll the loop.
        if query.device.type == "cpu" and not torch.compiler.is_compiling():
            per_example = heads * max(receivers, head_dim) * senders * query.element_size()
            per_piece = max(1, CPU_ATTENTION_PIECE_BYTES // per_example)
        for start in range(0, batch, per_piece):
            rows = slice(start, start + per_piece)
            kernel_rows = rows if kernel.shape[0] > 1 else slice(None)
            scores = torch.matmul(query[rows], key[rows].transpose(-1, -2)).mul_(scale)  # (b, H, R, S)
            peak = (scores + log_kernel[kernel_rows]).amax(-1, keepdim=True)
            probabilities = torch.minimum(scores, peak + uncapped[kernel_rows], out=scores)
            probabilities = probabilities.sub_(log_normaliser[rows]).exp_()
            weights = probabilities * kernel[kernel_rows]
            grad_value[rows] = torch.matmul(weights.transpose(-1, -2), grad_context[rows])
            centred = torch.matmul(grad_context[rows], value[rows].transpose(-1, -2)).sub_(row_dot[rows])
            if needs_kernel:
                torch.sum(probabilities.mul_(centred), 1, keepdim=True, out=grad_kernel[rows])
            grad_scores = weights.mul_(centred).mul_(scale)
            grad_query[rows] = torch.matmul(grad_scores, key[rows])
            grad_key[rows] = torch.matmul(grad_scores.transpose(-1, -2), query[rows])
        if needs_kernel:
            grad_kernel = grad_kernel.sum_to_size(kernel.shape)
        return grad_query, grad_key, grad_value, grad_kernel


def kernel_modulated_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kernel: torch.Tensor, output_attentions: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`softmax_v(q_u·k_v/√d + log K̃_uv) v`, i.e. `K̃ ⊙ exp(s) / Σ K̃ ⊙ exp(s)`: attention weighted by the sampled
    kernel K̃ `(B|1, 1, R, S)`, 0 where modules do not talk. query `(B, H, R, d)`, key and value `(B, H, S, d)`.

    When K̃ needs a gradient (training), `KernelModulatedAttention`, whose gradient reaches K̃ also where it is 0 in
    the forward pass (straight-through); when the weights are asked for, `KernelModulatedSoftmax`, the same function
    with the weights as a tensor; otherwise SDPA with `log K̃` as its additive mask. A receiver that hears no sender
    gets 0. Returns the context `(B, H, R, d)` and the weights `(B, H, R, S)` when asked for."""
    if not (output_attentions or kernel.requires_grad):
        bias, silent = attention_bias(kernel)
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias.to(query.dtype))
        return (context.masked_fill(silent, 0.0) if has_silent_rows(silent) else context), None
    dtype = torch.promote_types(query.dtype, kernel.dtype)  # the kernel's float32 also under bf16 autocast
    if not output_attentions:
        context = KernelModulatedAttention.apply(*(t.to(dtype) for t in (query, key, value, kernel)))
        return context.to(value.dtype), None
    scores = (query / math.sqrt(query.shape[-1])) @ key.transpose(-1, -2)  # (B, H, R, S)
    scores, kernel = scores.to(dtype), kernel.to(dtype)
    weights = KernelModulatedSoftmax.apply(scores, kernel)
    return weights.to(value.dtype) @ value, weights




# ----------------------------------------------------------------------------------------------------------------
# Reference forms: what tests and benchmarks check the model against
# ----------------------------------------------------------------------------------------------------------------


def naive_read_in(read_in, states: torch.Tensor, codes: torch.Tensor, tokens: torch.Tensor, token_mask=None):
    """The read-in as written in the paper: every input module projects every token, building keys and values of
    shape (B, U, V, H, Dh). `ReadIn.attend` computes the same function without them (docs/architecture.md, "Read-in").

    states: (B, U, D); codes: (U, C) or (B, U, C); tokens: (B, V, T); token_mask: (B, V) or None.
    """
    batch, modules, _ = states.shape
    heads, head_dim = read_in.num_heads, read_in.head_dim
    tokens = read_in.token_norm(tokens)
    query = read_in.query(read_in.state_norm(states), codes).view(batch, modules, heads, head_dim)
    per_module = codes.expand(batch, -1, -1) if codes.dim() == 2 else codes
    # k_{u,v} = W_k (x_v ⊙ a_u) and v_{u,v} = W_v (x_v ⊙ b_u) + b_v, for every pair (u, v)
    keys = read_in.key.linear(tokens[:, None] * read_in.key.modulation(per_module)[:, :, None])
    values = read_in.value.linear(tokens[:, None] * read_in.value.modulation(per_module)[:, :, None])
    keys = keys.view(batch, modules, -1, heads, head_dim)  # (B, U, V, H, Dh)
    values = values.view(batch, modules, -1, heads, head_dim)
    scores = torch.einsum("buhd,buvhd->buhv", query, keys) / math.sqrt(head_dim)
    if token_mask is not None:
        scores = scores.masked_fill(~token_mask.bool()[:, None, None, :], float("-inf"))
    context = torch.einsum("buhv,buvhd->buhd", scores.softmax(-1), values).reshape(batch, modules, heads * head_dim)
    return read_in.output(context, codes)


def written_out_kernel_attention(query, key, value, kernel):
    """Kernel-modulated attention as a formula for autograd to differentiate: `K̃ ⊙ exp(s − peak) / Σ K̃ ⊙ exp(s −
    peak)`, with `exp(s − peak)` capped at 1 where a pair does not talk (K̃ = 0). `KernelModulatedSoftmax` computes
    the same weights with its gradient written out (docs/architecture.md, "SKMDPA"). query `(B, H, R, d)`, key and
    value `(B, H, S, d)`, kernel `(B|1, 1, R, S)`. Returns the context and the weights."""
    scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
    talks = kernel > 0
    logits = scores + kernel.clamp_min(torch.finfo(scores.dtype).tiny).log()
    peak = logits.masked_fill(~talks, float("-inf")).amax(-1, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak)).detach()
    shifted = torch.where(talks, scores - peak, (scores - peak).clamp(max=0.0))
    weights = kernel * torch.exp(shifted)
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
    return weights @ value, weights


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor (in bytes) any operation makes while the mode is active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel() * tensor.element_size())
        return out


__all__ = [
    "CPU_ATTENTION_PIECE_BYTES",
    "GatedGELU",
    "KernelModulatedAttention",
    "KernelModulatedSoftmax",
    "LargestTensor",
    "RelaxedBernoulliSample",
    "attention_and_log_normaliser",
    "attention_bias",
    "checks_values",
    "gated_gelu",
    "has_silent_rows",
    "kernel_modulated_attention",
    "kernel_softmax_gradients",
    "kernel_softmax_probabilities",
    "naive_read_in",
    "written_out_kernel_attention",
]
