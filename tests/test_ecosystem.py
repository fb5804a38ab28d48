"""NAC with what Hugging Face users bring: PEFT/LoRA, int8, torch.compile/export, gradient checkpointing, embedding
resizing, mismatched heads and positional inputs."""

import copy

import pytest
import torch
from datasets import Dataset
from torch import nn
from transformers import AutoModel, AutoModelForImageClassification, Trainer

from nac_hf import NACConfig, NACForClassification, NACModel
import nac_test_utils
from nac_test_utils import MODEL_KINDS, example_inputs, training_args


def tiny(**overrides) -> NACConfig:
    return nac_test_utils.tiny(graph_fit_steps=50, **overrides)  # a shorter signature fit: many models are built here


def forward_logits(model, inputs, seed=0):
    """Logits of one forward pass with a fixed RNG (sampled kernels, seeder and code noise, drop-path)."""
    torch.manual_seed(seed)
    return model(**inputs).logits


# MODEL_KINDS covers every kind of Linear a NAC has: ModFC layers, the seeder, the conditioning reader, output
# pooling, the point MLP and the ConvNeXt stem.
@pytest.mark.parametrize("name", sorted(MODEL_KINDS))
def test_an_adapter_on_any_linear_changes_the_output(name):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    config = tiny(**MODEL_KINDS[name])
    model = NACForClassification(config).train()  # training mode: the seeder's noise layer is in use
    inputs = example_inputs(config)
    if config.conditioning_dim:
        inputs["conditioning"] = torch.randn(3, 2, config.conditioning_dim)
    base = forward_logits(model, inputs)
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    assert len(linears) > 20
    changes = {}
    for layer in linears:
        adapter = peft.LoraConfig(r=2, target_modules=[layer], init_lora_weights=False)
        adapted = peft.get_peft_model(copy.deepcopy(model), adapter)
        changes[layer] = (forward_logits(adapted, inputs) - base).abs().max().item()
    # A bypassed layer changes the logits by float noise only (≈1e-7); a used one by orders of magnitude more.
    assert {layer: change for layer, change in changes.items() if change < 1e-5} == {}


def test_lora_on_the_read_in_is_exact_and_merges():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    config = tiny(num_read_in_heads=2)
    model = NACForClassification(config).eval()
    inputs = example_inputs(config)
    adapter = peft.LoraConfig(r=4, target_modules=["read_in.key.linear", "read_in.value.linear"],
                              init_lora_weights=False)
    adapted = peft.get_peft_model(copy.deepcopy(model), adapter)
    with torch.no_grad():
        logits = adapted(**inputs).logits
        assert (logits - model(**inputs).logits).abs().max() > 1e-4
        merged = adapted.merge_and_unload()
        assert type(merged.nac.read_in.key.linear) is nn.Linear
        torch.testing.assert_close(merged(**inputs).logits, logits, atol=1e-5, rtol=1e-5)


def random_images(n: int, config: NACConfig) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(n, config.num_channels, config.image_size, config.image_size, generator=generator)
    return Dataset.from_dict({"pixel_values": pixels.numpy(), "labels": torch.arange(n) % config.num_labels})


def test_peft_model_with_a_saved_classifier_trains_with_trainer_and_merges(tmp_path):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    config = tiny()
    model = NACForClassification(config)
    adapter = peft.LoraConfig(
        r=4, target_modules=["query.linear", "key.linear", "value.linear", "output.linear"],
        modules_to_save=["head_norm", "classifier"],
    )
    adapted = peft.get_peft_model(model, adapter)
    before = {name: p.detach().clone() for name, p in adapted.named_parameters() if p.requires_grad}
    assert any("lora_" in name for name in before) and any("classifier" in name for name in before)
    trainer = Trainer(
        model=adapted,
        args=training_args(tmp_path, learning_rate=1e-2, per_device_train_batch_size=8, remove_unused_columns=False),
        train_dataset=random_images(16, config).with_format("torch"),
    )
    trainer.train()
    changed = [name for name, p in adapted.named_parameters() if p.requires_grad and not torch.equal(p, before[name])]
    assert any("lora_B" in name for name in changed) and any("classifier" in name for name in changed)
    adapted.eval()
    inputs = example_inputs(config)
    with torch.no_grad():
        logits = adapted(**inputs).logits
        torch.testing.assert_close(adapted.merge_and_unload()(**inputs).logits, logits, atol=1e-5, rtol=1e-5)


def test_int8_dynamic_quantization_runs_close_to_float():
    torch.manual_seed(0)
    config = tiny()
    model = NACForClassification(config).eval()
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    assert not any(type(m) is nn.Linear for m in quantized.modules())
    inputs = example_inputs(config, batch_size=8)
    with torch.no_grad():
        full, int8 = model(**inputs).logits, quantized(**inputs).logits
    assert not torch.equal(full, int8)  # the quantised layers are used
    assert (full - int8).abs().max() < 0.05 * full.abs().max()


@pytest.mark.parametrize("kind", ["patch", "byte", "point"])
@pytest.mark.parametrize("training", [False, True])
def test_forward_compiles_to_one_graph(kind, training):
    import torch._dynamo

    torch.manual_seed(0)
    config = tiny(tokenizer_type=kind)
    model = NACForClassification(config).train(training)
    assert NACForClassification._can_compile_fullgraph
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(**example_inputs(config), labels=torch.tensor([0, 2, 1]))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_label_and_byte_checks_still_run_in_eager_mode():
    config = tiny(tokenizer_type="byte")
    model = NACForClassification(config)
    inputs = example_inputs(config)
    with pytest.raises(ValueError, match="class ids in"):
        model(**inputs, labels=torch.tensor([0, 1, 3]))
    inputs["input_ids"][0, 0] = config.vocab_size
    with pytest.raises(ValueError, match="input_ids must lie in"):
        model(**inputs)


@pytest.mark.parametrize("kind", ["patch", "byte", "point"])
def test_model_exports(kind):
    torch.manual_seed(0)
    config = tiny(tokenizer_type=kind)
    model = NACForClassification(config).eval()
    inputs = example_inputs(config)
    exported = torch.export.export(model, (), inputs)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(**inputs).logits, model(**inputs).logits)


def test_trainer_with_torch_compile(tmp_path):
    torch.manual_seed(0)
    config = tiny(image_size=8, patch_size=2, num_channels=1)
    trainer = Trainer(
        model=NACForClassification(config),
        args=training_args(tmp_path, per_device_train_batch_size=8, torch_compile=True,
                            torch_compile_backend="aot_eager", remove_unused_columns=False),
        train_dataset=random_images(16, config).with_format("torch"),
    )
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))


def text_dataset(config: NACConfig, n: int = 16) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, config.vocab_size, (n, 10), generator=generator)
    return Dataset.from_dict({"input_ids": ids.numpy(), "attention_mask": torch.ones_like(ids).numpy(),
                              "labels": torch.arange(n) % config.num_labels})


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing_of_a_byte_model_trains(tmp_path, reentrant):
    torch.manual_seed(0)
    config = tiny(tokenizer_type="byte")
    model = NACForClassification(config)
    trainer = Trainer(
        model=model,
        args=training_args(tmp_path, per_device_train_batch_size=8, activation_checkpointing=True,
                           activation_checkpointing_kwargs={"use_reentrant": reentrant}),
        train_dataset=text_dataset(config).with_format("torch"),
    )
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))


@pytest.mark.parametrize("kind, embedding", [("patch", nn.Conv2d), ("conv", nn.Conv2d), ("byte", nn.Embedding),
                                             ("point", nn.Sequential)])
def test_input_embeddings_are_the_embedding_layer(kind, embedding):
    config = tiny(tokenizer_type=kind)
    model = NACForClassification(config)
    layer = model.get_input_embeddings()
    assert isinstance(layer, embedding)
    model.enable_input_require_grads()  # what PEFT and gradient checkpointing call
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    assert model(**example_inputs(config)).logits.requires_grad


def test_byte_model_resizes_its_token_embeddings():
    torch.manual_seed(0)
    config = tiny(tokenizer_type="byte")
    model = NACForClassification(config).eval()
    inputs = example_inputs(config)
    with torch.no_grad():
        before = model(**inputs).logits
    old_size = config.vocab_size
    model.resize_token_embeddings(old_size + 3)
    assert model.config.vocab_size == old_size + 3
    assert model.get_input_embeddings().num_embeddings == old_size + 3
    new_ids = inputs["input_ids"].clone()
    new_ids[1, 0] = old_size + 2  # a new token id is accepted
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, before)
        assert model(input_ids=new_ids, attention_mask=inputs["attention_mask"]).logits.shape == (3, 3)


def test_another_head_size_loads_like_any_transformers_model(tmp_path):
    torch.manual_seed(0)
    config = tiny()
    model = NACForClassification(config)
    model.save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match=r"num_labels: 3 vs 42.*ignore_mismatched_sizes=True"):
        AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=42)
    new, info = AutoModelForImageClassification.from_pretrained(
        tmp_path, num_labels=42, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert new.classifier.linear.weight.shape == (42, config.hidden_size)
    assert {key for key, *_ in info["mismatched_keys"]} == {"classifier.linear.weight", "classifier.linear.bias"}
    for name, parameter in model.nac.state_dict().items():
        assert torch.equal(new.nac.state_dict()[name], parameter), name
    bare = AutoModel.from_pretrained(tmp_path, hidden_size=64, ignore_mismatched_sizes=True)
    assert isinstance(bare, NACModel) and bare.config.hidden_size == 64


@pytest.mark.parametrize("kind", ["patch", "byte", "point"])
def test_main_input_is_accepted_positionally(kind):
    torch.manual_seed(0)
    config = tiny(tokenizer_type=kind)
    model = NACForClassification(config).eval()
    inputs = example_inputs(config)
    main = inputs.pop(model.main_input_name)
    with torch.no_grad():
        by_name = model(**{model.main_input_name: main}, **inputs).logits
        torch.testing.assert_close(model(main, **inputs).logits, by_name)
        torch.testing.assert_close(model.nac(main, **inputs).pooler_output,
                                   model.nac(**{model.main_input_name: main}, **inputs).pooler_output)
    with pytest.raises(ValueError, match="both positionally and by keyword"):
        model(main, **{model.main_input_name: main})
