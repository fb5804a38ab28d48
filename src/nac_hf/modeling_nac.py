"""Neural Attentive Circuits (Rahaman et al., NeurIPS 2022) as a transformers model.

A NAC is a set of modules, each with a code (what it computes), a signature (where it sits in the connectivity
graph) and a state. The circuit generator holds codes and signatures and seeds the states; the circuit executor
tokenizes the input, lets the input modules read it (read-in), runs propagator layers of sparse, kernel-modulated
message passing among modules, and reads the result out through the output modules. docs/architecture.md gives the
equations and names the class that implements each; the autograd functions with hand-written gradients that the
attention uses are in functional_nac.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from safetensors import SafetensorError
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.dynamic_module_utils import custom_object_save
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_nac import NACConfig, check_attn_implementation
from .modalities import MODALITIES, modality_of
from .support_nac import HUB_ARGUMENTS, corrupt_checkpoint_error, main_input_first
from .functional_nac import (
    RelaxedBernoulliSample,
    checks_values,
    gated_gelu,
    kernel_modulated_attention,
    written_out_kernel_attention,
)
from .graph_priors import (
    build_prior_graph,
    fit_signatures,
    graph_adjacency,
    graphon_distance,
    graphon,
    match_nodes,
)


# The classes a saved folder maps to, so that it loads with `trust_remote_code=True` where nac_hf is not installed.
AUTO_MAP = {
    "AutoConfig": "configuration_nac.NACConfig",
    "AutoModel": "modeling_nac.NACModel",
    **{reads.auto_model_class: "modeling_nac.NACForClassification" for reads in MODALITIES.values()},
}


@dataclass
class NACModelOutput(ModelOutput):
    """
    Output of [`NACModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_modules, hidden_size)`):
            Final states of all modules, in the order input, processor, output modules.
        pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            The output modules' states pooled into one vector (the state itself for one output module).
        connectivity (`torch.FloatTensor` of shape `(num_kernels, num_receivers, num_senders)`):
            The truncated signature kernel K of every propagator layer and of the read-out (one row when
            `config.share_kernel`); with `config.conditional_signatures`, per example:
            `(num_kernels, batch_size, num_receivers, num_senders)`. Receivers are the processor then output modules,
            senders the input then processor modules; 0 where a pair never talks.
        graph_regularizer_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Unweighted distance of the learned link probabilities among processors to the configured graphon;
            computed in training (and by `NACForClassification` whenever labels are given).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            States of all modules `(batch_size, num_modules, hidden_size)` as seeded, after the read-in, after each
            propagator layer and after the read-out.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
            Attention weights of the read-in `(batch_size, num_read_in_heads, num_input_modules, num_tokens)`, of
            each propagator layer `(batch_size, num_heads, num_processor_modules, num_senders)` and of the read-out
            `(batch_size, num_heads, num_output_modules, num_senders)`.
        output_codes (`torch.FloatTensor` of shape `(num_output_modules, code_dim)`, or per example
            `(batch_size, num_output_modules, code_dim)` with a conditional generator):
            The output modules' codes as this forward pass used them; the classification head reads them.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    connectivity: torch.FloatTensor | None = None
    graph_regularizer_loss: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    output_codes: torch.FloatTensor | None = None


@dataclass
class NACExitOutput(NACModelOutput):
    """
    Output of [`NACModel.forward_with_exits`]: the pass with a read-out after every exit layer, each turned into
    logits by a task head. As [`NACModelOutput`], without hidden states or attentions, and:

    Args:
        exit_logits (`tuple(torch.FloatTensor)`, each of shape `(batch_size, num_labels)`):
            In training (`config.exit_training`), the logits of the read-out after every exit layer, the last one the
            full model's. Outside training (`config.exit_threshold`), one tensor: the logits each example left with.
        exit_layer (`torch.LongTensor` of shape `(batch_size,)`, *optional*, returned outside training):
            The propagator layer (counted from 1) after which each example was read out.
    """

    exit_logits: tuple[torch.FloatTensor, ...] | None = None
    exit_layer: torch.LongTensor | None = None


@dataclass
class NACClassifierOutput(ModelOutput):
    """
    Output of [`NACForClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            Task loss plus `config.graph_regularizer_weight` × `graph_regularizer_loss`.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Classification (or regression) scores.
        graph_regularizer_loss, connectivity, hidden_states, attentions: as in [`NACModelOutput`].
        exit_layer (`torch.LongTensor` of shape `(batch_size,)`, *optional*, returned with early exit):
            With `config.exit_threshold` set, outside training: the propagator layer (counted from 1) after which
            each example was read out.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    graph_regularizer_loss: torch.FloatTensor | None = None
    connectivity: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    exit_layer: torch.LongTensor | None = None


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------


def eager_attention(config: NACConfig) -> bool:
    """Whether the attentions run written out (`attn_implementation="eager"`) rather than through fused kernels
    (`"sdpa"`, the default). Read when an attention runs, as transformers models read it, so that
    `model.set_attn_implementation(...)` takes effect at once; the config and `_check_and_adjust_attn_implementation`
    refuse other values."""
    return config._attn_implementation == "eager"


def written_out_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """`softmax(scale · q kᵀ) v` as matrix products and a softmax, which `F.scaled_dot_product_attention` fuses; the
    context and the weights. `mask` is True where a query may attend to a key."""
    scores = query @ key.transpose(-1, -2) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(-1)
    return weights @ value, weights


class ModFC(nn.Module):
    """The modulated linear layer: `ModFC(x; c) = W (x ⊙ LN(W_c c)) + b`.

    `W`, `b` are shared by all modules; each module's code scales the input features, so each module computes with
    its own effective weight `W · diag(LN(W_c c))`.
    """

    def __init__(self, in_features: int, out_features: int, code_dim: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.code_proj = nn.Linear(code_dim, in_features, bias=False)
        self.eps = eps
        self._held = None  # (what it was computed from, the modulation): see `modulation`

    def modulation(self, code: torch.Tensor) -> torch.Tensor:
        """`LN(W_c c)`: one scale per input feature, `(..., code_dim) -> (..., in_features)`.

        In evaluation without gradients, where the codes are learned parameters (rows of them, as the executor
        passes them), the codes are the same from one forward pass to the next: the modulation is computed once and
        reused until the codes or `W_c` change (a training step, a load or a cast changes their storage or version).
        """
        key = self._reuse_key(code)
        if key is None:
            return F.layer_norm(self.code_proj(code), (self.code_proj.out_features,), eps=self.eps)
        if self._held is None or self._held[0] != key:
            modulation = F.layer_norm(self.code_proj(code), (self.code_proj.out_features,), eps=self.eps)
            # The tensors of the key are held with it, so that no other tensor can take their memory meanwhile.
            self._held = (key, modulation, code, self.code_proj.weight)
        return self._held[1]

    def _reuse_key(self, code: torch.Tensor) -> tuple | None:
        """What identifies the modulation of `code` when it may be reused (see `modulation`), else None."""
        if (self.training or torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.jit.is_tracing()
                or torch.onnx.is_in_onnx_export()):
            return None
        source = code if isinstance(code, nn.Parameter) else code._base
        weight = self.code_proj.weight  # a method, not a tensor, once quantised: then nothing is reused
        if not isinstance(source, nn.Parameter) or not isinstance(weight, torch.Tensor) or code.device.type == "meta":
            return None
        return (code.data_ptr(), code.shape, code.stride(), code.dtype, code._version, weight.data_ptr(),
                weight.dtype, weight._version)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        # x: (B, U, in); code: (U, code_dim) or (B, U, code_dim)
        return self.linear(x * self.modulation(code))


class ModFFN(nn.Module):
    """Pre-LN feed-forward network of modulated layers (ModFC → GEGLU or GELU → ModFC), on the module's own code."""

    def __init__(self, config: NACConfig):
        super().__init__()
        self.gated = config.hidden_act == "geglu"
        width = config.intermediate_size * (2 if self.gated else 1)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc_in = ModFC(config.hidden_size, width, config.code_dim, config.layer_norm_eps)
        self.fc_out = ModFC(config.intermediate_size, config.hidden_size, config.code_dim, config.layer_norm_eps)

    def forward(self, states: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        hidden = self.fc_in(self.norm(states), codes)
        if self.gated:
            hidden = gated_gelu(hidden)
        else:
            hidden = F.gelu(hidden)
        return self.fc_out(hidden, codes)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.init_value = init_value
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def drop_path_scale(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor | None:
    """Stochastic depth per example: `keep / (1 − rate)` of shape `(B, 1, …)` for a branch `x`, keep drawn from a
    Bernoulli(1 − rate); None outside training or at rate 0. A multiplication, so the branch stays in the autograd
    graph."""
    if not training or rate == 0.0:
        return None
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - rate)
    return keep.div_(1.0 - rate)


class ResidualBranch(nn.Module):
    """`x + drop_path(LayerScale(branch))`: the residual form shared by the read-in, propagators and read-out.
    LayerScale's γ and the drop-path factor are one `(B, 1, D)` scale, applied to the branch as it is added (one pass
    over the states instead of three, forward and backward)."""

    def __init__(self, config: NACConfig):
        super().__init__()
        self.layer_scale = LayerScale(config.hidden_size, config.layer_scale_init_value)

    def forward(self, states: torch.Tensor, update: torch.Tensor, drop_rate: float) -> torch.Tensor:
        scale = self.layer_scale.gamma
        keep = drop_path_scale(update, drop_rate, self.training)
        if keep is not None:
            scale = keep * scale  # (B, 1, D)
        return torch.addcmul(states, update, scale)


# ----------------------------------------------------------------------------------------------------------------
# Input tokenizers: the input as tokens (B, V, T) and a padding mask (B, V) or None
# ----------------------------------------------------------------------------------------------------------------


def _interpolate_grid(grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize a learned (1, C, h, w) grid to (1, C, height, width)."""
    if grid.shape[-2:] == (height, width):
        return grid
    return F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)


def _check_pixel_values(config: NACConfig, pixel_values: torch.Tensor | None, interpolate_pos_encoding: bool) -> None:
    if pixel_values is None:
        raise ValueError(f"this NAC reads images (config.tokenizer_type={config.tokenizer_type!r}): pass pixel_values")
    if pixel_values.dim() != 4:
        raise ValueError(
            f"expected pixel_values of shape (batch, {config.num_channels}, height, width), "
            f"got shape {tuple(pixel_values.shape)}"
        )
    if pixel_values.shape[1] != config.num_channels:
        raise ValueError(
            f"expected pixel_values with {config.num_channels} channels (config.num_channels), "
            f"got {pixel_values.shape[1]}"
        )
    height, width = pixel_values.shape[-2:]
    size = config.image_size
    if not interpolate_pos_encoding and (height, width) != (size, size):
        raise ValueError(
            f"expected pixel_values of {size}x{size} (config.image_size), got {height}x{width}: resize the images "
            f"to the model's size (NACImageProcessor.from_config(model.config) does), or pass "
            f"interpolate_pos_encoding=True to interpolate the position embedding from {size}x{size} to "
            f"{height}x{width}"
        )
    if height % config.patch_size or width % config.patch_size or height < config.patch_size:
        raise ValueError(
            f"image size {height}x{width} cannot be served by the position embedding: height and width must be "
            f"positive multiples of config.patch_size={config.patch_size} (the model was made for "
            f"{config.image_size}x{config.image_size}); resize the images, e.g. with NACImageProcessor"
        )
    if not pixel_values.is_floating_point():
        raise ValueError(f"expected floating-point pixel_values, got dtype {pixel_values.dtype}")


def _refuse_interpolation(config: NACConfig, interpolate_pos_encoding: bool) -> None:
    if interpolate_pos_encoding:
        raise ValueError(
            f"interpolate_pos_encoding=True resizes the position grid of a NAC that reads images, but this one reads "
            f"{config.main_input_name} (config.tokenizer_type={config.tokenizer_type!r}); leave it False"
        )


class PatchEmbedding(nn.Module):
    """Non-overlapping patches (Conv2d, kernel = stride = patch size) plus a learned, interpolable 2-D position grid."""

    embedding_name = "projection"  # the layer `get_input_embeddings` returns

    def __init__(self, config: NACConfig):
        super().__init__()
        self.config = config
        self.token_dim = config.hidden_size
        grid = config.image_size // config.patch_size
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, config.patch_size)
        self.position_embedding = nn.Parameter(torch.zeros(1, config.hidden_size, grid, grid))

    def forward(
        self, pixel_values: torch.Tensor | None, mask: None = None, interpolate_pos_encoding: bool = False
    ) -> tuple[torch.Tensor, None]:
        _check_pixel_values(self.config, pixel_values, interpolate_pos_encoding)
        features = self.projection(pixel_values.to(self.projection.weight.dtype))  # (B, D, h, w)
        features = features + _interpolate_grid(self.position_embedding, *features.shape[-2:])
        return features.flatten(2).transpose(1, 2), None  # (B, h*w, D)


class ConvNeXtBlock(nn.Module):
    """A ConvNeXt block (Liu et al., 2022) on channels-first features `(B, D, *spatial)`: a depthwise convolution of
    width 7, layer norm, an MLP of 4× width, LayerScale, residual. Over a 2-D grid of patches, or over a sequence of
    bytes (`spatial_dims=1`)."""

    def __init__(self, dim: int, eps: float, layer_scale_init_value: float, spatial_dims: int = 2):
        super().__init__()
        convolution = nn.Conv2d if spatial_dims == 2 else nn.Conv1d
        self.depthwise = convolution(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.fc_in = nn.Linear(dim, 4 * dim)
        self.fc_out = nn.Linear(4 * dim, dim)
        self.layer_scale = LayerScale(dim, layer_scale_init_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.depthwise(x).movedim(1, -1)  # (B, *spatial, D)
        hidden = self.layer_scale(self.fc_out(F.gelu(self.fc_in(self.norm(hidden)))))
        return x + hidden.movedim(-1, 1)


class ConvEmbedding(nn.Module):
    """ConvNeXt-style stem: a patchify conv (stride = patch size), one ConvNeXt block, and a learned positional grid
    concatenated as extra channels."""

    embedding_name = "stem"

    def __init__(self, config: NACConfig):
        super().__init__()
        self.config = config
        self.token_dim = config.hidden_size + config.conv_position_channels
        grid = config.image_size // config.patch_size
        self.stem = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, config.patch_size)
        self.stem_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.block = ConvNeXtBlock(config.hidden_size, config.layer_norm_eps, config.layer_scale_init_value)
        self.position_grid = nn.Parameter(torch.zeros(1, config.conv_position_channels, grid, grid))

    def forward(
        self, pixel_values: torch.Tensor | None, mask: None = None, interpolate_pos_encoding: bool = False
    ) -> tuple[torch.Tensor, None]:
        _check_pixel_values(self.config, pixel_values, interpolate_pos_encoding)
        features = self.stem(pixel_values.to(self.stem.weight.dtype))
        features = self.stem_norm(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        features = self.block(features)  # (B, D, h, w)
        grid = _interpolate_grid(self.position_grid, *features.shape[-2:]).expand(features.shape[0], -1, -1, -1)
        features = torch.cat([features, grid], dim=1)  # (B, D + P, h, w)
        return features.flatten(2).transpose(1, 2), None


class ByteEmbedding(nn.Module):
    """UTF-8 byte ids (shifted by the special tokens) → embedding + learned positions; padding masked in the read-in."""

    embedding_name = "embedding"

    def __init__(self, config: NACConfig):
        super().__init__()
        self.config = config
        self.token_dim = config.hidden_size
        self.embedding = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        # Each byte in the context of its neighbours (its word, rather than its letter alone): ConvNeXt blocks along
        # the text, of 7 bytes each, before the positions are added.
        self.context = nn.ModuleList(
            ConvNeXtBlock(config.hidden_size, config.layer_norm_eps, config.layer_scale_init_value, spatial_dims=1)
            for _ in range(config.byte_context_layers)
        )
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        interpolate_pos_encoding: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.config
        _refuse_interpolation(config, interpolate_pos_encoding)
        if input_ids is None:
            raise ValueError("this NAC reads bytes (config.tokenizer_type='byte'): pass input_ids (and attention_mask)")
        if input_ids.dim() != 2:
            raise ValueError(f"expected input_ids of shape (batch, length), got shape {tuple(input_ids.shape)}")
        if input_ids.is_floating_point() or input_ids.dtype == torch.bool:
            raise ValueError(f"expected integer input_ids, got dtype {input_ids.dtype}")
        if input_ids.shape[1] > config.max_position_embeddings:
            raise ValueError(
                f"input_ids has {input_ids.shape[1]} tokens but config.max_position_embeddings is "
                f"{config.max_position_embeddings}; truncate the text (NACByteTokenizer(..., truncation=True, "
                f"max_length={config.max_position_embeddings}))"
            )
        vocab_size = self.embedding.num_embeddings  # config.vocab_size, also after resize_token_embeddings
        if checks_values() and input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= vocab_size):
            raise ValueError(
                f"input_ids must lie in [0, {vocab_size}) (config.vocab_size), got values in "
                f"[{int(input_ids.min())}, {int(input_ids.max())}]; encode text with NACByteTokenizer"
            )
        if attention_mask is None:
            attention_mask = input_ids != config.pad_token_id
        elif attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"expected attention_mask of the shape of input_ids {tuple(input_ids.shape)}, "
                f"got {tuple(attention_mask.shape)}"
            )
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        tokens = self.embedding(input_ids)  # (B, V, D)
        if len(self.context):
            # Padding reads as zeros, so that a text's tokens are the same however much padding its batch has.
            keep = attention_mask.unsqueeze(1).to(tokens.dtype)  # (B, 1, V)
            features = tokens.transpose(1, 2) * keep  # (B, D, V)
            for block in self.context:
                features = block(features) * keep
            tokens = features.transpose(1, 2)
        return tokens + self.position_embedding(positions), attention_mask.bool()


class PointEmbedding(nn.Module):
    """Per-point MLP over (x, y, z) and its random Fourier features; no positions, so the order of points is free."""

    embedding_name = "mlp"

    def __init__(self, config: NACConfig):
        super().__init__()
        self.config = config
        self.token_dim = config.hidden_size
        # Fixed random frequencies, kept in the checkpoint so a loaded model sees the same features.
        self.register_buffer("frequencies", torch.zeros(3, config.num_fourier_features))
        features = 2 * config.num_fourier_features + 3
        self.mlp = nn.Sequential(
            nn.Linear(features, config.hidden_size), nn.GELU(), nn.Linear(config.hidden_size, config.hidden_size)
        )

    def forward(
        self, points: torch.Tensor | None, points_mask: torch.Tensor | None, interpolate_pos_encoding: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        _refuse_interpolation(self.config, interpolate_pos_encoding)
        if points is None:
            raise ValueError("this NAC reads point clouds (config.tokenizer_type='point'): pass points (B, N, 3)")
        if points.dim() != 3 or points.shape[-1] != 3:
            raise ValueError(f"expected points of shape (batch, num_points, 3), got shape {tuple(points.shape)}")
        if not points.is_floating_point():
            raise ValueError(f"expected floating-point points, got dtype {points.dtype}")
        if points_mask is not None and points_mask.shape != points.shape[:2]:
            raise ValueError(
                f"expected points_mask of shape {tuple(points.shape[:2])} (batch, num_points), "
                f"got {tuple(points_mask.shape)}"
            )
        points = points.to(self.frequencies.dtype)
        angles = 2 * math.pi * points @ self.frequencies  # (B, N, F)
        features = torch.cat([points, angles.sin(), angles.cos()], dim=-1)
        return self.mlp(features), (None if points_mask is None else points_mask.bool())


# Standard deviation of the image tokenizers' initial position grids: as in the reference implementation, positions
# are as large as the normalised patch features, so that the read-in can tell the patches apart from the first step.
POSITION_INIT_STD = 1.0

INPUT_EMBEDDINGS = {"patch": PatchEmbedding, "conv": ConvEmbedding, "byte": ByteEmbedding, "point": PointEmbedding}


# ----------------------------------------------------------------------------------------------------------------
# Circuit generator
# ----------------------------------------------------------------------------------------------------------------


class LogVarianceLinear(nn.Linear):
    """The seeder's log-variance layer: a Linear initialised to weight 0 and bias `config.seeder_logvar_init`, so
    the initial noise is small (std exp(½·bias)) and the same for every module. Its own class, because
    transformers initialises each layer through its own `_init_weights` branch."""


class Seeder(nn.Module):
    """Initial states from codes: `x⁰ = Linear(LN(c)) + ε ⊙ exp(½ Linear(LN(c)))`; the mean alone in evaluation."""

    def __init__(self, config: NACConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.code_dim, eps=config.layer_norm_eps)
        self.mean = nn.Linear(config.code_dim, config.hidden_size)
        self.log_variance = LogVarianceLinear(config.code_dim, config.hidden_size) if config.seeder_noise else None

    def forward(self, codes: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Initial states `(B, U, D)` from codes `(U, C)` or per example `(B, U, C)`; the noise is drawn per example."""
        normed = self.norm(codes)
        states = self.mean(normed)
        if self.log_variance is not None and self.training:
            scale = torch.exp(0.5 * self.log_variance(normed))
            noise = torch.randn((batch_size,) + states.shape[-2:], device=states.device, dtype=states.dtype)
            states = states + noise * scale
        return states.expand(batch_size, -1, -1)


class ConditioningReader(nn.Module):
    """One-head cross-attention from the modules' codes to the conditioning. Its parameters are those of
    `nn.MultiheadAttention(code_dim, 1, kdim=conditioning_dim, vdim=conditioning_dim)`, so checkpoints keep their
    keys, but the output projection is called as a layer, so adapters and quantised layers take effect on it."""

    def __init__(self, config: NACConfig):
        super().__init__()
        self.config = config
        code_dim, conditioning_dim = config.code_dim, config.conditioning_dim
        if code_dim == conditioning_dim:
            self.in_proj_weight = nn.Parameter(torch.zeros(3 * code_dim, code_dim))
        else:
            self.q_proj_weight = nn.Parameter(torch.zeros(code_dim, code_dim))
            self.k_proj_weight = nn.Parameter(torch.zeros(code_dim, conditioning_dim))
            self.v_proj_weight = nn.Parameter(torch.zeros(code_dim, conditioning_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * code_dim))
        self.out_proj = nn.Linear(code_dim, code_dim)

    def projection_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if hasattr(self, "in_proj_weight"):
            return self.in_proj_weight.chunk(3)
        return self.q_proj_weight, self.k_proj_weight, self.v_proj_weight

    def forward(self, queries: torch.Tensor, context: torch.Tensor, ignore: torch.Tensor | None) -> torch.Tensor:
        # queries: (B, U, C), context: (B, L, conditioning_dim), ignore: (B, L), True where a token is padding
        query_bias, key_bias, value_bias = self.in_proj_bias.chunk(3)
        query_weight, key_weight, value_weight = self.projection_weights()
        query = F.linear(queries, query_weight, query_bias)
        key = F.linear(context, key_weight, key_bias)
        value = F.linear(context, value_weight, value_bias)
        mask = None if ignore is None else ~ignore[:, None, :]  # (B, 1, L)
        if eager_attention(self.config):
            read, _ = written_out_attention(query, key, value, mask, 1.0 / math.sqrt(query.shape[-1]))
        else:
            read = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        return self.out_proj(read)


class CircuitGenerator(nn.Module):
    """Produces the circuit: every module's code and signature (input, processor, output modules in that order),
    from which the seeder makes the initial states.

    Unconditional (`config.conditioning_dim == 0`): codes and signatures are learned parameters. Conditional: each
    module also reads the example's conditioning (vectors or tokens) by cross-attention, queried by its code, and
    the result shifts its code (and, with `config.conditional_signatures`, its signature), so every example gets its
    own circuit. Processor signatures are fit to the configured graph prior when a model is created from its config
    (`NACPreTrainedModel._init_weights`); a loaded checkpoint keeps its own.
    """

    def __init__(self, config: NACConfig):
        super().__init__()
        self.config = config
        total = config.num_input_modules + config.num_processor_modules + config.num_output_modules
        codes, signatures = torch.zeros(total, config.code_dim), torch.zeros(total, config.signature_dim)
        self.set_modules(codes, signatures, config.num_added_modules)
        self.seeder = Seeder(config)
        if config.conditioning_dim:
            eps = config.layer_norm_eps
            self.code_norm = nn.LayerNorm(config.code_dim, eps=eps)
            self.conditioning_norm = nn.LayerNorm(config.conditioning_dim, eps=eps)
            self.conditioning_reader = ConditioningReader(config)
            self.code_shift = nn.Linear(config.code_dim, config.code_dim)
            self.signature_shift = (
                nn.Linear(config.code_dim, config.signature_dim) if config.conditional_signatures else None
            )
        else:
            self.conditioning_reader = None

    def added_rows(self, added: int, total: int) -> tuple[list[int], list[int]]:
        """The rows, among all `total` modules, of the last `added` processors (modules added to a trained model,
        `NACModel.add_modules`) with, where the processors read the input, their input modules before them; and the
        rows of all the others. As lists, so that they also index tensors on the meta device."""
        config = self.config
        end = config.num_input_modules + config.num_processor_modules
        rows = list(range(end - added, end)) if added else []
        if config.processors_read_in and added:
            rows = list(range(config.num_input_modules - added, config.num_input_modules)) + rows
        chosen = set(rows)
        return rows, [row for row in range(total) if row not in chosen]

    def set_modules(self, codes: torch.Tensor, signatures: torch.Tensor, added: int = 0) -> None:
        """Hold these codes `(U, C)` and signatures `(U, S)` of all modules (input, processor, output), the last
        `added` processors (modules added to a trained model, `NACModel.add_modules`, with their input modules where
        the processors read the input) in parameters of their own, `added_codes` and `added_signatures`, so that the
        others can be frozen while they train."""
        new, keep = self.added_rows(added, len(codes))
        for name in ("codes", "signatures", "added_codes", "added_signatures"):
            if name in self._parameters or name in self._buffers:
                delattr(self, name)
        self.codes = nn.Parameter(codes[keep].clone())
        pieces = {"signatures": signatures[keep].clone()}
        if added:
            self.added_codes = nn.Parameter(codes[new].clone())
            pieces["added_signatures"] = signatures[new].clone()
        for name, value in pieces.items():
            if self.config.freeze_signatures:
                # A buffer, not a parameter: saved and loaded under the same name, and never handed to an optimizer.
                self.register_buffer(name, value)
            else:
                setattr(self, name, nn.Parameter(value))

    def all_codes(self) -> torch.Tensor:
        """The learned codes of all modules, `(U, C)`, added processors in their place after the others."""
        return self.with_added(self.codes, getattr(self, "added_codes", None))

    def all_signatures(self) -> torch.Tensor:
        """The learned signatures of all modules, `(U, S)`."""
        return self.with_added(self.signatures, getattr(self, "added_signatures", None))

    def with_added(self, tensor: torch.Tensor, added: torch.Tensor | None) -> torch.Tensor:
        """The rows of all modules from those of the others (`tensor`) and of the added ones (`added`), each block of
        added rows in its place: after the other processors, and after the other input modules."""
        if added is None:
            return tensor
        config = self.config
        count = config.num_added_modules
        blocks = [(config.num_input_modules + config.num_processor_modules - len(added), added[-count:])]
        if config.processors_read_in:  # their input modules: after the others (which come first, so nothing moves)
            blocks.insert(0, (config.num_input_modules - count, added[:count]))
        pieces, start = [], 0
        for position, rows in blocks:
            pieces += [tensor[start:position], rows]
            start = position
        return torch.cat([*pieces, tensor[start:]])

    def prior_graph(self):
        """The configured graph prior over the processor modules, as a networkx graph."""
        config = self.config
        return build_prior_graph(
            config.graph_prior, config.num_processor_modules, **config.graph_parameters(), seed=config.graph_seed
        )

    def prior_signatures(self) -> torch.Tensor:
        """Processor signatures whose truncated kernel reproduces the configured graph prior."""
        config = self.config
        return fit_signatures(
            graph_adjacency(self.prior_graph()),
            config.signature_dim,
            config.kernel_truncation,
            steps=config.graph_fit_steps,
            lr=config.graph_fit_lr,
            seed=config.graph_seed,
        )

    def read_conditioning(
        self, conditioning: torch.Tensor | None, conditioning_mask: torch.Tensor | None, batch_size: int
    ) -> torch.Tensor:
        """What each module reads from the example's conditioning: `(B, U, C)`."""
        dim = self.config.conditioning_dim
        if conditioning is None:
            raise ValueError(
                f"this NAC has a conditional circuit generator (config.conditioning_dim={dim}): pass conditioning "
                f"of shape (batch, {dim}) or (batch, length, {dim})"
            )
        if conditioning.dim() == 2:
            conditioning = conditioning.unsqueeze(1)
        if conditioning.dim() != 3 or conditioning.shape[-1] != dim or conditioning.shape[0] != batch_size:
            raise ValueError(
                f"expected conditioning of shape ({batch_size}, {dim}) or ({batch_size}, length, {dim}) "
                f"(config.conditioning_dim={dim}), got {tuple(conditioning.shape)}"
            )
        ignore = None
        if conditioning_mask is not None:
            if conditioning_mask.shape != conditioning.shape[:2]:
                raise ValueError(
                    f"expected conditioning_mask of shape {tuple(conditioning.shape[:2])}, "
                    f"got {tuple(conditioning_mask.shape)}"
                )
            if checks_values() and not bool(conditioning_mask.bool().any(-1).all()):
                raise ValueError("every example needs at least one unmasked conditioning token")
            ignore = ~conditioning_mask.bool()
        queries = self.code_norm(self.all_codes()).expand(batch_size, -1, -1)  # (B, U, C)
        context = self.conditioning_norm(conditioning.to(queries.dtype))
        return self.conditioning_reader(queries, context, ignore)

    def forward(
        self,
        batch_size: int,
        conditioning: torch.Tensor | None = None,
        conditioning_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes `(U, C)` or per example `(B, U, C)`, and signatures `(U, S)` or per example `(B, U, S)`."""
        codes, signatures = self.all_codes(), self.all_signatures()
        if self.conditioning_reader is not None:
            read = self.read_conditioning(conditioning, conditioning_mask, batch_size)
            codes = codes + self.code_shift(read)
            if self.signature_shift is not None:
                signatures = signatures + self.signature_shift(read)
        elif conditioning is not None or conditioning_mask is not None:
            raise ValueError(
                "got conditioning but this NAC's circuit generator is unconditional (config.conditioning_dim=0)"
            )
        if self.training and self.config.code_noise > 0:
            # Multiplicative code noise, drawn afresh in every forward pass and shared by the examples of the batch
            # (as the reference implementation draws it): per-example codes would make every modulation a per-example
            # matmul, half again the FLOPs of a training step. A conditional generator's codes are per example already.
            codes = codes * (1.0 + self.config.code_noise * torch.randn_like(codes))
        return codes, signatures


# ----------------------------------------------------------------------------------------------------------------
# Signature kernel and SKMDPA
# ----------------------------------------------------------------------------------------------------------------


def module_distance(receivers: torch.Tensor, senders: torch.Tensor) -> torch.Tensor:
    """`d_uv = 1 − cos(s_u, s_v)` between receiver and sender signatures: `([B,] R, S)`."""
    return 1.0 - F.normalize(receivers, dim=-1) @ F.normalize(senders, dim=-1).transpose(-1, -2)


def truncate(kernel: torch.Tensor, talks: torch.Tensor) -> torch.Tensor:
    """Zero the kernel where modules do not talk, in the forward pass only (straight-through gradient)."""
    return kernel + (kernel * talks - kernel).detach()


class SignatureKernel(nn.Module):
    """`K_uv = exp(−d_uv / τ)` with a learnable bandwidth τ; pairs with `d_uv ≥ ε` do not talk.

    Returns the untruncated kernel; the truncation (`talks = d < ε`) is applied with `truncate`, in the forward pass
    only, so the gradient flows as if K were untruncated and signatures of pairs that do not talk yet keep learning.
    """

    def __init__(self, config: NACConfig):
        super().__init__()
        self.bandwidth_init = config.kernel_bandwidth_init
        # One element, not a 0-dim tensor: FSDP shards parameters along their first axis.
        self.log_bandwidth = nn.Parameter(torch.full((1,), math.log(config.kernel_bandwidth_init)))

    def forward(self, distance: torch.Tensor) -> torch.Tensor:
        return torch.exp(-distance / self.log_bandwidth.exp())


class ModulatedAttention(nn.Module):
    """Stochastic Kernel Modulated Dot-Product Attention between modules.

    Receiver u attends to sender v with `softmax_v(q_u·k_v/√D + log K̃_uv)`. Queries and outputs use the receiver's
    code, keys and values the sender's. K̃ is drawn per example from a relaxed Bernoulli with probability K in
    training (`config.stochastic_kernel`), and is K (or K thresholded at 0.5) otherwise. With
    `attn_implementation="sdpa"` (the default) it runs as `kernel_modulated_attention`'s fused forms, with
    `"eager"` as `written_out_kernel_attention`, differentiated by autograd.
    """

    def __init__(self, config: NACConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.attention_head_dim
        inner = self.num_heads * self.head_dim
        eps = config.layer_norm_eps
        self.query = ModFC(config.hidden_size, inner, config.code_dim, eps)
        # q·b_k is constant over senders and cancels in the softmax: keys carry no bias.
        self.key = ModFC(config.hidden_size, inner, config.code_dim, eps, bias=False)
        self.value = ModFC(config.hidden_size, inner, config.code_dim, eps)
        self.output = ModFC(inner, config.hidden_size, config.code_dim, eps)

    def sample_kernel(self, kernel: torch.Tensor, talks: torch.Tensor, batch_size: int) -> torch.Tensor:
        """K̃ for this forward pass, 0 where modules do not talk: `(B, R, S)` when sampled or when the kernel is per
        example, else `(R, S)`."""
        config = self.config
        if self.training and config.stochastic_kernel:
            # Relaxed Bernoulli with probability K, reparameterised; drawn from the untruncated kernel, then cut
            # where modules do not talk (straight-through, like the kernel itself). The bounds keep the gradient
            # through logit(K), which grows like 1 / (1 - K), finite for near-identical signatures.
            probs = kernel.float().clamp(1e-6, 1 - 1e-3)
            shape = (batch_size,) + kernel.shape[-2:]
            # logit u of u uniform in [1e-6, 1 − 1e-6]: logistic noise
            noise = torch.rand(shape, device=kernel.device, dtype=probs.dtype).logit_(eps=1e-6)
            return RelaxedBernoulliSample.apply(probs, noise, talks, config.kernel_temperature)
        if not self.training and config.kernel_eval_mode == "threshold":
            return ((kernel * talks) > 0.5).to(kernel.dtype)
        return truncate(kernel, talks)

    def forward(
        self,
        receivers: torch.Tensor,
        receiver_codes: torch.Tensor,
        senders: torch.Tensor,
        sender_codes: torch.Tensor,
        kernel: torch.Tensor,
        talks: torch.Tensor,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # receivers: (B, R, D), senders: (B, S, D), kernel (untruncated) and talks: ([B,] R, S)
        batch, num_receivers, _ = receivers.shape
        num_senders = senders.shape[1]
        query = self.query(receivers, receiver_codes).view(batch, num_receivers, self.num_heads, self.head_dim)
        key = self.key(senders, sender_codes).view(batch, num_senders, self.num_heads, self.head_dim)
        value = self.value(senders, sender_codes).view(batch, num_senders, self.num_heads, self.head_dim)
        query, key, value = (t.transpose(1, 2) for t in (query, key, value))  # (B, H, ·, Dh)
        kernel_sample = self.sample_kernel(kernel, talks, batch)  # (B, R, S) or (R, S)
        kernel_sample = (kernel_sample if kernel_sample.dim() == 3 else kernel_sample.unsqueeze(0)).unsqueeze(1)
        if eager_attention(self.config):
            # in the kernel's float32 also under bf16, as the fused path computes it
            dtype = torch.promote_types(query.dtype, kernel_sample.dtype)
            context, weights = written_out_kernel_attention(*(t.to(dtype) for t in (query, key, value, kernel_sample)))
            context, weights = context.to(value.dtype), (weights if output_attentions else None)
        else:
            context, weights = kernel_modulated_attention(query, key, value, kernel_sample, output_attentions)
        context = context.transpose(1, 2).reshape(batch, num_receivers, self.num_heads * self.head_dim)
        return self.output(context, receiver_codes), weights


# ----------------------------------------------------------------------------------------------------------------
# Circuit executor: read-in, propagator, read-out
# ----------------------------------------------------------------------------------------------------------------


class ReadIn(nn.Module):
    """Input modules cross-attend to the tokens, each through its own modulated key/value projection.

    Exact fast form (no (B, V, U, d) tensor): with `a_u = LN(W_{c,k} c_u)`,
    `q_u·k_{u,v} = ((W_kᵀ q_u) ⊙ a_u)·x_v` (keys carry no bias: `q_u·b_k` would be constant over v and cancel),
    and `Σ_v α_uv (W_v (x_v ⊙ b_u) + b_v) = W_v ((Σ_v α_uv x_v) ⊙ b_u) + b_v`. Both projections are applied by
    calling their layers, never by reading their weights, so adapters, hooks and quantised layers take effect.
    The attention over the tokens runs through SDPA, or as matrix products and a softmax with
    `attn_implementation="eager"` or when its weights are asked for; in this fast form either way, since the paper's
    form (`naive_read_in`) holds every module's keys and values of every token.
    """

    def __init__(self, config: NACConfig, token_dim: int):
        super().__init__()
        self.config = config
        self.num_heads = config.num_read_in_heads
        self.head_dim = config.attention_head_dim
        inner = self.num_heads * self.head_dim
        eps = config.layer_norm_eps
        self.state_norm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.token_norm = nn.LayerNorm(token_dim, eps=eps)
        self.query = ModFC(config.hidden_size, inner, config.code_dim, eps)
        self.key = ModFC(token_dim, inner, config.code_dim, eps, bias=False)
        self.value = ModFC(token_dim, inner, config.code_dim, eps)
        self.output = ModFC(inner, config.hidden_size, config.code_dim, eps)
        # At 1, as in the reference implementation: the input reaches the seeded states, which are the same for
        # every example, at full strength from the first step.
        self.attention_scale = LayerScale(config.hidden_size, 1.0)
        self.ffn = ModFFN(config)
        self.ffn_residual = ResidualBranch(config)

    def attend(
        self,
        states: torch.Tensor,
        codes: torch.Tensor,
        tokens: torch.Tensor,
        token_mask: torch.Tensor | None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # states: (B, U, D), codes: (U, C) or (B, U, C), tokens: (B, V, T), token_mask: (B, V) or None
        batch, num_modules, _ = states.shape
        token_dim = tokens.shape[-1]
        heads, head_dim = self.num_heads, self.head_dim
        tokens = self.token_norm(tokens)
        query = self.query(self.state_norm(states), codes).view(batch, num_modules, heads, head_dim)
        key_scale = self.key.modulation(codes)  # a_u: (U, T) or (B, U, T)
        value_scale = self.value.modulation(codes)  # b_u
        if key_scale.dim() == 2:
            key_scale, value_scale = key_scale.unsqueeze(0), value_scale.unsqueeze(0)
        # W_kᵀ read off the key layer itself (it has no bias): calling the layer keeps adapters (LoRA), hooks and
        # quantised replacements of it in effect. Exact for a plain nn.Linear.
        eye = torch.eye(token_dim, device=tokens.device, dtype=tokens.dtype)
        key_weight = self.key.linear(eye).t().reshape(heads, head_dim, token_dim)  # (H, Dh, T)
        # q̃_{u,h} = (W_{k,h}ᵀ q_{u,h}) ⊙ a_u
        query_tokens = torch.einsum("buhd,hdt->bhut", query, key_weight) * key_scale.unsqueeze(1)  # (B, H, U, T)
        keys = tokens.unsqueeze(1).expand(batch, heads, -1, token_dim)  # (B, H, V, T), a view
        mask = None if token_mask is None else token_mask[:, None, None, :]  # (B, 1, 1, V)
        scale = 1.0 / math.sqrt(head_dim)
        if output_attentions or eager_attention(self.config):
            pooled, weights = written_out_attention(query_tokens, keys, keys, mask, scale)  # weights: (B, H, U, V)
            weights = weights if output_attentions else None
        else:
            weights = None
            pooled = F.scaled_dot_product_attention(
                query_tokens, keys, keys, attn_mask=mask, scale=scale
            )  # (B, H, U, T): Σ_v α_uv x_v per head
        # W_v (x̄_{u,h} ⊙ b_u) + b_v through the value layer itself; head h keeps its own block of the output.
        values = self.value.linear(pooled * value_scale.unsqueeze(1))  # (B, H, U, H·Dh)
        if heads > 1:
            values = values.view(batch, heads, num_modules, heads, head_dim).diagonal(dim1=1, dim2=3)  # (B, U, Dh, H)
            values = values.permute(0, 1, 3, 2)
        values = values.reshape(batch, num_modules, heads * head_dim)
        return self.output(values, codes), weights

    def forward(self, states, codes, tokens, token_mask, drop_rate: float, output_attentions: bool = False):
        update, weights = self.attend(states, codes, tokens, token_mask, output_attentions)
        # No residual, as in the reference implementation: the input modules' states are what they read, so the
        # input is not diluted by the seeded states.
        states = self.attention_scale(update)
        states = self.ffn_residual(states, self.ffn(states, codes), drop_rate)
        return states, weights


class Propagator(GradientCheckpointingLayer):
    """One round of message passing: receivers attend to senders through SKMDPA, then a ModFFN (both pre-LN, with
    LayerScale and drop-path). Used for the propagator layers (processor receivers) and the read-out (output
    receivers); the senders are the input and processor modules, or the processors alone
    (`config.processors_read_in`)."""

    def __init__(self, config: NACConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = ModulatedAttention(config)
        self.attention_residual = ResidualBranch(config)
        self.ffn = ModFFN(config)
        self.ffn_residual = ResidualBranch(config)

    def forward(
        self,
        receivers: torch.Tensor,
        senders: torch.Tensor,
        receiver_codes: torch.Tensor,
        sender_codes: torch.Tensor,
        kernel: torch.Tensor,
        talks: torch.Tensor,
        drop_rate: float = 0.0,
        output_attentions: bool = False,
        receivers_send: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # receivers_send: the receivers are the last senders (processors hearing processors), normalised once
        normed_senders = self.norm(senders)
        normed_receivers = normed_senders[:, -receivers.shape[1] :] if receivers_send else self.norm(receivers)
        update, weights = self.attention(
            normed_receivers, receiver_codes, normed_senders, sender_codes, kernel, talks, output_attentions
        )
        receivers = self.attention_residual(receivers, update, drop_rate)
        receivers = self.ffn_residual(receivers, self.ffn(receivers, receiver_codes), drop_rate)
        return receivers, weights


class OutputPooling(nn.Module):
    """Pools several output modules by a softmaxed confidence score (Gumbel-softmax in training) or the mean."""

    def __init__(self, config: NACConfig):
        super().__init__()
        self.config = config
        use_score = config.num_output_modules > 1 and config.output_pooling == "confidence"
        self.score = nn.Linear(config.hidden_size, 1) if use_score else None

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        # outputs: (B, O, D) -> (B, D)
        if outputs.shape[1] == 1:
            return outputs[:, 0]
        if self.score is None:
            return outputs.mean(1)
        scores = self.score(outputs).squeeze(-1)  # (B, O)
        if self.training:
            weights = F.gumbel_softmax(scores, tau=self.config.output_gumbel_temperature, dim=-1)
        else:
            weights = scores.softmax(-1)
        return (weights.unsqueeze(-1) * outputs).sum(1)


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


# A task head: the logits `(B, num_labels)` of the pooled output state `(B, D)` and the output modules' codes.
Head = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# The parameters of processor modules added to a trained classifier (`add_modules`).
ADDED_MODULE_PARAMETERS = ("nac.generator.added_codes", "nac.generator.added_signatures")
# How far from 1 a row of soft targets may sum (float32 rounding of mixed, smoothed one-hot rows is far smaller).
SOFT_TARGET_TOLERANCE = 1e-3


class CheckpointMismatchError(RuntimeError, ValueError):
    """A checkpoint's weights do not fit the requested config. A RuntimeError, as transformers raises for a size
    mismatch; also a ValueError, as it is a bad argument."""


class NACPreTrainedModel(PreTrainedModel):
    """Weight initialisation, graph-prior fitting at creation, and saving with the code for `trust_remote_code`."""

    config_class = NACConfig
    base_model_prefix = "nac"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    # The forward compiles to one graph (value checks of inputs and labels run in eager mode only); a graph-prior
    # regulariser (`config.graph_regularizer`) matches nodes on the CPU and breaks the graph.
    _can_compile_fullgraph = True
    # `attn_implementation`: "sdpa" (the default) or "eager" (`eager_attention`); no flash or flex attention, which
    # cannot weigh the attention by the signature kernel.
    _supports_sdpa = True
    _no_split_modules = ["Propagator", "ReadIn"]

    def __init__(self, config: NACConfig, *inputs, **kwargs):
        super().__init__(config, *inputs, **kwargs)
        self.main_input_name = config.main_input_name

    def _check_and_adjust_attn_implementation(
        self, attn_implementation: str | None, is_init_check: bool = False, allow_all_kernels: bool = False
    ) -> str:
        check_attn_implementation(attn_implementation)  # before transformers looks for kernels on the Hub
        return super()._check_and_adjust_attn_implementation(attn_implementation, is_init_check, allow_all_kernels)

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        # Every attention reads `config._attn_implementation` when it runs (`eager_attention`).
        return True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        config = self.config
        std = config.initializer_range
        if isinstance(module, LogVarianceLinear):
            init.zeros_(module.weight)
            init.constant_(module.bias, config.seeder_logvar_init)
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            # Fan-in scaled as PyTorch's own default, uniform in ±1/√fan_in (std 1/√(3·fan_in)), with zero bias: the
            # scale the reference implementation trains from. With the seeder's noise at its small initial scale
            # and the read-in's LayerScale at 1, the input reaches every layer from the first step.
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, ConditioningReader):
            packed = getattr(module, "in_proj_weight", None)  # q, k and v in one tensor when the sizes agree
            for weight in [packed] if packed is not None else module.projection_weights():
                init.kaiming_uniform_(weight, a=math.sqrt(5))
            init.zeros_(module.in_proj_bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, LayerScale):
            init.constant_(module.gamma, module.init_value)
        elif isinstance(module, SignatureKernel):
            init.constant_(module.log_bandwidth, math.log(module.bandwidth_init))
        elif isinstance(module, (PatchEmbedding, ConvEmbedding)):
            grid = module.position_embedding if isinstance(module, PatchEmbedding) else module.position_grid
            init.normal_(grid, std=POSITION_INIT_STD)
        elif isinstance(module, PointEmbedding):
            init.normal_(module.frequencies, std=config.fourier_feature_scale)
        elif isinstance(module, CircuitGenerator):
            init.normal_(module.codes, std=1.0)
            if hasattr(module, "added_codes"):
                init.normal_(module.added_codes, std=1.0)
            if not getattr(module.signatures, "_is_hf_initialized", False):
                # Random signatures everywhere; the processors' then fit to the graph prior. This runs when a model
                # is created from its config only: a loaded checkpoint brings its signatures.
                signatures = torch.randn(module.all_signatures().shape)
                if config.graph_prior != "none":
                    start = config.num_input_modules
                    signatures[start : start + config.num_processor_modules] = module.prior_signatures()
                new, keep = module.added_rows(config.num_added_modules, len(signatures))
                init.copy_(module.signatures, signatures[keep])
                if new:
                    init.copy_(module.added_signatures, signatures[new])
        elif isinstance(module, NACModel) and module.graph_target is not None:
            init.copy_(module.graph_target, module.make_graph_target())

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        # Load as if mismatched sizes were allowed, then decide from the load report: with
        # `ignore_mismatched_sizes=True` the weights that differ are re-initialised (e.g. a new head), as for every
        # transformers model; without it, the RuntimeError transformers raises, naming the config fields that differ.
        ignore_mismatched_sizes = kwargs.pop("ignore_mismatched_sizes", False)
        output_loading_info = kwargs.pop("output_loading_info", False)
        hub_arguments = {key: kwargs[key] for key in HUB_ARGUMENTS if key in kwargs}
        try:
            model, loading_info = super().from_pretrained(
                pretrained_model_name_or_path, *args, ignore_mismatched_sizes=True, output_loading_info=True, **kwargs
            )
        except SafetensorError as error:
            raise corrupt_checkpoint_error(pretrained_model_name_or_path, hub_arguments, error) from error
        if loading_info["mismatched_keys"] and not ignore_mismatched_sizes:
            saved = NACConfig.from_pretrained(pretrained_model_name_or_path, **hub_arguments)
            differences = "; ".join(saved.architecture_differences(model.config))
            raise CheckpointMismatchError(
                f"the checkpoint at {pretrained_model_name_or_path!r} does not match the requested config "
                f"(checkpoint vs requested: {differences or 'see the load report above'}); load it with its own "
                "config, or pass ignore_mismatched_sizes=True to re-initialise the weights that differ (e.g. a new "
                "head)"
            )
        return (model, loading_info) if output_loading_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        # One saved folder serves every Auto class this model is registered for, also without nac_hf installed.
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        cls = type(self)
        own = next(base for base in cls.__mro__ if base.__module__ == __name__)
        if cls is own:
            return super().save_pretrained(save_directory, *args, **kwargs)
        # A wrapper's subclass (FSDP2 makes `FSDPNACForClassification`, defined in torch): save this module's code
        # and AUTO_MAP's classes, not the wrapper's.
        cls._auto_class = None  # shadows the class's registration for this save only
        try:
            saved = super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            del cls._auto_class
        if self.should_save_on_this_rank(kwargs.get("is_main_process", True)):
            custom_object_save(own, save_directory)
        return saved


class Recorder:
    """Collects what a forward pass was asked to return besides its result: the states of all modules after each
    step (`output_hidden_states`) and the attention weights of each step (`output_attentions`)."""

    def __init__(self, config: NACConfig, hidden_states: bool | None, attentions: bool | None):
        hidden_states = config.output_hidden_states if hidden_states is None else hidden_states
        self.attentions = config.output_attentions if attentions is None else attentions  # steps return weights
        self.hidden_states = () if hidden_states else None
        self.weights = () if self.attentions else None

    def __call__(self, states: "CircuitState | torch.Tensor", weights: torch.Tensor | None = None) -> None:
        if self.hidden_states is not None:
            self.hidden_states += (states.all_states() if isinstance(states, CircuitState) else states,)
        if self.weights is not None and weights is not None:
            self.weights += (weights,)


@dataclass
class CircuitState:
    """A forward pass between two steps: the states of the input, processor and output modules `(B, ·, D)`, the
    codes `([B,] U, C)`, the kernels `(K, [B,] P + O, S)` and which pairs are heard `([B,] P + O, S)`, over the S
    senders: the input then processor modules, or the processors alone when the input modules send to no one
    (`input_senders=False`, `config.processors_read_in`). The codes, kernels and heard pairs have a batch axis only
    where they are per example."""

    inputs: torch.Tensor
    processors: torch.Tensor
    outputs: torch.Tensor
    codes: torch.Tensor
    kernels: torch.Tensor
    heard: torch.Tensor
    input_senders: bool = True

    def senders(self) -> torch.Tensor:
        """The states every receiver may hear, `(B, S, D)`: input then processor modules, or the processors alone."""
        return torch.cat([self.inputs, self.processors], dim=1) if self.input_senders else self.processors

    def all_states(self) -> torch.Tensor:
        """The states of all modules, `(B, U, D)`."""
        return torch.cat([self.inputs, self.processors, self.outputs], dim=1)

    def select(self, rows: torch.Tensor) -> "CircuitState":
        """The same pass for the examples `rows` alone (indices, or a boolean mask over the batch)."""

        def pick(tensor: torch.Tensor, batch_dim: int, batched: bool) -> torch.Tensor:
            return tensor.index_select(batch_dim, rows) if batched else tensor

        if rows.dtype == torch.bool:
            rows = rows.nonzero().squeeze(1)
        return CircuitState(
            inputs=self.inputs[rows],
            processors=self.processors[rows],
            outputs=self.outputs[rows],
            codes=pick(self.codes, 0, self.codes.dim() == 3),
            kernels=pick(self.kernels, 1, self.kernels.dim() == 4),
            heard=pick(self.heard, 0, self.heard.dim() == 3),
            input_senders=self.input_senders,
        )


class NACModel(NACPreTrainedModel):
    """The bare Neural Attentive Circuit: circuit generator and executor, returning module states, the pooled output
    of the output modules and the connectivity that was used.

    Inputs, by `config.tokenizer_type`: `pixel_values` (B, C, H, W) for `"patch"`/`"conv"`; `input_ids` (B, V) and
    `attention_mask` for `"byte"`; `points` (B, N, 3) and an optional `points_mask` (B, N) for `"point"`. With a
    conditional circuit generator (`config.conditioning_dim > 0`), also `conditioning` (B, conditioning_dim) or
    (B, L, conditioning_dim) and an optional `conditioning_mask` (B, L).
    """

    def __init__(self, config: NACConfig):
        super().__init__(config)
        self.input_tokenizer = INPUT_EMBEDDINGS[config.tokenizer_type](config)
        self.generator = CircuitGenerator(config)
        self.read_in = ReadIn(config, self.input_tokenizer.token_dim)
        num_weight_sets = 1 if config.share_propagator_weights else config.num_hidden_layers
        self.propagators = nn.ModuleList(Propagator(config) for _ in range(num_weight_sets))
        self.read_out = Propagator(config)
        num_kernels = 1 if config.share_kernel else config.num_hidden_layers + 1
        self.kernels = nn.ModuleList(SignatureKernel(config) for _ in range(num_kernels))
        self.pooling = OutputPooling(config)
        if config.graph_regularizer != "none":
            n = config.num_processor_modules
            self.register_buffer("graph_target", torch.zeros(n, n), persistent=False)
        else:
            self.graph_target = None
        # Drop-path rises linearly: 0 in the read-in, the full rate in the read-out.
        steps = config.num_hidden_layers + 1
        self.drop_rates = [config.drop_path_rate * step / steps for step in range(steps + 1)]
        self.post_init()

    @torch.no_grad()
    def add_modules(self, count: int, init: str = "mirror", seed: int = 0) -> list[int]:
        """Capacity extension, as in Neural Interpreters: add `count` processor modules to this (trained) NAC, with
        codes and signatures of their own (`generator.added_codes`, `generator.added_signatures`) that join the
        learned graph. Everything else is shared, so a new module computes with the trained weights, modulated by its
        own code.

        `init="mirror"`: each new module copies the signature of an existing processor drawn at random (`seed`), so
        it talks with the modules that one talks with, and its code, perturbed by 1 % of the codes' spread so that it
        can learn something else. `init="random"`: a code drawn as codes are initialised and a random signature, drawn
        again until it talks with at least one existing processor (talking is symmetric, so in both directions).
        With `config.processors_read_in`, each new processor reads the input through a new input module of its own
        (for `mirror`, a copy of its source's, perturbed alike). The config then counts the new processors
        (`num_processor_modules`, `num_added_modules`, and `num_input_modules` where they read the input) and names
        no graph prior or regulariser, whose graphs were drawn for the modules there were. Returns the new modules'
        indices among the processors. To train only them, `NACForClassification.add_modules(...,
        freeze_existing=True)`."""
        if init not in ("mirror", "random"):
            raise ValueError(f"unknown initialisation {init!r} of added modules; choose 'mirror' or 'random'")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"add_modules adds a positive number of modules, got {count!r}")
        config, generator = self.config, self.generator
        codes, signatures = generator.all_codes().detach(), generator.all_signatures().detach()
        num_in, num_proc = config.num_input_modules, config.num_processor_modules
        end = num_in + num_proc
        existing = signatures[num_in:end]
        rng = torch.Generator().manual_seed(seed)
        if init == "mirror":
            sources = torch.randint(num_proc, (count,), generator=rng)
            spread = codes[num_in:end].std()
            new_codes = codes[num_in:end][sources] + 0.01 * spread * torch.randn(count, config.code_dim, generator=rng)
            new_signatures = existing[sources]
        else:
            new_codes = torch.randn(count, config.code_dim, generator=rng)
            new_signatures = torch.stack([self.joining_signature(existing, rng) for _ in range(count)])
        pieces = [(codes[:num_in], signatures[:num_in])]
        if config.processors_read_in:
            # Each new processor reads the input through a new input module: the source's (perturbed alike), or new.
            if init == "mirror":
                spread = codes[:num_in].std()
                input_codes = codes[sources] + 0.01 * spread * torch.randn(count, config.code_dim, generator=rng)
            else:
                input_codes = torch.randn(count, config.code_dim, generator=rng)
            # Input modules send to no one here: their signatures are kept for the layout only.
            input_signatures = (signatures[:num_in][sources] if init == "mirror"
                                else torch.randn(count, config.signature_dim, generator=rng).to(signatures))
            pieces.append((input_codes.to(codes), input_signatures))
        pieces += [(codes[num_in:end], existing), (new_codes.to(codes), new_signatures.to(signatures)),
                   (codes[end:], signatures[end:])]
        codes = torch.cat([piece[0] for piece in pieces])
        signatures = torch.cat([piece[1] for piece in pieces])
        if config.processors_read_in:
            config.num_input_modules = num_in + count
        config.num_processor_modules = num_proc + count
        config.num_added_modules += count
        config.graph_prior, config.graph_regularizer, config.graph_regularizer_weight = "none", "none", 0.0
        self.graph_target = None
        generator.set_modules(codes, signatures, config.num_added_modules)
        return list(range(num_proc, num_proc + count))

    def joining_signature(self, existing: torch.Tensor, rng: torch.Generator, tries: int = 10_000) -> torch.Tensor:
        """A random signature, at the scale of `existing` ones, that talks with at least one of them."""
        scale = existing.norm(dim=-1).mean()
        for _ in range(tries):
            candidate = torch.randn(existing.shape[-1], generator=rng).to(existing)
            if bool((module_distance(candidate[None], existing) < self.config.kernel_truncation).any()):
                return candidate * scale / candidate.norm()
        raise RuntimeError(
            f"no random signature talks with an existing processor in {tries} draws (kernel_truncation="
            f"{self.config.kernel_truncation}); add the modules with init='mirror'"
        )

    def make_graph_target(self) -> torch.Tensor:
        """The graphon the regulariser pulls the processors' link probabilities towards: `(P, P)`."""
        config = self.config
        return graphon(config.graph_regularizer, config.num_processor_modules, **config.graph_parameters())

    def get_input_embeddings(self) -> nn.Module:
        """The layer that embeds the input: the byte embedding (`nn.Embedding`), the patch projection or conv stem
        (`nn.Conv2d`), or the point MLP."""
        return getattr(self.input_tokenizer, self.input_tokenizer.embedding_name)

    def set_input_embeddings(self, value: nn.Module) -> None:
        setattr(self.input_tokenizer, self.input_tokenizer.embedding_name, value)

    @property
    def input_senders(self) -> int:
        """How many senders are input modules: `num_input_modules`, or 0 with `config.processors_read_in`, where the
        input modules send to no one. The senders are these input modules, then the processors."""
        return 0 if self.config.processors_read_in else self.config.num_input_modules

    def circuit(self, signatures: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Untruncated kernels `(num_kernels, [B,] P + O, S)` and where modules talk `([B,] P + O, S)`: receivers
        are the processor then output modules, senders the input then processor modules (S = I + P), or the
        processors alone with `config.processors_read_in` (S = P). The batch axis is there only for per-example
        signatures (`config.conditional_signatures`)."""
        config = self.config
        signatures = self.generator.all_signatures() if signatures is None else signatures
        num_in = config.num_input_modules
        senders = signatures[..., num_in - self.input_senders : num_in + config.num_processor_modules, :]
        # In float32 also under bf16/fp16 autocast: kernel values near 1 and their logits are not representable.
        with torch.autocast(signatures.device.type, enabled=False):
            distance = module_distance(signatures[..., num_in:, :].float(), senders.float())
            kernels = torch.stack([kernel(distance) for kernel in self.kernels])
        talks = distance < config.kernel_truncation
        # The read-out is not truncated, as in the reference implementation: the output modules hear every sender,
        # weighted by the kernel, so that no part of the circuit is cut off from the output.
        talks[..., config.num_processor_modules :, :] = True
        return kernels, talks

    def circuit_of_all_senders(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`circuit()` with a column for every input and processor module, `(K, [B,] P + O, I + P)`: the input
        modules' columns are 0 and False where they send to no one (`config.processors_read_in`)."""
        kernels, talks = self.circuit()
        missing = self.config.num_input_modules - self.input_senders
        if missing:
            kernels = torch.cat([kernels.new_zeros(kernels.shape[:-1] + (missing,)), kernels], dim=-1)
            talks = torch.cat([talks.new_zeros(talks.shape[:-1] + (missing,)), talks], dim=-1)
        return kernels, talks

    def graph_regularizer(self, connectivity: torch.Tensor) -> torch.Tensor | None:
        """Distance of the processors' learned links to the configured graphon (None without a regulariser)."""
        if self.graph_target is None:
            return None
        links = connectivity[..., : self.config.num_processor_modules, self.input_senders :]  # (K, [B,] P, P)
        links = links.mean(1) if links.dim() == 4 else links
        # One node matching for all layers (the signatures, hence the graph, are shared; only bandwidths differ).
        perm = match_nodes(links.detach().mean(0), self.graph_target)
        distance = self.config.graph_regularizer_distance
        return torch.stack([graphon_distance(k, self.graph_target, distance, perm=perm) for k in links]).mean()

    def connectivity(self, signatures: torch.Tensor | None = None) -> torch.Tensor:
        """The truncated kernels `(num_kernels, [B,] P + O, S)`: 0 where modules never talk."""
        return truncate(*self.circuit(signatures))

    @main_input_first("pixel_values")
    def forward(
        self,
        inputs: torch.Tensor | None = None,
        /,
        *,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        points_mask: torch.Tensor | None = None,
        conditioning: torch.Tensor | None = None,
        conditioning_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> NACModelOutput | tuple:
        """The main input (`model.main_input_name`) comes positionally or by its keyword. `interpolate_pos_encoding`:
        read images of another size than `config.image_size` by interpolating the position embedding (refused
        otherwise)."""
        config = self.config
        record = Recorder(config, output_hidden_states, output_attentions)
        return_dict = config.return_dict if return_dict is None else return_dict
        main = self.main_input(inputs, pixel_values=pixel_values, input_ids=input_ids, points=points)
        mask = {"attention_mask": attention_mask, "points_mask": points_mask}.get(modality_of(self.config).mask_name)
        state, connectivity = self.begin(main, mask, conditioning, conditioning_mask, record, interpolate_pos_encoding)
        for layer in range(config.num_hidden_layers):
            self.propagate(state, layer, record)
        state.outputs = self.read_out_states(state, record)
        return self.finish(state, connectivity, record, return_dict)

    def begin(
        self,
        main: torch.Tensor | None,
        mask: torch.Tensor | None,
        conditioning: torch.Tensor | None,
        conditioning_mask: torch.Tensor | None,
        record: Recorder,
        interpolate_pos_encoding: bool = False,
    ) -> tuple[CircuitState, torch.Tensor]:
        """Tokenize the main input, generate the circuit, seed the states and let the input modules read (and, with
        `config.processors_read_in`, start the processors from what they read): the state before the first
        propagator layer, and the connectivity (the truncated kernels) the pass uses."""
        config = self.config
        tokens, token_mask = self.tokenize(main, mask, interpolate_pos_encoding)  # (B, V, T), (B, V) or None
        batch = tokens.shape[0]
        codes, signatures = self.generator(batch, conditioning, conditioning_mask)  # ([B,] U, C), ([B,] U, S)
        states = self.generator.seeder(codes, batch)  # (B, U, D)
        record(states)
        inputs, processors, outputs = self.by_module_kind(states, dim=1)
        codes_in = codes[..., : config.num_input_modules, :]
        inputs, weights = self.read_in(inputs, codes_in, tokens, token_mask, self.drop_rates[0], record.attentions)
        if config.processors_read_in:  # processor p starts from what input module p read
            processors = inputs
        kernels, talks = self.circuit(signatures)  # (K, [B,] P + O, S), ([B,] P + O, S)
        heard = self.drop_senders(talks, batch)  # with module dropout in training: ([B,] P + O, S)
        state = CircuitState(inputs, processors, outputs, codes, kernels, heard, self.input_senders > 0)
        record(state, weights)
        return state, truncate(kernels, talks)

    def propagate(self, state: CircuitState, layer: int, record: Recorder | None = None) -> None:
        """Propagator layer `layer`: the processor modules hear the senders (in place)."""
        config = self.config
        propagator = self.propagators[0 if config.share_propagator_weights else layer]
        _, codes_proc, _ = self.by_module_kind(state.codes, dim=-2)
        state.processors, weights = propagator(
            state.processors, state.senders(), codes_proc, self.sender_codes(state),
            *self.receiving(state.kernels, state.heard, layer), self.drop_rates[layer + 1],
            record is not None and record.attentions, receivers_send=True,
        )
        if record is not None:
            record(state, weights)

    def read_out_states(self, state: CircuitState, record: Recorder | None = None) -> torch.Tensor:
        """The read-out: the output modules hear the senders as they are now, `(B, O, D)`.
        After the last propagator layer this is the model's read-out; after an earlier one, an early exit."""
        config = self.config
        outputs, weights = self.read_out(
            state.outputs, state.senders(), self.output_codes(state), self.sender_codes(state),
            *self.receiving(state.kernels, state.heard, config.num_hidden_layers), self.drop_rates[-1],
            record is not None and record.attentions,
        )
        if record is not None:
            record(torch.cat([state.inputs, state.processors, outputs], dim=1), weights)
        return outputs

    def finish(
        self, state: CircuitState, connectivity: torch.Tensor, record: Recorder, return_dict: bool
    ) -> NACModelOutput | tuple:
        """The model output of a pass whose read-out is done."""
        output = NACModelOutput(
            last_hidden_state=state.all_states(),
            pooler_output=self.pooling(state.outputs),
            connectivity=connectivity,
            # The regulariser matches nodes on the CPU: computed in training, or by the head when labels are given.
            graph_regularizer_loss=self.graph_regularizer(connectivity) if self.training else None,
            hidden_states=record.hidden_states,
            attentions=record.weights,
            output_codes=self.output_codes(state),
        )
        return output if return_dict else output.to_tuple()

    def has_exits(self) -> bool:
        """Whether a forward pass reads out after every exit layer (`config.exit_layers`): in training with
        `config.exit_training`, outside training with `config.exit_threshold`."""
        return self.config.exit_training if self.training else self.config.exit_threshold is not None

    def forward_with_exits(
        self,
        head: Head,
        inputs: torch.Tensor | None = None,
        /,
        *,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        points_mask: torch.Tensor | None = None,
        conditioning: torch.Tensor | None = None,
        conditioning_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> NACExitOutput:
        """The forward pass with a read-out after every exit layer, each turned into logits by `head` (the pooled
        output state `(B, D)` and the output codes → `(B, num_labels)`): in training (`config.exit_training`) every
        example runs every layer, so that the losses of all read-outs can be summed; outside training
        (`config.exit_threshold`) an example leaves after the first exit layer where its top softmax probability
        exceeds the threshold (`exit_early`). Takes the inputs of `forward`."""
        if not self.has_exits():
            raise ValueError(
                "forward_with_exits reads out after every exit layer, which needs config.exit_training=True in "
                "training or config.exit_threshold set outside training; call the model itself otherwise"
            )
        self.check_exits(output_attentions, output_hidden_states)
        main = self.main_input(inputs, pixel_values=pixel_values, input_ids=input_ids, points=points)
        mask = {"attention_mask": attention_mask, "points_mask": points_mask}.get(modality_of(self.config).mask_name)
        record = Recorder(self.config, False, False)
        state, connectivity = self.begin(main, mask, conditioning, conditioning_mask, record, interpolate_pos_encoding)
        if self.training:
            return self.read_out_every_exit_layer(state, connectivity, head)
        return self.exit_early(state, connectivity, head)

    def read_out_every_exit_layer(self, state: CircuitState, connectivity: torch.Tensor, head: Head) -> NACExitOutput:
        """Every example through every layer, read out after each exit layer: the logits of every read-out."""
        exit_logits = []
        for layer in range(self.config.num_hidden_layers):
            self.propagate(state, layer)
            if layer + 1 in self.config.exit_layers:  # every read-out starts from the seeded output states
                outputs = self.read_out_states(state)  # (B, O, D)
                exit_logits.append(head(self.pooling(outputs), self.output_codes(state)))
        state.outputs = outputs
        return NACExitOutput(
            last_hidden_state=state.all_states(),
            pooler_output=self.pooling(state.outputs),
            connectivity=connectivity,
            graph_regularizer_loss=self.graph_regularizer(connectivity),  # in training, as `finish` gives it
            output_codes=self.output_codes(state),
            exit_logits=tuple(exit_logits),
        )

    def exit_early(self, state: CircuitState, connectivity: torch.Tensor, head: Head) -> NACExitOutput:
        """After each exit layer the examples still running are read out, and those whose top softmax probability
        exceeds `config.exit_threshold` leave with these logits; the others go on alone, so the cost falls with every
        example that leaves. The logits each example left with, and the layer it left after."""
        config = self.config
        batch, device = state.inputs.shape[0], state.inputs.device
        running = torch.arange(batch, device=device)  # which examples are still in `state`
        logits = state.inputs.new_zeros(batch, config.num_labels)  # (B, num_labels)
        exit_layer = torch.full((batch,), config.num_hidden_layers, dtype=torch.long, device=device)  # (B,)
        for layer in range(config.num_hidden_layers):
            self.propagate(state, layer)
            if layer + 1 not in config.exit_layers:
                continue
            layer_logits = head(self.pooling(self.read_out_states(state)), self.output_codes(state))
            leave = layer_logits.softmax(-1).amax(-1) > config.exit_threshold
            if layer + 1 == config.num_hidden_layers:
                leave = torch.ones_like(leave)
            logits[running[leave]] = layer_logits[leave]
            exit_layer[running[leave]] = layer + 1
            if bool(leave.all()):
                break
            state, running = state.select(~leave), running[~leave]
        return NACExitOutput(connectivity=connectivity, exit_logits=(logits,), exit_layer=exit_layer)

    def check_exits(self, output_attentions: bool | None, output_hidden_states: bool | None) -> None:
        """Early exits are for single-label classification, and return no per-layer states or weights."""
        config = self.config
        if config.problem_type in ("regression", "multi_label_classification") or config.num_labels < 2:
            raise ValueError(
                f"early exit (config.exit_threshold / config.exit_training) reads the top softmax probability of a "
                f"single-label classifier, but this model has problem_type={config.problem_type!r} and "
                f"num_labels={config.num_labels}; set config.exit_threshold=None and config.exit_training=False"
            )
        if output_attentions or output_hidden_states or config.output_attentions or config.output_hidden_states:
            raise ValueError(
                "early exit (config.exit_threshold outside training, config.exit_training in training) returns no "
                "attentions or hidden states, as examples leave after different layers; ask for them with "
                "config.exit_threshold=None (and, in training, config.exit_training=False)"
            )

    def sender_codes(self, state: CircuitState) -> torch.Tensor:
        """The codes of the senders, `([B,] S, C)`."""
        end = self.config.num_input_modules + self.config.num_processor_modules
        return state.codes[..., self.config.num_input_modules - self.input_senders : end, :]

    def output_codes(self, state: CircuitState) -> torch.Tensor:
        """The codes of the output modules, `([B,] O, C)`."""
        return state.codes[..., self.config.num_input_modules + self.config.num_processor_modules :, :]

    def by_module_kind(self, tensor: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Split a tensor over all modules into its input, processor and output modules' parts."""
        config = self.config
        sizes = [config.num_input_modules, config.num_processor_modules, config.num_output_modules]
        return tensor.split(sizes, dim=dim)

    def receiving(self, kernels: torch.Tensor, talks: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The kernel and talking pairs of propagator layer `layer` (processor receivers) or, for `layer` = L, of the
        read-out (output receivers): `([B,] R, S)`."""
        config = self.config
        kernel = kernels[0 if config.share_kernel else layer]
        rows = slice(None, config.num_processor_modules)
        if layer == config.num_hidden_layers:
            rows = slice(config.num_processor_modules, None)
        return kernel[..., rows, :], talks[..., rows, :]

    def drop_senders(self, talks: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Module dropout (`config.module_dropout`, training only): per example, each processor module is dropped
        with that probability and is heard by no one, as if it had been removed (`nac_hf.module_dropping`). Its
        kernel keeps its straight-through gradient, so every parameter still gets one. `talks` otherwise."""
        if not (self.training and self.config.module_dropout > 0):
            return talks
        return talks & self.kept_senders(batch_size, talks.device)[:, None, :]  # (B, P + O, S)

    def kept_senders(self, batch_size: int, device) -> torch.Tensor:
        """Which senders module dropout keeps, per example: `(B, S)`, the input modules always."""
        kept = torch.rand(batch_size, self.config.num_processor_modules, device=device) >= self.config.module_dropout
        return torch.cat([torch.ones(batch_size, self.input_senders, dtype=torch.bool, device=device), kept], dim=1)

    def main_input(self, inputs: torch.Tensor | None, **named: torch.Tensor | None) -> torch.Tensor | None:
        """The main input (`config.main_input_name`), given by keyword or positionally as transformers models take
        it; another modality's input is refused."""
        name = self.main_input_name
        stray = [key for key, value in named.items() if value is not None and key != name]
        if stray:
            raise ValueError(
                f"this NAC reads {name} (config.tokenizer_type={self.config.tokenizer_type!r}) but got {stray}; "
                f"pass {name} only"
            )
        if inputs is not None and named[name] is not None:
            raise ValueError(f"got {name} both positionally and by keyword; pass it once")
        return named[name] if inputs is None else inputs

    def tokenize(
        self, main: torch.Tensor | None, mask: torch.Tensor | None = None, interpolate_pos_encoding: bool = False
    ):
        """Run the input tokenizer on the main input: tokens `(B, V, T)` and a padding mask `(B, V)` or None."""
        tokens, mask = self.input_tokenizer(main, mask, interpolate_pos_encoding)
        if mask is not None and checks_values() and not bool(mask.any(-1).all()):
            raise ValueError("every example needs at least one unmasked token, but an attention mask is all zeros")
        return tokens, mask


class NACForClassification(NACPreTrainedModel):
    """A NAC with a classification (or regression) head on its output modules.

    With one output module the head is `LN → ModFC(code of the output module)`, so the output module's code
    shapes the read-out; with several, their pooled state goes through `LN → Linear`. The loss follows
    `config.problem_type` (`"single_label_classification"`, `"multi_label_classification"`, `"regression"`,
    inferred from `num_labels` and the labels' dtype when unset) and adds the weighted graph-prior regulariser.
    """

    def __init__(self, config: NACConfig):
        super().__init__(config)
        self.loss_type = "ForSequenceClassification"  # transformers' classification loss, `self.loss_function`
        self.num_labels = config.num_labels
        self.nac = NACModel(config)
        self.head_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        if config.num_output_modules == 1:
            self.classifier = ModFC(config.hidden_size, config.num_labels, config.code_dim, config.layer_norm_eps)
        else:
            self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @main_input_first("pixel_values")
    def forward(
        self,
        inputs: torch.Tensor | None = None,
        /,
        *,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        points_mask: torch.Tensor | None = None,
        conditioning: torch.Tensor | None = None,
        conditioning_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> NACClassifierOutput | tuple:
        """The inputs of `NACModel.forward`, and `labels` for the loss."""
        named = dict(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, points=points,
                     points_mask=points_mask, conditioning=conditioning, conditioning_mask=conditioning_mask,
                     output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                     interpolate_pos_encoding=interpolate_pos_encoding)
        if self.nac.has_exits():
            outputs = self.nac.forward_with_exits(self.head, inputs, **named)
            all_logits, exit_layer = outputs.exit_logits, outputs.exit_layer
        else:
            outputs = self.nac(inputs, **named, return_dict=True)
            all_logits, exit_layer = (self.head(outputs.pooler_output, outputs.output_codes),), None
        loss, regularizer = None, outputs.graph_regularizer_loss
        if labels is not None:
            loss, regularizer = self.total_loss(all_logits, self.checked_labels(all_logits[-1], labels), outputs)
        output = NACClassifierOutput(
            loss=loss,
            logits=all_logits[-1],
            graph_regularizer_loss=regularizer,
            connectivity=outputs.connectivity,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            exit_layer=exit_layer,
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict
        return output if return_dict else output.to_tuple()

    def total_loss(
        self, all_logits: tuple[torch.Tensor, ...], labels: torch.Tensor, outputs: NACModelOutput
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The task loss of every read-out's logits, summed (several with `config.exit_training`), plus the weighted
        graph-prior regulariser; and the regulariser, computed here outside training (it matches nodes on the CPU)."""
        config = self.config
        loss = sum(self.task_loss(logits, labels) for logits in all_logits)
        regularizer = outputs.graph_regularizer_loss
        if regularizer is None:
            regularizer = self.nac.graph_regularizer(outputs.connectivity)
        if regularizer is not None:
            loss = loss + config.graph_regularizer_weight * regularizer
        return loss, regularizer

    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of one read-out's logits `(B, num_labels)`: transformers' loss of `config.problem_type`, or for
        class probabilities `(B, num_labels)` in single-label classification their cross-entropy, in float32."""
        if self.config.problem_type == "single_label_classification" and labels.is_floating_point():
            return F.cross_entropy(logits.float(), labels.float())
        return self.loss_function(labels=labels, pooled_logits=logits, config=self.config)

    def add_modules(self, count: int, init: str = "mirror", seed: int = 0, freeze_existing: bool = False) -> list[int]:
        """Add `count` processor modules (see `NACModel.add_modules`). With `freeze_existing=True`, every parameter
        but the added modules' codes and signatures stops training (`requires_grad=False`), so that no optimizer
        touches them (not even AdamW's weight decay) and they stay bit for bit as they were; unfreeze the head for a
        new task."""
        added = self.nac.add_modules(count, init=init, seed=seed)
        if freeze_existing:
            for name, parameter in self.named_parameters():
                parameter.requires_grad_(name in ADDED_MODULE_PARAMETERS)
        return added

    def head(self, pooler_output: torch.Tensor, output_codes: torch.Tensor) -> torch.Tensor:
        """The logits `(B, num_labels)` of the pooled output modules' state `(B, D)`."""
        pooled = self.head_norm(pooler_output)
        if self.config.num_output_modules == 1:  # a ModFC head (also when wrapped, e.g. by PEFT)
            # The output module's code as the read-out used it (with its code noise; per example when conditional).
            return self.classifier(pooled.unsqueeze(1), output_codes).squeeze(1)
        return self.classifier(pooled)

    def checked_labels(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`labels` checked against `config.problem_type` (inferred from `num_labels` and the labels' dtype when
        unset, and kept), in the dtype and device the loss takes; a `ValueError` that names the expected form."""
        config = self.config
        batch, num_labels = logits.shape
        labels = labels.to(logits.device)
        if config.problem_type is None:
            if num_labels == 1:
                config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
                config.problem_type = "single_label_classification"
            else:
                config.problem_type = "multi_label_classification"

        if config.problem_type == "single_label_classification":
            if labels.is_floating_point() and labels.shape == (batch, num_labels):
                # Class probabilities (soft targets: mixup, cutmix, label smoothing, e.g. `MixingCollator`'s).
                if checks_values() and labels.numel() and (
                    labels.min() < 0 or (labels.sum(-1) - 1).abs().max() > SOFT_TARGET_TOLERANCE
                ):
                    raise ValueError(
                        f"soft targets of shape ({batch}, {num_labels}) must be class probabilities: non-negative, "
                        f"each row summing to 1, got values in [{float(labels.min()):.3g}, {float(labels.max()):.3g}] "
                        f"and row sums in [{float(labels.sum(-1).min()):.3g}, {float(labels.sum(-1).max()):.3g}]"
                    )
                return labels.to(logits.dtype)
            if labels.is_floating_point() or labels.dtype == torch.bool:
                raise ValueError(
                    f"single-label classification expects integer class ids of shape ({batch},) or class "
                    f"probabilities of shape ({batch}, {num_labels}), got labels of dtype {labels.dtype} and shape "
                    f"{tuple(labels.shape)}"
                )
            if labels.shape != (batch,):
                raise ValueError(
                    f"single-label classification expects labels of shape ({batch},), got {tuple(labels.shape)}"
                )
            if checks_values() and labels.numel() and (labels.min() < 0 or labels.max() >= num_labels):
                raise ValueError(
                    f"labels must be class ids in [0, {num_labels}) (config.num_labels), got values in "
                    f"[{int(labels.min())}, {int(labels.max())}]"
                )
            return labels.long()
        if config.problem_type == "multi_label_classification":
            if labels.shape != (batch, num_labels):
                raise ValueError(
                    f"multi-label classification expects labels of shape ({batch}, {num_labels}) "
                    f"(batch, config.num_labels), got {tuple(labels.shape)}"
                )
            return labels.to(logits.dtype)
        if config.problem_type == "regression":
            if not labels.is_floating_point():
                raise ValueError(f"regression expects floating-point labels, got dtype {labels.dtype}")
            allowed = [(batch, num_labels)] + ([(batch,)] if num_labels == 1 else [])
            if labels.shape not in allowed:
                expected = f"({batch},)" if num_labels == 1 else f"({batch}, {num_labels})"
                raise ValueError(f"regression expects labels of shape {expected}, got {tuple(labels.shape)}")
            return labels.reshape(batch, num_labels).to(logits.dtype)
        raise ValueError(
            f"config.problem_type must be 'single_label_classification', 'multi_label_classification' or "
            f"'regression', got {config.problem_type!r}"
        )


__all__ = [
    "ModFC",
    "NACClassifierOutput",
    "NACExitOutput",
    "NACForClassification",
    "NACModel",
    "NACModelOutput",
    "NACPreTrainedModel",
]
