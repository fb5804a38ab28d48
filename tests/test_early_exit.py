"""Early exit over the propagator layers: off changes nothing, an example that leaves after layer ℓ gets the logits
of the model run with ℓ layers (also in a mixed batch), training can read out after every layer, and the script
measures accuracy, depth and speed."""

import copy

import pytest
import torch
from torch import nn

from nac_hf import NACConfig, NACForClassification
from nac_test_utils import MODEL_KINDS, example_inputs, run_checkpoint_script, tiny


def with_layers(model: NACForClassification, layers: int) -> NACForClassification:
    """The oracle: the same weights as a NAC of `layers` propagator layers (its first layers and kernels, and the
    read-out with the read-out's kernel), without early exit."""
    truncated = copy.deepcopy(model)
    config = truncated.config
    nac = truncated.nac
    if not config.share_propagator_weights:
        nac.propagators = nac.propagators[:layers]
    if not config.share_kernel:
        nac.kernels = nn.ModuleList([*nac.kernels[:layers], nac.kernels[-1]])
    config.exit_threshold, config.exit_training, config.min_exit_layer = None, False, 1
    config.num_hidden_layers = layers
    return truncated


def three_layer_model(**overrides) -> NACForClassification:
    torch.manual_seed(0)
    return NACForClassification(tiny(num_labels=4, num_hidden_layers=3, **overrides)).eval()


def test_early_exit_is_off_by_default_and_a_threshold_of_one_never_exits():
    model = three_layer_model()
    inputs = example_inputs(model.config, batch_size=5)
    assert model.config.exit_threshold is None and not model.config.exit_training
    with torch.no_grad():
        full = model(**inputs)
        model.config.exit_threshold = 1.0
        never = model(**inputs)
    assert full.exit_layer is None
    assert never.exit_layer.tolist() == [3] * 5 and torch.equal(never.logits, full.logits)


KINDS = {**MODEL_KINDS, "patch": {}, "shared-weights": dict(share_propagator_weights=True, share_kernel=True)}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_an_example_that_exits_gets_the_logits_of_the_shorter_model_also_in_a_mixed_batch(kind):
    model = three_layer_model(**KINDS[kind])
    inputs = example_inputs(model.config, batch_size=8)
    if model.config.conditioning_dim:  # a circuit per example
        inputs["conditioning"] = torch.randn(8, 2, model.config.conditioning_dim)
    with torch.no_grad():
        model.config.exit_threshold = 0.0  # everyone leaves after the first layer
        first = model(**inputs)
        confidence = first.logits.softmax(-1).amax(-1)
        model.config.exit_threshold = confidence.median().item()  # about half leave after the first layer
        mixed = model(**inputs)
    assert first.exit_layer.tolist() == [1] * 8
    assert len(set(mixed.exit_layer.tolist())) > 1  # the batch is really mixed
    assert torch.equal(mixed.exit_layer == 1, confidence > model.config.exit_threshold)
    for index, layers in enumerate(mixed.exit_layer.tolist()):
        alone = {name: value[index : index + 1] for name, value in inputs.items()}
        with torch.no_grad():
            expected = with_layers(model, layers)(**alone).logits
        torch.testing.assert_close(mixed.logits[index : index + 1], expected, atol=1e-5, rtol=0)


def test_no_example_exits_before_min_exit_layer():
    model = three_layer_model(min_exit_layer=2)
    model.config.exit_threshold = 0.0
    with torch.no_grad():
        output = model(**example_inputs(model.config, batch_size=4))
        expected = with_layers(model, 2)(**example_inputs(model.config, batch_size=4)).logits
    assert output.exit_layer.tolist() == [2] * 4
    torch.testing.assert_close(output.logits, expected, atol=1e-5, rtol=0)


def test_exit_training_sums_the_losses_of_the_read_outs_after_every_exit_layer():
    # Deterministic training (no noise, sampling or drop-path), so that the models can be compared in training mode.
    deterministic = dict(seeder_noise=False, code_noise=0.0, stochastic_kernel=False, drop_path_rate=0.0)
    model = three_layer_model(exit_training=True, min_exit_layer=2, **deterministic).train()
    inputs = example_inputs(model.config, batch_size=6)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    output = model(**inputs, labels=labels)
    expected = [with_layers(model, layers).train()(**inputs, labels=labels) for layers in (2, 3)]
    torch.testing.assert_close(output.loss, expected[0].loss + expected[1].loss)
    torch.testing.assert_close(output.logits, expected[1].logits)  # the logits are the full model's
    output.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.config.exit_training = False
    torch.testing.assert_close(model(**inputs, labels=labels).loss, expected[1].loss)  # off: one read-out


def test_exits_are_refused_where_they_mean_nothing():
    with pytest.raises(ValueError, match="min_exit_layer"):
        NACConfig.from_preset("tiny", num_hidden_layers=2, min_exit_layer=3)
    with pytest.raises(ValueError, match="exit_threshold"):
        NACConfig.from_preset("tiny", exit_threshold=1.5)
    model = three_layer_model()
    inputs = example_inputs(model.config)
    with pytest.raises(ValueError, match="needs config.exit_training=True in training or config.exit_threshold"):
        model.nac.forward_with_exits(model.head, **inputs)  # no exits configured: the model itself reads out once
    model.config.exit_threshold = 0.9
    with pytest.raises(ValueError, match="no attentions or hidden states"):
        model(**inputs, output_hidden_states=True)
    torch.manual_seed(0)
    regression = NACForClassification(tiny(num_labels=1, exit_threshold=0.9)).eval()
    with pytest.raises(ValueError, match="single-label classifier"):
        regression(**inputs)


def test_the_script_reports_accuracy_depth_and_speed_at_every_threshold(tmp_path):
    torch.manual_seed(0)
    model = NACForClassification(tiny(num_labels=10, image_size=8, patch_size=2, num_channels=1, num_hidden_layers=3))
    results = run_checkpoint_script(model, "early_exit", tmp_path, "--thresholds", "1,0.0", "--repeats", "1",
                                    "--single_examples", "3", "--max_eval_samples", "40")
    assert results["examples"] == 40 and results["baseline"]["layers"] == 3
    never, always = results["rows"]
    assert never["threshold"] == 1.0 and never["mean_layers"] == 3
    assert never["accuracy"] == results["baseline"]["accuracy"] and never["max_logit_difference"] == 0.0
    assert always["max_logit_difference"] > 0 and 0.0 <= results["baseline"]["read_out_attention_on_inputs"] <= 1.0
    assert always["threshold"] == 0.0 and always["mean_layers"] == 1  # everyone leaves after the first layer
    for row in results["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["throughput"] > 0 and row["throughput_batch_1"] > 0
        assert row["speedup"] > 0 and row["speedup_batch_1"] > 0  # timed in turns with the model without early exit
