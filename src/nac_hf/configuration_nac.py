"""Configuration of a Neural Attentive Circuit (NAC)."""

import copy
import functools
import math
from typing import Literal

from huggingface_hub.dataclasses import as_validated_field, strict
from huggingface_hub.errors import StrictDataclassError
from transformers import PreTrainedConfig

from .modalities import modality_of


GRAPH_PRIORS = (
    "none",
    "complete",
    "planted-partition",
    "scale-free",
    "ring-of-cliques",
    "erdos-renyi",
    "watts-strogatz",
)
GRAPH_REGULARIZERS = ("none", "planted-partition", "scale-free", "watts-strogatz", "ring-of-cliques")

# Number of special tokens in front of the 256 byte values (pad, cls/bos, sep/eos, mask, unk).
NUM_SPECIAL_BYTE_TOKENS = 5

# The attention implementations a NAC runs (`attn_implementation`), as transformers names them.
ATTN_IMPLEMENTATIONS = {
    "sdpa": "fused kernels: torch's scaled_dot_product_attention and the kernel-modulated attention with its "
    "gradient written out (the default)",
    "eager": "every attention as matrix products and a softmax, differentiated by autograd",
}


def check_attn_implementation(name: str | None) -> None:
    """Refuse an attention implementation a NAC does not have (None picks the default, "sdpa")."""
    if name is not None and name not in ATTN_IMPLEMENTATIONS:
        choices = "; ".join(f"{key!r}: {text}" for key, text in ATTN_IMPLEMENTATIONS.items())
        raise ValueError(f"a NAC has no attn_implementation={name!r}; choose one of {choices}")


# Field validators (huggingface_hub's strict dataclasses run them on every assignment, naming the field).
@as_validated_field
def positive(value: int | float) -> None:
    if not value > 0:
        raise ValueError(f"must be > 0, got {value!r}")


@as_validated_field
def non_negative(value: int | float) -> None:
    if not value >= 0:
        raise ValueError(f"must be >= 0, got {value!r}")


@as_validated_field
def probability(value: int | float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"must lie in [0, 1], got {value!r}")


@as_validated_field
def optional_probability(value: int | float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"must be None or lie in [0, 1], got {value!r}")


@as_validated_field
def dropout(value: int | float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"must lie in [0, 1), got {value!r}")


@as_validated_field
def cosine_distance(value: int | float) -> None:
    if not 0.0 < value <= 2.0:
        raise ValueError(f"is a cosine distance and must lie in (0, 2], got {value!r}")


@as_validated_field
def finite(value: int | float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")


def raising_value_errors(cls):
    """Let an invalid config raise a `ValueError` (with huggingface_hub's validation error as its cause), the error
    Python code expects for a bad argument."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except StrictDataclassError as error:
            raise ValueError(f"invalid NACConfig: {' '.join(str(error).split())}") from error

    cls.__init__ = __init__
    return cls


@raising_value_errors
@strict
class NACConfig(PreTrainedConfig):
    r"""
    Configuration of a [`NACModel`] / [`NACForClassification`]. The defaults are the reference Tiny-ImageNet setting
    of the architecture (hidden size 384, 64 input, 256 processor and 1 output module, 8 propagator layers) read
    through a patch tokenizer; `NACConfig.from_preset` gives smaller and named settings.

    Input tokenizer:
        tokenizer_type (`str`, defaults to `"patch"`):
            How the model reads its input: `"patch"` (Conv2d patches of `pixel_values` + learned 2-D positions),
            `"conv"` (a ConvNeXt-style stem of stride `patch_size` + a learned positional grid of
            `conv_position_channels` channels), `"byte"` (UTF-8 byte ids in `input_ids`), `"point"` (`points` of
            shape (B, N, 3) through random Fourier features and an MLP; order invariant).
        image_size (`int`, defaults to 64): side of the square images the position embedding is made for
            (`NACImageProcessor.from_config(config)` resizes to it). The model refuses images of another size unless
            called with `interpolate_pos_encoding=True`, which interpolates the position embedding to any size whose
            sides are multiples of `patch_size`.
        patch_size (`int`, defaults to 4): patch side of the `"patch"` tokenizer and stride of the `"conv"` stem.
        num_channels (`int`, defaults to 3): channels of `pixel_values`.
        conv_position_channels (`int`, defaults to 32): channels of the learned positional grid concatenated to the
            `"conv"` stem's features.
        vocab_size (`int`, defaults to 261): byte ids, i.e. the 256 byte values shifted by the 5 special tokens.
        max_position_embeddings (`int`, defaults to 2048): longest byte sequence the `"byte"` tokenizer reads.
        byte_context_layers (`int`, defaults to 0): ConvNeXt blocks along the text (depthwise convolutions over 7
            bytes, with an MLP) through which the `"byte"` tokenizer passes the byte embeddings, so that each token
            carries its neighbourhood (a word) and not one letter; 0 reads each byte alone.
        pad_token_id (`int`, defaults to 0): id of the padding byte token.
        num_fourier_features (`int`, defaults to 64): random Fourier features per point (`"point"`).
        fourier_feature_scale (`float`, defaults to 1.0): standard deviation of the random Fourier frequencies.

    Modules:
        num_input_modules (`int`, defaults to 64): modules that read the input tokens and send to processors.
        num_processor_modules (`int`, defaults to 256): modules that exchange messages along the sparse graph.
        num_output_modules (`int`, defaults to 1): modules that read out the result.
        num_added_modules (`int`, defaults to 0): how many of the processor modules were added to a trained model
            (`model.add_modules`): the last ones, whose codes and signatures are parameters of their own
            (`generator.added_codes`, `generator.added_signatures`) so that the rest can stay frozen; with
            `processors_read_in`, as many input modules were added with them (the last ones).
        hidden_size (`int`, defaults to 384): size of a module's state and of the input tokens.
        code_dim (`int`, defaults to 384): size of a module's code.
        signature_dim (`int`, defaults to 64): size of a module's signature.

    Executor:
        num_hidden_layers (`int`, defaults to 8): propagator layers.
        share_propagator_weights (`bool`, defaults to `False`): one set of propagator weights for all layers.
        num_attention_heads (`int`, defaults to 6): heads of the propagator and read-out attention.
        attention_head_dim (`int`, defaults to 64): size of one head.
        num_read_in_heads (`int`, defaults to 1): heads of the read-in cross-attention.
        intermediate_size (`int`, defaults to 512): hidden size of the module feed-forward network (4/3 × 384).
        hidden_act (`str`, defaults to `"geglu"`): `"geglu"` (gated, as in the reference) or `"gelu"`.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every layer norm.
        layer_scale_init_value (`float`, defaults to 0.1): initial LayerScale of every residual branch but the
            read-in's attention, whose LayerScale starts at 1.0 so that the input reaches the seeded states (the
            same for every example) at full strength from the first step. The input modules' states are what they
            read: the read-in's attention replaces the seeded states instead of adding to them.
        drop_path_rate (`float`, defaults to 0.1): stochastic depth of the residual branches (training only),
            rising linearly over the propagator layers.
        module_dropout (`float`, defaults to 0.0): in training, the probability with which each processor module is
            dropped for an example (heard by no one, as if removed), so that the model learns to lose modules
            gracefully (`nac_hf.module_dropping`). 0 leaves training unchanged.
        code_noise (`float`, defaults to 0.05): standard deviation of the multiplicative noise on the codes in
            training, `c ⊙ (1 + code_noise · n)`, drawn in every forward pass and shared by the batch's examples.
        initializer_range (`float`, defaults to 0.02): standard deviation of the initial byte and byte-position
            embeddings (linear and convolution weights are initialised with fan-in scaling; the 2-D position grids
            of the `"patch"` and `"conv"` tokenizers with standard deviation 1, as large as the normalised patch
            features, so that the read-in can tell the patches apart from the first step).

    Signature kernel and SKMDPA:
        kernel_truncation (`float`, defaults to 0.9): ε; in the propagator layers, module pairs at distance
            1 − cos ≥ ε never talk. The read-out is not truncated: the output modules hear every input and processor
            module, weighted by the kernel, so that no part of the circuit is cut off from the output.
        processors_read_in (`bool`, defaults to `False`): the processor modules read the input themselves. Processor
            p starts from what input module p read (so `num_input_modules` must equal `num_processor_modules`), and
            the input modules send to no one: processors hear processors, the output modules hear the processors.
            This is the reference implementation's `use_input_states_as_mediator_states` without input-processor or
            input-output communication, the setting of the paper's ImageNet models. Everything the model predicts
            passes through its propagator layers, and a dropped processor takes its read-in with it
            (`nac_hf.module_dropping`).
        kernel_bandwidth_init (`float`, defaults to 1.0): initial τ of the learnable bandwidth.
        share_kernel (`bool`, defaults to `False`): one bandwidth for all propagator layers instead of one per layer.
        stochastic_kernel (`bool`, defaults to `True`): in training, draw the kernel per example from a relaxed
            Bernoulli with the kernel as probability.
        kernel_temperature (`float`, defaults to 0.5): temperature of that relaxed Bernoulli.
        kernel_eval_mode (`str`, defaults to `"expected"`): kernel used outside training: `"expected"` (K itself)
            or `"threshold"` (1 where K > 0.5, else 0).

    Circuit generator:
        seeder_noise (`bool`, defaults to `True`): add the seeder's learned Gaussian noise to the initial states in
            training (evaluation uses the mean alone).
        seeder_logvar_init (`float`, defaults to -5.0): initial bias of the seeder's log-variance.
        graph_prior (`str`, defaults to `"planted-partition"`): graph the processor modules' signatures are fit to
            at model creation: one of `"none"`, `"complete"`, `"planted-partition"`, `"scale-free"`,
            `"ring-of-cliques"`, `"erdos-renyi"`, `"watts-strogatz"`.
        graph_num_groups (`int`, defaults to 8): groups of the planted partition / cliques of the ring of cliques
            (must divide `num_processor_modules`).
        graph_p_in (`float`, defaults to 0.9), graph_p_out (`float`, defaults to 0.01): planted-partition link
            probabilities inside and between groups.
        graph_edges_per_node (`int`, defaults to 4): edges of each new node in the scale-free (Barabási–Albert)
            graph.
        graph_edge_prob (`float`, defaults to 0.1): link probability of the Erdős–Rényi graph and rewiring
            probability of the Watts–Strogatz graph.
        graph_num_neighbors (`int`, defaults to 4): ring neighbours of each node in the Watts–Strogatz graph.
        graph_seed (`int`, defaults to 0): seed of the sampled prior graph and of the signature fit.
        graph_fit_steps (`int`, defaults to 1000), graph_fit_lr (`float`, defaults to 1e-3): Adam steps and learning
            rate of the signature fit.
        freeze_signatures (`bool`, defaults to `False`): keep the signatures fixed during training.
        conditioning_dim (`int`, defaults to 0): 0 for the unconditional generator (learned codes). A positive size
            makes the generator conditional: the model then takes `conditioning` vectors `(B, conditioning_dim)` or
            tokens `(B, L, conditioning_dim)` (with an optional `conditioning_mask`), and every module's code is its
            learned code plus what it reads from them by cross-attention, so each example gets its own circuit
            while the executor reads the main input.
        conditional_signatures (`bool`, defaults to `False`): with a conditional generator, let the conditioning
            shift the signatures too, so the connectivity is per example.
        graph_regularizer (`str`, defaults to `"none"`): graphon the learned link probabilities among processor
            modules are pulled towards: `"none"`, `"planted-partition"`, `"scale-free"`, `"watts-strogatz"`,
            `"ring-of-cliques"` (with the `graph_*` parameters above).
        graph_regularizer_weight (`float`, defaults to 0.0): weight of that loss (must be > 0 when a regularizer is
            chosen).
        graph_regularizer_distance (`str`, defaults to `"mse"`): how that pull is measured: `"mse"` or `"kl"`
            (Bernoulli KL).

    Read-out:
        output_pooling (`str`, defaults to `"confidence"`): with several output modules, how their states are
            pooled: `"confidence"` (softmax of a learned score; Gumbel-softmax in training) or `"mean"`.
        output_gumbel_temperature (`float`, defaults to 1.0): temperature of that Gumbel-softmax.

    Early exit (`NACForClassification`, single-label classification):
        exit_threshold (`float`, *optional*): outside training, read out after every propagator layer from
            `min_exit_layer` on, and let an example stop as soon as its top softmax probability exceeds this value;
            its logits are then those of the model run with that many layers. `None` (the default) reads out once,
            after the last layer; 1.0 reads out after every layer but never exits early.
        min_exit_layer (`int`, defaults to 1): the first propagator layer after which an example may exit.
        exit_training (`bool`, defaults to `False`): in training, read out after every layer from `min_exit_layer`
            on and sum the losses of all these read-outs, so that the early read-outs learn to classify.

    Any other keyword (`num_labels`, `id2label`, `problem_type`, ...) goes to [`PretrainedConfig`]. `num_labels` must
    be at least 1. `attn_implementation` picks how the attentions run: `"sdpa"` (the default: fused kernels) or
    `"eager"` (matrix products and a softmax, differentiated by autograd); both compute the same function.
    """

    model_type = "nac"
    # Outputs Trainer's evaluation loop must not gather as predictions (not per example, a scalar, or not logits).
    keys_to_ignore_at_inference = ["graph_regularizer_loss", "connectivity", "exit_layer"]

    tokenizer_type: Literal["patch", "conv", "byte", "point"] = "patch"
    image_size: int = positive(default=64)
    patch_size: int = positive(default=4)
    num_channels: int = positive(default=3)
    conv_position_channels: int = positive(default=32)
    vocab_size: int = positive(default=256 + NUM_SPECIAL_BYTE_TOKENS)
    max_position_embeddings: int = positive(default=2048)
    byte_context_layers: int = non_negative(default=0)
    pad_token_id: int | None = 0
    num_fourier_features: int = positive(default=64)
    fourier_feature_scale: float | int = positive(default=1.0)

    num_input_modules: int = positive(default=64)
    num_processor_modules: int = positive(default=256)
    num_output_modules: int = positive(default=1)
    num_added_modules: int = non_negative(default=0)
    hidden_size: int = positive(default=384)
    code_dim: int = positive(default=384)
    signature_dim: int = positive(default=64)

    num_hidden_layers: int = positive(default=8)
    share_propagator_weights: bool = False
    num_attention_heads: int = positive(default=6)
    attention_head_dim: int = positive(default=64)
    num_read_in_heads: int = positive(default=1)
    intermediate_size: int = positive(default=512)
    hidden_act: Literal["geglu", "gelu"] = "geglu"
    layer_norm_eps: float | int = positive(default=1e-5)
    layer_scale_init_value: float | int = non_negative(default=0.1)
    drop_path_rate: float | int = probability(default=0.1)
    module_dropout: float | int = dropout(default=0.0)
    code_noise: float | int = non_negative(default=0.05)
    initializer_range: float | int = positive(default=0.02)

    kernel_truncation: float | int = cosine_distance(default=0.9)
    processors_read_in: bool = False
    kernel_bandwidth_init: float | int = positive(default=1.0)
    share_kernel: bool = False
    stochastic_kernel: bool = True
    kernel_temperature: float | int = positive(default=0.5)
    kernel_eval_mode: Literal["expected", "threshold"] = "expected"

    seeder_noise: bool = True
    seeder_logvar_init: float | int = finite(default=-5.0)
    graph_prior: Literal[GRAPH_PRIORS] = "planted-partition"
    graph_num_groups: int = positive(default=8)
    graph_p_in: float | int = probability(default=0.9)
    graph_p_out: float | int = probability(default=0.01)
    graph_edges_per_node: int = positive(default=4)
    graph_edge_prob: float | int = probability(default=0.1)
    graph_num_neighbors: int = positive(default=4)
    graph_seed: int = non_negative(default=0)
    graph_fit_steps: int = non_negative(default=1000)
    graph_fit_lr: float | int = positive(default=1e-3)
    freeze_signatures: bool = False
    conditioning_dim: int = non_negative(default=0)
    conditional_signatures: bool = False
    graph_regularizer: Literal[GRAPH_REGULARIZERS] = "none"
    graph_regularizer_weight: float | int = non_negative(default=0.0)
    graph_regularizer_distance: Literal["mse", "kl"] = "mse"

    output_pooling: Literal["confidence", "mean"] = "confidence"
    output_gumbel_temperature: float | int = positive(default=1.0)

    exit_threshold: float | int | None = optional_probability(default=None)
    min_exit_layer: int = positive(default=1)
    exit_training: bool = False

    @property
    def modality(self) -> str:
        """What the model reads: `"image"` (the `"patch"` and `"conv"` tokenizers), `"text"` or `"points"`."""
        return modality_of(self.tokenizer_type).name

    @property
    def main_input_name(self) -> str:
        """The model input that carries what it reads: `pixel_values`, `input_ids` or `points`."""
        return modality_of(self.tokenizer_type).main_input_name

    @property
    def num_labels(self) -> int | None:
        """How many outputs the classification head has: the length of `id2label`."""
        return len(self.id2label) if self.id2label is not None else None

    @num_labels.setter
    def num_labels(self, num_labels: int) -> None:
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(
                f"NACConfig.num_labels must be a positive int (the head has one output per label, one for a "
                f"regression), got {num_labels!r}"
            )
        PreTrainedConfig.num_labels.fset(self, num_labels)

    @classmethod
    def _get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        # transformers takes a folder without config.json for a config of defaults; a NAC's weights would then be
        # loaded into a model of the wrong shape.
        subfolder = kwargs.get("subfolder") or ""
        config_dict, kwargs = super()._get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict is None:
            where = f"{pretrained_model_name_or_path}/{subfolder}".rstrip("/")
            raise OSError(
                f"{where} has no config.json, which a NAC is built from: save the config there with "
                f"config.save_pretrained({where!r}) (model.save_pretrained writes it beside the weights), or pass "
                f"the config: from_pretrained({str(pretrained_model_name_or_path)!r}, config=config)"
            )
        return config_dict, kwargs

    # Checks across fields, run by huggingface_hub's strict dataclass after every creation and before saving.

    def validate_labels(self):
        if not self.num_labels or self.num_labels < 1:
            raise ValueError(
                f"NACConfig.num_labels must be at least 1 (the head has one output per label), got "
                f"{self.num_labels!r} (id2label={self.id2label!r})"
            )

    def validate_attn_implementation(self):
        check_attn_implementation(self._attn_implementation)

    def validate_input_shape(self):
        if self.modality == "image" and self.image_size % self.patch_size != 0:
            raise ValueError(
                f"NACConfig.image_size ({self.image_size}) must be a multiple of NACConfig.patch_size "
                f"({self.patch_size})"
            )
        if self.tokenizer_type == "byte":
            if self.vocab_size < 256 + NUM_SPECIAL_BYTE_TOKENS:
                raise ValueError(
                    f"NACConfig.vocab_size must be at least {256 + NUM_SPECIAL_BYTE_TOKENS} for the byte tokenizer "
                    f"(256 bytes + {NUM_SPECIAL_BYTE_TOKENS} special tokens), got {self.vocab_size}"
                )
            if self.pad_token_id is None or not 0 <= self.pad_token_id < self.vocab_size:
                raise ValueError(
                    f"NACConfig.pad_token_id must be an id in [0, vocab_size={self.vocab_size}), "
                    f"got {self.pad_token_id!r}"
                )

    def validate_graph(self):
        graphs = {self.graph_prior, self.graph_regularizer}
        if graphs & {"planted-partition", "ring-of-cliques"} and self.num_processor_modules % self.graph_num_groups:
            raise ValueError(
                f"NACConfig.graph_num_groups ({self.graph_num_groups}) must divide "
                f"NACConfig.num_processor_modules ({self.num_processor_modules})"
            )
        if "scale-free" in graphs and self.graph_edges_per_node >= self.num_processor_modules:
            raise ValueError(
                f"NACConfig.graph_edges_per_node ({self.graph_edges_per_node}) must be smaller than "
                f"num_processor_modules ({self.num_processor_modules})"
            )
        if "watts-strogatz" in graphs and self.graph_num_neighbors >= self.num_processor_modules:
            raise ValueError(
                f"NACConfig.graph_num_neighbors ({self.graph_num_neighbors}) must be smaller than "
                f"num_processor_modules ({self.num_processor_modules})"
            )
        if self.graph_regularizer != "none" and self.graph_regularizer_weight <= 0:
            raise ValueError(
                f"NACConfig.graph_regularizer_weight must be > 0 when graph_regularizer={self.graph_regularizer!r}; "
                "set it or use graph_regularizer='none'"
            )
        if self.graph_regularizer == "none" and self.graph_regularizer_weight > 0:
            raise ValueError(
                "NACConfig.graph_regularizer_weight is set but graph_regularizer='none': choose a graphon "
                f"({list(GRAPH_REGULARIZERS[1:])}) or set the weight to 0"
            )
        if self.freeze_signatures and self.graph_regularizer != "none":
            raise ValueError(
                "NACConfig.freeze_signatures=True leaves nothing for graph_regularizer to train; "
                "unfreeze the signatures or set graph_regularizer='none'"
            )

    def validate_generator(self):
        if self.conditional_signatures and self.conditioning_dim == 0:
            raise ValueError(
                "NACConfig.conditional_signatures=True needs a conditional generator: set conditioning_dim > 0"
            )
        if self.conditional_signatures and self.freeze_signatures:
            raise ValueError("NACConfig.conditional_signatures=True contradicts freeze_signatures=True; choose one")

    def validate_added_modules(self):
        if self.num_added_modules >= self.num_processor_modules:
            raise ValueError(
                f"NACConfig.num_added_modules ({self.num_added_modules}) counts processors added to a trained model "
                f"and must be smaller than num_processor_modules ({self.num_processor_modules})"
            )

    def validate_processors_read_in(self):
        if self.processors_read_in and self.num_input_modules != self.num_processor_modules:
            raise ValueError(
                f"NACConfig.processors_read_in=True starts processor p from what input module p read, so "
                f"num_input_modules ({self.num_input_modules}) must equal num_processor_modules "
                f"({self.num_processor_modules})"
            )

    def validate_exits(self):
        if self.min_exit_layer > self.num_hidden_layers:
            raise ValueError(
                f"NACConfig.min_exit_layer ({self.min_exit_layer}) must be at most num_hidden_layers "
                f"({self.num_hidden_layers}): an example can exit after one of the propagator layers only"
            )

    @property
    def exit_layers(self) -> range:
        """The propagator layers (counted from 1) after which an early exit reads out."""
        return range(self.min_exit_layer, self.num_hidden_layers + 1)

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> "NACConfig":
        model_type = config_dict.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(
                f"expected a NAC configuration (model_type={cls.model_type!r}), got model_type={model_type!r}; "
                "load this checkpoint with its own model class, or build a NAC with NACConfig.from_preset(...)"
            )
        return super().from_dict(config_dict, **kwargs)

    def graph_parameters(self) -> dict:
        """The parameters shared by the graph prior and the regulariser's graphon, as `nac_hf.graph_priors` takes
        them."""
        return dict(
            num_groups=self.graph_num_groups,
            p_in=self.graph_p_in,
            p_out=self.graph_p_out,
            edges_per_node=self.graph_edges_per_node,
            edge_prob=self.graph_edge_prob,
            num_neighbors=self.graph_num_neighbors,
        )

    def architecture_differences(self, other: "NACConfig") -> list[str]:
        """The fields that make `other`'s weights differ in shape from this config's, as readable lines."""
        names = [name for name in self.__dataclass_fields__ if name in WEIGHT_SHAPE_FIELDS] + ["num_labels"]
        return [
            f"{name}: {getattr(self, name)!r} vs {getattr(other, name)!r}"
            for name in names
            if getattr(self, name) != getattr(other, name)
        ]

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "NACConfig":
        """Build a config from a named preset (see `NACConfig.presets()`), with any field overridden by keyword."""
        return cls(**{**preset_fields(name), **overrides})

    @staticmethod
    def presets() -> list[str]:
        """Names accepted by `NACConfig.from_preset`."""
        return sorted(PRESETS)


# Fields that shape the weights (everything but training-time behaviour and labels).
WEIGHT_SHAPE_FIELDS = (
    "tokenizer_type", "image_size", "patch_size", "num_channels", "conv_position_channels", "vocab_size",
    "max_position_embeddings", "byte_context_layers", "num_fourier_features", "num_input_modules",
    "num_processor_modules", "num_output_modules", "num_added_modules", "hidden_size", "code_dim", "signature_dim",
    "num_hidden_layers",
    "share_propagator_weights", "num_attention_heads", "attention_head_dim", "num_read_in_heads", "intermediate_size",
    "hidden_act", "share_kernel", "seeder_noise", "freeze_signatures", "conditioning_dim", "conditional_signatures",
    "output_pooling",
)

# The modules of the task presets: `small`'s at three quarters of its width (96, 3 heads of 32) with 32 processors.
TASK_WIDTH = dict(num_processor_modules=32, hidden_size=96, code_dim=48, num_attention_heads=3)

# Each preset is a base (another preset, or None for the defaults above) and the fields it changes.
PRESETS: dict[str, tuple[str | None, dict]] = {
    # A few thousand parameters' worth of work, for tests and quick checks.
    "tiny": (None, dict(
        image_size=16,
        num_input_modules=4,
        num_processor_modules=8,
        hidden_size=32,
        code_dim=16,
        signature_dim=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        attention_head_dim=16,
        intermediate_size=48,
        max_position_embeddings=256,
        num_fourier_features=16,
        conv_position_channels=8,
        graph_num_groups=2,
        graph_p_out=0.1,
        graph_fit_steps=300,
        graph_fit_lr=1e-2,
    )),
    # A CPU-trainable model for small images (digits, CIFAR) and short texts.
    "small": (None, dict(
        image_size=32,
        num_input_modules=16,
        num_processor_modules=64,
        hidden_size=128,
        code_dim=64,
        signature_dim=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        attention_head_dim=32,
        intermediate_size=176,
        max_position_embeddings=1024,
        graph_num_groups=4,
        graph_p_out=0.05,
    )),
    # The reference Tiny-ImageNet setting: conv stem on 64x64 images, 200 labels, the defaults of the architecture.
    "paper-tiny-imagenet": (None, dict(tokenizer_type="conv", num_labels=200)),
    # CIFAR-10/100 at 32x32 (the `cifar` recipe): the reference setting's conv stem at stride 4 (an 8x8 grid of 64
    # tokens), 64 input modules, 8 propagator layers and graph prior, at half its processors (128) and two thirds of
    # its width (256, 4 heads): 10.1 M parameters and 1.9 GFLOP per image, against ViT-S/4's 21 M on 64 patches.
    "cifar": (None, dict(
        tokenizer_type="conv",
        image_size=32,
        num_labels=10,
        hidden_size=256,
        code_dim=256,
        num_processor_modules=128,
        num_attention_heads=4,
        intermediate_size=352,
    )),
    # The model of the main job (scripts/train.py on scikit-learn's 8x8 digits): `small` on 16x16 grayscale inputs
    # with fewer modules, so that it trains in minutes on two CPU cores. Its 32 processors read the input themselves
    # (as in the paper's ImageNet models) and train with module dropout, so that a quarter of them or fewer keep its
    # accuracy (chosen on a validation split of the training digits: README, "Dropping modules").
    "digits": (
        "small",
        dict(
            image_size=16, num_channels=1, num_input_modules=32, num_processor_modules=32, num_labels=10,
            processors_read_in=True, module_dropout=0.2,
        ),
    ),
    # The tasks of benchmarks.tasks (`python -m benchmarks.task_comparison`), each sized to be trained from several
    # seeds, beside a baseline of its size, within about an hour on two CPU cores: `small` at three quarters of its
    # width (`TASK_WIDTH`), each chosen on validation (docs/results.md, "Tasks beyond images"). `shapes`: point clouds
    # of twelve shapes, read through their random Fourier features by the 32 processors themselves (as many input
    # modules), 0.64 M parameters.
    "shapes": ("small", dict(
        tokenizer_type="point",
        num_labels=12,
        **TASK_WIDTH,
        intermediate_size=128,
        num_input_modules=32,
        processors_read_in=True,
    )),
    # `reviews`: movie-review snippets read byte by byte, positive or negative (the 2 labels of the defaults), each
    # byte in the context of its neighbours (one ConvNeXt block of 7 bytes) and a narrower MLP to keep the size, 0.68
    # M parameters; 288 positions hold the longest snippet (257 bytes) with its <cls> and <sep>.
    "reviews": ("small", dict(
        tokenizer_type="byte",
        **TASK_WIDTH,
        max_position_embeddings=288,
        byte_context_layers=1,
        intermediate_size=96,
    )),
    # `listops`: expressions of 20 to 100 tokens (up to about 250 bytes) in ten classes, each byte read alone, with the
    # MLP of `shapes`, 0.67 M parameters.
    "listops": ("reviews", dict(num_labels=10, byte_context_layers=0, intermediate_size=128)),
}


def preset_fields(name: str) -> dict:
    """The fields of a preset: its base's, then its own."""
    if name not in PRESETS:
        raise ValueError(f"unknown NAC preset {name!r}; choose one of {sorted(PRESETS)}")
    base, changes = PRESETS[name]
    return {**(preset_fields(base) if base else {}), **copy.deepcopy(changes)}


__all__ = ["NACConfig"]
