"""Capacity extension: added processor modules join the learned graph, train alone while everything else stays bit
for bit as it was, and an extended NAC saves, loads (also without nac_hf) and drops modules like any other."""

import pytest
import torch

from nac_hf import NACForClassification, NACImageProcessor
from nac_hf.module_dropping import drop_modules
from nac_test_utils import example_inputs, load_script_inputs, parameters_moved_by_training, run_load_script, tiny


def trained_like(**overrides) -> NACForClassification:
    torch.manual_seed(0)
    return NACForClassification(tiny(**overrides)).eval()


def degrees(model, modules: list[int]) -> tuple[list[int], list[int]]:
    """How many other processors each module hears and is heard by, under the evaluation kernel, at every layer."""
    config = model.config
    num_in, num_proc = model.nac.input_senders, config.num_processor_modules  # input modules among the senders
    with torch.no_grad():
        talks = model.nac.connectivity()[: config.num_hidden_layers, :num_proc, num_in:] > 0  # (L, P, P)
    talks &= ~torch.eye(num_proc, dtype=torch.bool)
    heard, hearing = talks.sum(-1).amin(0), talks.sum(-2).amin(0)  # the fewest over the layers
    return heard[modules].tolist(), hearing[modules].tolist()


@pytest.mark.parametrize("init", ["mirror", "random"])
def test_added_modules_join_the_learned_graph(init):
    model = trained_like()
    before = model.nac.generator.all_codes().detach().clone()
    added = model.add_modules(3, init=init, seed=1)
    config = model.config
    assert added == [8, 9, 10] and config.num_processor_modules == 11 and config.num_added_modules == 3
    assert config.graph_prior == "none" and config.graph_regularizer == "none"
    generator = model.nac.generator
    assert generator.added_codes.shape == (3, config.code_dim) and generator.codes.shape[0] == 4 + 8 + 1
    codes = generator.all_codes()
    num_in = config.num_input_modules
    assert torch.equal(codes[: num_in + 8], before[: num_in + 8]) and torch.equal(codes[-1], before[-1])
    heard, hearing = degrees(model, added)
    assert min(heard) >= 1 and min(hearing) >= 1
    logits = model(**example_inputs(config)).logits
    assert logits.shape == (3, 3) and torch.isfinite(logits).all()
    if init == "mirror":  # copies of existing processors, the codes a little apart
        signatures = generator.all_signatures()[num_in : num_in + 11]
        assert all(any(torch.equal(signatures[i], signatures[j]) for j in range(8)) for i in added)
        assert not any(torch.equal(codes[num_in + i], codes[num_in + j]) for i in added for j in range(8))


def test_adding_is_seeded_and_checks_its_arguments():
    first, again, other = trained_like(), trained_like(), trained_like()
    for model, seed in ((first, 0), (again, 0), (other, 1)):
        model.add_modules(2, init="random", seed=seed)
    assert torch.equal(first.nac.generator.added_codes, again.nac.generator.added_codes)
    assert not torch.equal(first.nac.generator.added_codes, other.nac.generator.added_codes)
    model = trained_like()
    with pytest.raises(ValueError, match="choose 'mirror' or 'random'"):
        model.add_modules(2, init="zeros")
    with pytest.raises(ValueError, match="positive number"):
        model.add_modules(0)
    assert model.config.num_processor_modules == 8 and not hasattr(model.nac.generator, "added_codes")


def test_frozen_old_parameters_stay_bit_for_bit_under_adamw_weight_decay(tmp_path):
    model = trained_like().train()
    model.add_modules(2, freeze_existing=True)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"nac.generator.added_codes", "nac.generator.added_signatures"}
    pixel_values = example_inputs(model.config, batch_size=16)["pixel_values"]
    assert parameters_moved_by_training(model, pixel_values, tmp_path) == trainable


def test_an_extended_nac_saves_loads_and_drops_modules(tmp_path):
    model = trained_like()
    model.add_modules(2, init="random")
    inputs = example_inputs(model.config)
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_pretrained(tmp_path)
    loaded = NACForClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.num_added_modules == 2 and loaded.config.num_processor_modules == 10
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, expected, atol=1e-6, rtol=0)

    processor = NACImageProcessor(size={"height": 16, "width": 16})
    processor.save_pretrained(tmp_path)
    remote = run_load_script(tmp_path, "image", "remote", cwd=tmp_path)  # a machine with torch + transformers only
    with torch.no_grad():
        local = loaded(**load_script_inputs("image", processor)).logits
    torch.testing.assert_close(torch.tensor(remote["logits"]), local, atol=1e-5, rtol=0)

    kept = drop_modules(loaded, keep_processor=[0, 1, 8, 9])  # two old and the two added modules
    assert kept["processor"] == [0, 1, 8, 9] and loaded.config.num_added_modules == 0
    assert loaded.nac.generator.codes.shape[0] == 4 + 4 + 1 and not hasattr(loaded.nac.generator, "added_codes")
    with torch.no_grad():
        assert torch.isfinite(loaded(**inputs).logits).all()


@pytest.mark.parametrize("init", ["mirror", "random"])
def test_processors_that_read_the_input_come_with_input_modules_of_their_own(init, tmp_path):
    model = trained_like(processors_read_in=True, num_input_modules=8)
    before = model.nac.generator.all_codes().detach().clone()
    assert model.add_modules(3, init=init, seed=1) == [8, 9, 10]
    config, generator = model.config, model.nac.generator
    assert (config.num_input_modules, config.num_processor_modules, config.num_added_modules) == (11, 11, 3)
    assert generator.added_codes.shape == (6, config.code_dim) and generator.codes.shape[0] == 8 + 8 + 1
    codes = generator.all_codes()
    # The old input modules, then the new ones; the old processors, then the new ones; the output module.
    assert torch.equal(codes[:8], before[:8]) and torch.equal(codes[11:19], before[8:16])
    assert torch.equal(codes[-1], before[-1])
    heard, hearing = degrees(model, [8, 9, 10])
    assert min(heard) >= 1 and min(hearing) >= 1
    if init == "mirror":  # a new module's input module and processor copy one existing pair, a little apart
        for new in (8, 9, 10):
            source = (codes[11 + new] - codes[11:19]).norm(dim=-1).argmin()
            assert (codes[new] - codes[:8]).norm(dim=-1).argmin() == source
            assert not torch.equal(codes[new], codes[source])
    inputs = example_inputs(config)
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_pretrained(tmp_path / "extended")
    loaded = NACForClassification.from_pretrained(tmp_path / "extended").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, expected, atol=1e-6, rtol=0)
    # Frozen, only the new modules' codes and signatures move; dropped, the new modules become ordinary ones.
    frozen = trained_like(processors_read_in=True, num_input_modules=8).train()
    frozen.add_modules(2, init=init, freeze_existing=True)
    pixel_values = example_inputs(frozen.config, batch_size=16)["pixel_values"]
    moved = parameters_moved_by_training(frozen, pixel_values, tmp_path / "train")
    assert moved == {"nac.generator.added_codes", "nac.generator.added_signatures"}
    kept = drop_modules(loaded, keep_processor=[0, 9, 10])
    assert kept["input"] == kept["processor"] == [0, 9, 10] and loaded.config.num_added_modules == 0
    with torch.no_grad():
        assert torch.isfinite(loaded(**inputs).logits).all()
