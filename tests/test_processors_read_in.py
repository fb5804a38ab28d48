"""Processors that read the input themselves (`processors_read_in`): processor p starts from what input module p
read, the input modules send to no one, and such a NAC trains, exits early, drops modules, saves, loads, exports and
compiles like any other."""


import pytest
import torch
from transformers import AutoModelForImageClassification

from nac_hf import NACConfig, NACForClassification, NACImageProcessor
from nac_test_utils import example_inputs, load_script_inputs, run_checkpoint_script, run_load_script, tiny


def read_in_model(**overrides) -> NACForClassification:
    torch.manual_seed(0)
    config = tiny(processors_read_in=True, num_input_modules=8, kernel_truncation=1.0, graph_prior="none", **overrides)
    return NACForClassification(config).eval()


def test_the_processors_start_from_what_their_input_modules_read():
    model = read_in_model()
    inputs = example_inputs(model.config)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, output_attentions=True)
    after_read_in = out.hidden_states[1]  # (B, U, D): input, processor, output modules
    torch.testing.assert_close(after_read_in[:, 8:16], after_read_in[:, :8], rtol=0, atol=0)
    # Senders are the 8 processors alone: the kernels and every attention over modules have 8 columns.
    assert out.connectivity.shape == (3, 8 + 1, 8)
    assert all(weights.shape[-1] == 8 for weights in out.attentions[1:])


def test_the_processors_seeds_and_the_input_modules_signatures_play_no_part():
    model = read_in_model(seeder_noise=False)
    inputs = example_inputs(model.config)
    with torch.no_grad():
        before = model(**inputs).logits
        generator = model.nac.generator
        # What a processor would have been seeded with, and where an input module would sit in the circuit.
        seeder = generator.seeder.forward
        generator.seeder.forward = lambda codes, batch: seeder(codes, batch) + torch.cat(
            [torch.zeros(8), torch.randn(8), torch.zeros(1)])[None, :, None]
        generator.signatures[:8] = torch.randn(8, model.config.signature_dim)
        after = model(**inputs).logits
        generator.seeder.forward = seeder
        generator.codes[:8] += 1.0  # the input modules' codes do: they read the input
        moved = model(**inputs).logits
    torch.testing.assert_close(after, before)
    assert not torch.allclose(moved, before)


def test_every_parameter_learns_also_under_module_dropout():
    model = read_in_model(module_dropout=0.5, graph_regularizer="ring-of-cliques", graph_regularizer_weight=1.0,
                          graph_num_groups=2).train()
    output = model(**example_inputs(model.config), labels=torch.tensor([0, 1, 2]))
    (output.loss + output.graph_regularizer_loss).backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []


def test_a_config_that_cannot_read_in_through_the_processors_is_refused():
    with pytest.raises(ValueError, match="num_input_modules \\(4\\) must equal num_processor_modules \\(8\\)"):
        tiny(processors_read_in=True)


def test_a_dropped_model_saves_loads_exports_and_compiles(tmp_path):
    pytest.importorskip("onnxruntime")
    from nac_hf.module_dropping import drop_modules
    from nac_hf.onnx_export import export_onnx, onnx_max_difference

    model = read_in_model()
    drop_modules(model, keep_processor=3, order="kernel_mass")
    model.save_pretrained(tmp_path)
    processor = NACImageProcessor(size={"height": 16, "width": 16})
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.processors_read_in and loaded.config.num_input_modules == 3
    inputs = example_inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)
    remote = run_load_script(tmp_path, "image", "remote", cwd=tmp_path.parent)  # where nac_hf is not installed
    with torch.no_grad():
        expected = model(**load_script_inputs("image", processor)).logits
    torch.testing.assert_close(torch.tensor(remote["logits"]), expected)
    assert onnx_max_difference(model, export_onnx(model, tmp_path / "m.onnx", batch_size=2), batch_size=3) <= 1e-4
    torch._dynamo.reset()
    for training in (False, True):
        explanation = torch._dynamo.explain(model.train(training))(**inputs, labels=torch.tensor([0, 1, 2]))
        assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons


def test_the_dropping_script_drops_the_input_modules_with_their_processors(tmp_path):
    model = read_in_model(num_labels=10, image_size=8, patch_size=2, num_channels=1)
    results = run_checkpoint_script(model, "module_dropping", tmp_path, "--keep", "1,0.25", "--random_seeds", "0",
                                    "--repeats", "1", "--max_eval_samples", "20")
    assert results["inputs_follow_processors"] and len(results["rows"]) == 5 * 2  # five orders, random once
    for row in results["rows"]:
        assert row["input_modules"] == row["processor_modules"] == (8 if row["keep_processor"] == 1.0 else 2)
        assert row["keep_input"] == row["keep_processor"]


def test_it_is_a_config_field_that_round_trips():
    config = NACConfig.from_preset("digits", processors_read_in=True, num_input_modules=32)
    assert NACConfig.from_dict(config.to_dict()).processors_read_in
