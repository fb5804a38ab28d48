"""Reference forms used to check the model, never by the model itself."""

import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def naive_read_in(read_in, states: torch.Tensor, codes: torch.Tensor, tokens: torch.Tensor, token_mask=None):
    """The read-in as written in the paper: every input module projects every token, building keys and values of
    shape (B, U, V, H, Dh). `ReadIn.attend` computes the same function without them (NAC_SPEC §7).

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
    the same weights with its gradient written out (NAC_SPEC §4). query `(B, H, R, d)`, key and value `(B, H, S, d)`,
    kernel `(B|1, 1, R, S)`. Returns the context and the weights."""
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
