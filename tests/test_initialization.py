"""Every initialisation rule of `NACPreTrainedModel._init_weights` holds on the tensors of a freshly built model (the
rules are applied by transformers' initialisation pass, which can skip a branch without any error)."""

import math

import pytest
import torch
from torch import nn

from nac_hf import NACConfig, NACForClassification
from nac_test_utils import MODEL_KINDS
from nac_hf.modeling_nac import (
    POSITION_INIT_STD,
    ConditioningReader,
    ConvEmbedding,
    LayerScale,
    LogVarianceLinear,
    PatchEmbedding,
    SignatureKernel,
)


def built(**overrides) -> NACForClassification:
    torch.manual_seed(0)
    config = NACConfig.from_preset("small", num_labels=10, graph_fit_steps=20, **overrides)
    return NACForClassification(config)


def assert_std(tensor: torch.Tensor, expected: float, name: str, rel: float = 0.1) -> None:
    measured = tensor.detach().float().std().item()
    assert measured == pytest.approx(expected, rel=rel), f"{name}: std {measured:.4f}, expected {expected:.4f}"


# Uniform in ±1/√fan_in: std 1/√(3·fan_in).
FAN_IN = 1 / math.sqrt(3)


@pytest.mark.parametrize("name", sorted(MODEL_KINDS))
def test_every_initialisation_rule_holds_on_a_built_model(name):
    model = built(**MODEL_KINDS[name])
    config = model.config
    seen = set()
    for path, module in model.named_modules():
        if isinstance(module, LogVarianceLinear):
            assert torch.all(module.weight == 0), path
            assert torch.all(module.bias == config.seeder_logvar_init), path
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            fan_in = module.weight[0].numel()
            if module.weight.numel() >= 256:
                assert_std(module.weight, FAN_IN / math.sqrt(fan_in), path)
            if module.bias is not None:
                assert torch.all(module.bias == 0), path
        elif isinstance(module, nn.LayerNorm):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0), path
        elif isinstance(module, LayerScale):
            assert torch.all(module.gamma == module.init_value), path
        elif isinstance(module, SignatureKernel):
            assert module.log_bandwidth.item() == pytest.approx(math.log(config.kernel_bandwidth_init)), path
        elif isinstance(module, nn.Embedding):
            assert_std(module.weight, config.initializer_range, path)
            if module.padding_idx is not None:
                assert torch.all(module.weight[module.padding_idx] == 0), path
        elif isinstance(module, ConditioningReader):
            for weight in module.projection_weights():
                assert_std(weight, FAN_IN / math.sqrt(weight.shape[1]), path)
            assert torch.all(module.in_proj_bias == 0), path
        elif isinstance(module, (PatchEmbedding, ConvEmbedding)):
            grid = module.position_embedding if isinstance(module, PatchEmbedding) else module.position_grid
            assert_std(grid, POSITION_INIT_STD, path)
        seen.add(type(module).__name__)
    generator = model.nac.generator
    assert_std(generator.codes, 1.0, "codes")
    assert generator.signatures.abs().sum() > 0
    if config.tokenizer_type == "point":
        assert_std(model.nac.input_tokenizer.frequencies, config.fourier_feature_scale, "frequencies")
    assert "LogVarianceLinear" in seen  # seeder noise is on by default


def test_seeder_noise_starts_small():
    model = built().train()
    seeder = model.nac.generator.seeder
    codes = model.nac.generator.codes
    torch.manual_seed(0)
    noisy = seeder(codes, 64)  # (B, U, D)
    noise = noisy - seeder.mean(seeder.norm(codes))
    assert noise.std().item() == pytest.approx(math.exp(0.5 * model.config.seeder_logvar_init), rel=0.1)
    assert not torch.equal(noise[0], noise[1])  # drawn per example, not shared by the batch
