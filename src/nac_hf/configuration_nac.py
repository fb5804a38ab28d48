"""Configuration of a Neural Attentive Circuit (NAC)."""

from __future__ import annotations

import copy

from transformers import PretrainedConfig


TOKENIZER_TYPES = ("patch", "conv", "byte", "point")
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


class NACConfig(PretrainedConfig):
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
        image_size (`int`, defaults to 64): side of the square images the position embedding is made for; other
            sizes that are multiples of `patch_size` are served by interpolating it.
        patch_size (`int`, defaults to 4): patch side of the `"patch"` tokenizer and stride of the `"conv"` stem.
        num_channels (`int`, defaults to 3): channels of `pixel_values`.
        conv_position_channels (`int`, defaults to 32): channels of the learned positional grid concatenated to the
            `"conv"` stem's features.
        vocab_size (`int`, defaults to 261): byte ids, i.e. the 256 byte values shifted by the 5 special tokens.
        max_position_embeddings (`int`, defaults to 2048): longest byte sequence the `"byte"` tokenizer reads.
        pad_token_id (`int`, defaults to 0): id of the padding byte token.
        num_fourier_features (`int`, defaults to 64): random Fourier features per point (`"point"`).
        fourier_feature_scale (`float`, defaults to 1.0): standard deviation of the random Fourier frequencies.

    Modules:
        num_input_modules (`int`, defaults to 64): modules that read the input tokens and send to processors.
        num_processor_modules (`int`, defaults to 256): modules that exchange messages along the sparse graph.
        num_output_modules (`int`, defaults to 1): modules that read out the result.
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
            read-in's attention.
        read_in_layer_scale_init_value (`float`, defaults to 1.0): initial LayerScale of the read-in's attention
            branch. At 1.0 (as in the reference implementation) the input reaches the seeded states, which are the
            same for every example, at full strength from the first step.
        read_in_residual (`bool`, defaults to `False`): keep the seeded states under the read-in's attention
            (`x + LayerScale(attention)`). Off, as in the reference implementation, the input modules' states are
            what they read (`LayerScale(attention)`), so the input is not diluted by the seeded states.
        drop_path_rate (`float`, defaults to 0.1): stochastic depth of the residual branches (training only),
            rising linearly over the propagator layers.
        code_noise (`float`, defaults to 0.05): standard deviation of the multiplicative noise on the codes in
            training.
        initializer_range (`float`, defaults to 0.02): standard deviation of the initial byte and byte-position
            embeddings (linear and convolution weights are initialised with fan-in scaling).
        position_init_std (`float`, defaults to 1.0): standard deviation of the initial 2-D position grid of the
            `"patch"` and `"conv"` tokenizers. At 1.0 (as in the reference) positions are as large as the
            normalised patch features, so the read-in can tell the patches apart from the first step.

    Signature kernel and SKMDPA:
        kernel_truncation (`float`, defaults to 0.9): ε; module pairs at distance 1 − cos ≥ ε never talk.
        truncate_read_out (`bool`, defaults to `False`): truncate the read-out's kernel as well. Off, as in the
            reference implementation, the output modules read from every sender, weighted by the kernel, so no
            part of the circuit is cut off from the output.
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
        graph_regularizer_loss (`str`, defaults to `"mse"`): `"mse"` or `"kl"` (Bernoulli KL).

    Read-out:
        output_pooling (`str`, defaults to `"confidence"`): with several output modules, how their states are
            pooled: `"confidence"` (softmax of a learned score; Gumbel-softmax in training) or `"mean"`.
        output_gumbel_temperature (`float`, defaults to 1.0): temperature of that Gumbel-softmax.

    Any other keyword (`num_labels`, `id2label`, `problem_type`, ...) goes to [`PretrainedConfig`].
    """

    model_type = "nac"
    # Outputs that Trainer's evaluation loop must not gather as predictions (not per example, or a scalar).
    keys_to_ignore_at_inference = ["graph_regularizer_loss", "connectivity"]

    tokenizer_type: str = "patch"
    image_size: int = 64
    patch_size: int = 4
    num_channels: int = 3
    conv_position_channels: int = 32
    vocab_size: int = 256 + NUM_SPECIAL_BYTE_TOKENS
    max_position_embeddings: int = 2048
    pad_token_id: int | None = 0
    num_fourier_features: int = 64
    fourier_feature_scale: float = 1.0

    num_input_modules: int = 64
    num_processor_modules: int = 256
    num_output_modules: int = 1
    hidden_size: int = 384
    code_dim: int = 384
    signature_dim: int = 64

    num_hidden_layers: int = 8
    share_propagator_weights: bool = False
    num_attention_heads: int = 6
    attention_head_dim: int = 64
    num_read_in_heads: int = 1
    intermediate_size: int = 512
    hidden_act: str = "geglu"
    layer_norm_eps: float = 1e-5
    layer_scale_init_value: float = 0.1
    read_in_layer_scale_init_value: float = 1.0
    read_in_residual: bool = False
    drop_path_rate: float = 0.1
    code_noise: float = 0.05
    initializer_range: float = 0.02
    position_init_std: float = 1.0

    kernel_truncation: float = 0.9
    truncate_read_out: bool = False
    kernel_bandwidth_init: float = 1.0
    share_kernel: bool = False
    stochastic_kernel: bool = True
    kernel_temperature: float = 0.5
    kernel_eval_mode: str = "expected"

    seeder_noise: bool = True
    seeder_logvar_init: float = -5.0
    graph_prior: str = "planted-partition"
    graph_num_groups: int = 8
    graph_p_in: float = 0.9
    graph_p_out: float = 0.01
    graph_edges_per_node: int = 4
    graph_edge_prob: float = 0.1
    graph_num_neighbors: int = 4
    graph_seed: int = 0
    graph_fit_steps: int = 1000
    graph_fit_lr: float = 1e-3
    freeze_signatures: bool = False
    conditioning_dim: int = 0
    conditional_signatures: bool = False
    graph_regularizer: str = "none"
    graph_regularizer_weight: float = 0.0
    graph_regularizer_loss: str = "mse"

    output_pooling: str = "confidence"
    output_gumbel_temperature: float = 1.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.check_consistency()

    def check_consistency(self):
        """Raise a `ValueError` naming the field when the numbers of this config do not fit together."""

        def choice(name, allowed):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"NACConfig.{name} must be one of {list(allowed)}, got {value!r}")

        def positive(*names):
            for name in names:
                value = getattr(self, name)
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                    raise ValueError(f"NACConfig.{name} must be a positive number, got {value!r}")

        def probability(*names, closed=True):
            for name in names:
                value = getattr(self, name)
                if not (0.0 <= value <= 1.0) or (not closed and value == 1.0):
                    raise ValueError(f"NACConfig.{name} must lie in [0, 1{']' if closed else ')'}, got {value!r}")

        choice("tokenizer_type", TOKENIZER_TYPES)
        choice("hidden_act", ("geglu", "gelu"))
        choice("kernel_eval_mode", ("expected", "threshold"))
        choice("graph_prior", GRAPH_PRIORS)
        choice("graph_regularizer", GRAPH_REGULARIZERS)
        choice("graph_regularizer_loss", ("mse", "kl"))
        choice("output_pooling", ("confidence", "mean"))
        positive(
            "image_size", "patch_size", "num_channels", "conv_position_channels", "vocab_size",
            "max_position_embeddings", "num_fourier_features", "fourier_feature_scale", "num_input_modules",
            "num_processor_modules", "num_output_modules", "hidden_size", "code_dim", "signature_dim",
            "num_hidden_layers", "num_attention_heads", "attention_head_dim", "num_read_in_heads",
            "intermediate_size", "layer_norm_eps", "kernel_bandwidth_init", "kernel_temperature",
            "output_gumbel_temperature", "graph_num_groups", "graph_edges_per_node", "graph_num_neighbors",
            "graph_fit_lr", "initializer_range", "position_init_std",
        )
        probability("drop_path_rate", "graph_p_in", "graph_p_out", "graph_edge_prob")
        if not 0.0 < self.kernel_truncation <= 2.0:
            raise ValueError(
                "NACConfig.kernel_truncation is a cosine distance and must lie in (0, 2], "
                f"got {self.kernel_truncation!r}"
            )
        for name in (
            "code_noise", "layer_scale_init_value", "read_in_layer_scale_init_value", "graph_regularizer_weight", "graph_fit_steps", "conditioning_dim"
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"NACConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.tokenizer_type in ("patch", "conv") and self.image_size % self.patch_size != 0:
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
        if self.graph_prior in ("planted-partition", "ring-of-cliques") or self.graph_regularizer in (
            "planted-partition",
            "ring-of-cliques",
        ):
            if self.num_processor_modules % self.graph_num_groups != 0:
                raise ValueError(
                    f"NACConfig.graph_num_groups ({self.graph_num_groups}) must divide "
                    f"NACConfig.num_processor_modules ({self.num_processor_modules})"
                )
        if self.graph_prior == "scale-free" or self.graph_regularizer == "scale-free":
            if self.graph_edges_per_node >= self.num_processor_modules:
                raise ValueError(
                    f"NACConfig.graph_edges_per_node ({self.graph_edges_per_node}) must be smaller than "
                    f"num_processor_modules ({self.num_processor_modules})"
                )
        if self.graph_prior == "watts-strogatz" or self.graph_regularizer == "watts-strogatz":
            if self.graph_num_neighbors >= self.num_processor_modules:
                raise ValueError(
                    f"NACConfig.graph_num_neighbors ({self.graph_num_neighbors}) must be smaller than "
                    f"num_processor_modules ({self.num_processor_modules})"
                )
        if self.conditional_signatures and self.conditioning_dim == 0:
            raise ValueError(
                "NACConfig.conditional_signatures=True needs a conditional generator: set conditioning_dim > 0"
            )
        if self.conditional_signatures and self.freeze_signatures:
            raise ValueError("NACConfig.conditional_signatures=True contradicts freeze_signatures=True; choose one")
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
        names = [name for name in self.__dataclass_fields__ if name in PRESET_FIELDS] + ["num_labels"]
        return [
            f"{name}: {getattr(self, name)!r} vs {getattr(other, name)!r}"
            for name in names
            if getattr(self, name) != getattr(other, name)
        ]

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "NACConfig":
        """Build a config from a named preset (see `NACConfig.presets()`), with any field overridden by keyword."""
        if name not in PRESETS:
            raise ValueError(f"unknown NAC preset {name!r}; choose one of {sorted(PRESETS)}")
        fields = copy.deepcopy(PRESETS[name])
        fields.update(overrides)
        return cls(**fields)

    @staticmethod
    def presets() -> list[str]:
        """Names accepted by `NACConfig.from_preset`."""
        return sorted(PRESETS)


# Fields that shape the weights (everything but training-time behaviour and labels).
PRESET_FIELDS = (
    "tokenizer_type", "image_size", "patch_size", "num_channels", "conv_position_channels", "vocab_size",
    "max_position_embeddings", "num_fourier_features", "num_input_modules", "num_processor_modules",
    "num_output_modules", "hidden_size", "code_dim", "signature_dim", "num_hidden_layers", "share_propagator_weights",
    "num_attention_heads", "attention_head_dim", "num_read_in_heads", "intermediate_size", "hidden_act", "share_kernel",
    "seeder_noise", "freeze_signatures", "conditioning_dim", "conditional_signatures", "output_pooling",
)

PRESETS: dict[str, dict] = {
    # A few thousand parameters' worth of work: a forward/backward well under a second on a CPU.
    "tiny": dict(
        image_size=16,
        patch_size=4,
        num_input_modules=4,
        num_processor_modules=8,
        num_output_modules=1,
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
        graph_prior="planted-partition",
        graph_num_groups=2,
        graph_p_in=0.9,
        graph_p_out=0.1,
        graph_fit_steps=300,
        graph_fit_lr=1e-2,
    ),
    # A CPU-trainable model for small images (digits, CIFAR) and short texts.
    "small": dict(
        image_size=32,
        patch_size=4,
        num_input_modules=16,
        num_processor_modules=64,
        num_output_modules=1,
        hidden_size=128,
        code_dim=64,
        signature_dim=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        attention_head_dim=32,
        intermediate_size=176,
        max_position_embeddings=1024,
        graph_prior="planted-partition",
        graph_num_groups=4,
        graph_p_in=0.9,
        graph_p_out=0.05,
    ),
    # The reference Tiny-ImageNet setting: conv stem on 64x64 images, 200 labels, the defaults of the architecture.
    "paper-tiny-imagenet": dict(
        tokenizer_type="conv",
        image_size=64,
        patch_size=4,
        num_labels=200,
    ),
}


# The model of the main job (scripts/train.py on scikit-learn's 8x8 digits): the `small` model on 16x16 grayscale
# inputs with fewer modules, so that it trains in minutes on two CPU cores; the paper's defaults otherwise.
PRESETS["digits"] = {
    **PRESETS["small"], "image_size": 16, "num_channels": 1, "num_input_modules": 8, "num_processor_modules": 32,
    "num_labels": 10,
}


__all__ = ["NACConfig"]
