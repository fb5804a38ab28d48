"""NACConfig: validation with errors that name the field, presets as differences from a base, what a config reads,
and what each field does where no other test shows it."""

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError

from nac_hf import NACConfig, NACForClassification, NACModel
from nac_hf.configuration_nac import PRESETS, WEIGHT_SHAPE_FIELDS, preset_fields
from nac_test_utils import example_inputs, tiny


def test_presets():
    assert {"tiny", "small", "paper-tiny-imagenet"} <= set(NACConfig.presets())
    paper = NACConfig.from_preset("paper-tiny-imagenet", graph_fit_steps=10)
    assert (paper.tokenizer_type, paper.image_size, paper.num_labels) == ("conv", 64, 200)
    assert (paper.num_input_modules, paper.num_processor_modules, paper.hidden_size) == (64, 256, 384)
    with torch.device("meta"):
        count = sum(p.numel() for p in NACForClassification(paper).parameters())
    assert 21.0e6 < count < 23.0e6, count
    with pytest.raises(ValueError, match="unknown NAC preset"):
        NACConfig.from_preset("huge")
    assert NACConfig.from_preset("tiny", hidden_size=48).hidden_size == 48


# ------------------------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"tokenizer_type": "audio"}, "tokenizer_type"),
        ({"image_size": 18}, "image_size"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"graph_num_groups": 3}, "graph_num_groups"),
        ({"graph_prior": "star"}, "graph_prior"),
        ({"kernel_truncation": 0.0}, "kernel_truncation"),
        ({"drop_path_rate": 1.5}, "drop_path_rate"),
        ({"graph_regularizer": "scale-free"}, "graph_regularizer_weight"),
        ({"graph_regularizer_weight": 0.1}, "graph_regularizer_weight"),
        ({"freeze_signatures": True, "graph_regularizer": "scale-free", "graph_regularizer_weight": 1.0}, "freeze"),
        ({"tokenizer_type": "byte", "vocab_size": 100}, "vocab_size"),
        ({"graph_prior": "watts-strogatz", "graph_num_neighbors": 8}, "graph_num_neighbors"),
        ({"kernel_eval_mode": "sample"}, "kernel_eval_mode"),
        ({"output_pooling": "max"}, "output_pooling"),
        ({"conditional_signatures": True}, "conditioning_dim"),
        ({"conditioning_dim": -1}, "conditioning_dim"),
        ({"num_labels": 0}, "num_labels"),
        ({"num_labels": -3}, "num_labels"),
        ({"num_labels": 2.5}, "num_labels"),
        ({"num_labels": None}, "num_labels"),
        ({"attn_implementation": "flash_attention_2"}, "attn_implementation='flash_attention_2'.*'sdpa'.*'eager'"),
    ],
)
def test_inconsistent_config_raises_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny(**overrides)

@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"seeder_noise": 1}, "'seeder_noise' expected bool"),
        ({"share_kernel": "yes"}, "'share_kernel' expected bool"),
        ({"hidden_size": 32.0}, "'hidden_size' expected int"),
        ({"graph_seed": -1}, "graph_seed"),
        ({"seeder_logvar_init": float("nan")}, "seeder_logvar_init.*finite"),
        ({"initializer_range": 0.0}, "initializer_range"),
        ({"fourier_feature_scale": -1.0}, "fourier_feature_scale"),
        ({"graph_regularizer_distance": "l1"}, "graph_regularizer_distance"),
        ({"tokenizer_type": "byte", "pad_token_id": 300}, "pad_token_id"),
    ],
)
def test_fields_are_typed_and_checked(overrides, message):
    with pytest.raises(ValueError, match=message) as raised:
        tiny(**overrides)
    assert isinstance(raised.value.__cause__, StrictDataclassError)  # huggingface_hub's validation found it


def test_numbers_of_either_kind_are_accepted_where_a_float_is_expected():
    assert tiny(kernel_truncation=1, drop_path_rate=0).kernel_truncation == 1


def test_an_assignment_is_checked_too():
    config = tiny()
    with pytest.raises(StrictDataclassError, match="num_hidden_layers"):
        config.num_hidden_layers = 0


def test_presets_are_differences_from_their_base():
    defaults = NACConfig()
    for name, (base, changes) in PRESETS.items():
        below = NACConfig(**preset_fields(base)) if base else defaults
        repeated = [key for key, value in changes.items() if getattr(below, key) == value]
        assert not repeated, f"preset {name!r} repeats its base in {repeated}"
    digits = NACConfig.from_preset("digits")
    small = NACConfig.from_preset("small")
    assert (digits.hidden_size, digits.num_hidden_layers) == (small.hidden_size, small.num_hidden_layers)
    assert (digits.image_size, digits.num_channels, digits.num_labels) == (16, 1, 10)


@pytest.mark.parametrize(
    "tokenizer_type, modality, main_input",
    [("patch", "image", "pixel_values"), ("conv", "image", "pixel_values"), ("byte", "text", "input_ids"),
     ("point", "points", "points")],
)
def test_what_a_config_reads(tokenizer_type, modality, main_input):
    config = tiny(tokenizer_type=tokenizer_type)
    assert (config.modality, config.main_input_name) == (modality, main_input)
    assert NACModel(config).main_input_name == main_input
    assert set(example_inputs(config)) >= {main_input}


def test_weight_shape_fields_are_exactly_those_that_change_the_weights():
    changed = {
        "tokenizer_type": "conv", "image_size": 32, "patch_size": 8, "num_channels": 1, "conv_position_channels": 4,
        "vocab_size": 300, "max_position_embeddings": 128, "byte_context_layers": 1, "num_fourier_features": 8,
        "num_input_modules": 6,
        "num_processor_modules": 10, "num_output_modules": 2, "num_added_modules": 2, "hidden_size": 40,
        "code_dim": 24, "signature_dim": 12,
        "num_hidden_layers": 3, "share_propagator_weights": True, "num_attention_heads": 4, "attention_head_dim": 8,
        "num_read_in_heads": 2, "intermediate_size": 40, "hidden_act": "gelu", "share_kernel": True,
        "seeder_noise": False, "freeze_signatures": True, "conditioning_dim": 8, "conditional_signatures": True,
        "output_pooling": "mean",
    }
    needs = {"conv_position_channels": {"tokenizer_type": "conv"}, "vocab_size": {"tokenizer_type": "byte"},
             "max_position_embeddings": {"tokenizer_type": "byte"}, "byte_context_layers": {"tokenizer_type": "byte"},
             "num_fourier_features": {"tokenizer_type": "point"},
             "conditional_signatures": {"conditioning_dim": 8}, "output_pooling": {"num_output_modules": 2}}
    assert set(changed) == set(WEIGHT_SHAPE_FIELDS)

    def parameter_shapes(**overrides) -> dict:
        model = NACForClassification(tiny(graph_prior="none", **overrides))
        return {key: tuple(t.shape) for key, t in model.named_parameters()}

    for name, value in changed.items():
        context = needs.get(name, {})
        assert parameter_shapes(**context) != parameter_shapes(**context, **{name: value}), name


# What each field does, for the fields no other test exercises.


def test_conv_position_channels_are_appended_to_every_token():
    config = tiny(tokenizer_type="conv", conv_position_channels=5)
    model = NACModel(config).eval()
    tokens, _ = model.tokenize(example_inputs(config)["pixel_values"])
    assert tokens.shape[-1] == config.hidden_size + 5
    grid = model.input_tokenizer.position_grid  # (1, 5, h, w): the same channels at every example
    torch.testing.assert_close(tokens[:, :, config.hidden_size :], grid.flatten(2).transpose(1, 2).expand(3, -1, -1))


def test_num_fourier_features_sets_the_point_features():
    for count in (4, 12):
        config = tiny(tokenizer_type="point", num_fourier_features=count)
        model = NACModel(config).eval()
        assert model.input_tokenizer.frequencies.shape == (3, count)
        assert model.input_tokenizer.mlp[0].in_features == 3 + 2 * count


def test_layer_norm_eps_reaches_every_normalisation():
    config = tiny(layer_norm_eps=0.5)
    model = NACForClassification(config)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(norm.eps == 0.5 for norm in norms)
    modulated = [m for m in model.modules() if hasattr(m, "code_proj")]
    assert modulated and all(layer.eps == 0.5 for layer in modulated)
    inputs = example_inputs(config)
    with torch.no_grad():
        torch.manual_seed(0)
        wide = NACForClassification(config).eval()(**inputs).logits
        torch.manual_seed(0)
        narrow = NACForClassification(tiny(layer_norm_eps=1e-5)).eval()(**inputs).logits
    assert not torch.allclose(wide, narrow)


def test_layer_scale_at_zero_leaves_the_processors_as_seeded():
    config = tiny(layer_scale_init_value=0.0)
    model = NACModel(config).eval()
    with torch.no_grad():
        hidden = model(**example_inputs(config), output_hidden_states=True).hidden_states
    start, end = config.num_input_modules, config.num_input_modules + config.num_processor_modules
    for states in hidden[1:-1]:  # after the read-in and after each propagator layer
        torch.testing.assert_close(states[:, start:end], hidden[0][:, start:end])
    assert not torch.allclose(hidden[1][:, :start], hidden[0][:, :start])  # the read-in keeps its own scale (1.0)


def test_kernel_temperature_sharpens_the_sampled_kernel():
    spread = {}
    for temperature in (0.05, 5.0):
        model = NACModel(tiny(kernel_temperature=temperature, graph_prior="none")).train()
        attention = model.read_out.attention
        kernel, talks = model.circuit()
        torch.manual_seed(0)
        sample = attention.sample_kernel(kernel[0], torch.ones_like(talks), batch_size=64)
        spread[temperature] = (sample - 0.5).abs().mean().item()
    assert spread[0.05] > 0.4 > spread[5.0]  # near 0 or 1 when cold, near 1/2 when hot


def test_output_gumbel_temperature_sharpens_the_pooling_in_training():
    peaks = {}
    for temperature in (0.01, 100.0):
        pooling = NACModel(tiny(num_output_modules=3, output_gumbel_temperature=temperature)).pooling.train()
        outputs = torch.randn(256, 3, 32, generator=torch.Generator().manual_seed(0))
        torch.manual_seed(0)
        pooled = pooling(outputs)
        # The weight each example gave its output modules, recovered from the pooled state (the states are generic).
        weights = torch.linalg.lstsq(outputs.transpose(1, 2), pooled.unsqueeze(-1)).solution.squeeze(-1)
        peaks[temperature] = weights.max(-1).values.mean().item()
    assert peaks[0.01] > 0.99 and peaks[100.0] < 0.5
