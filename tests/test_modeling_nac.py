import copy
import re

import pytest
import torch
import torch.nn.functional as F


import nac_hf.modeling_nac as modeling
from nac_hf import NACForClassification, NACModel
from nac_hf.functional_nac import LargestTensor, naive_read_in
from nac_test_utils import MODEL_KINDS, example_inputs, tiny


TOKENIZERS = ["patch", "conv", "byte", "point"]


def labels_for(batch_size: int = 3) -> torch.Tensor:
    return torch.arange(batch_size) % 3


def trainable_without_grad(model) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]


@pytest.mark.parametrize("tokenizer_type", TOKENIZERS)
def test_forward_backward_each_tokenizer(tokenizer_type):
    torch.manual_seed(0)
    config = tiny(tokenizer_type=tokenizer_type)
    model = NACForClassification(config).train()
    output = model(**example_inputs(config), labels=labels_for())
    output.loss.backward()
    assert output.logits.shape == (3, 3)
    assert torch.isfinite(output.loss)
    assert trainable_without_grad(model) == []


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"num_output_modules": 3, "output_pooling": "confidence"},
        {"num_output_modules": 2, "output_pooling": "mean"},
        {"hidden_act": "gelu"},
        {"share_propagator_weights": True, "share_kernel": True},
        {"seeder_noise": False, "code_noise": 0.0, "stochastic_kernel": False},
        {"freeze_signatures": True},
        {"graph_regularizer": "planted-partition", "graph_regularizer_weight": 0.5},
        {"graph_prior": "none", "num_read_in_heads": 2},
        {"conditioning_dim": 6, "conditional_signatures": True},
    ],
)
def test_every_trainable_parameter_gets_a_gradient(overrides):
    # DDP runs with find_unused_parameters=False: a parameter left out of the graph would hang training.
    torch.manual_seed(0)
    config = tiny(**overrides)
    model = NACForClassification(config).train()
    inputs = example_inputs(config)
    if config.conditioning_dim:
        inputs["conditioning"] = torch.randn(3, 5, config.conditioning_dim)
    model(**inputs, labels=labels_for()).loss.backward()
    assert trainable_without_grad(model) == []
    if overrides.get("freeze_signatures"):
        assert "nac.generator.signatures" not in dict(model.named_parameters())


def test_conditional_generator_gives_each_example_its_own_circuit():
    torch.manual_seed(0)
    config = tiny(conditioning_dim=6, conditional_signatures=True, graph_prior="none")
    model = NACForClassification(config).eval()
    with torch.no_grad():
        for p in model.nac.generator.parameters():
            p.normal_(0, 0.5)
    pixels = torch.randn(1, 3, 16, 16).expand(2, -1, -1, -1)  # the same image twice
    tokens = torch.randn(2, 4, 6)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    out = model(pixel_values=pixels, conditioning=tokens, conditioning_mask=mask)
    assert out.connectivity.shape[:2] == (config.num_hidden_layers + 1, 2)
    assert not torch.allclose(out.connectivity[:, 0], out.connectivity[:, 1])
    assert not torch.allclose(out.logits[0], out.logits[1])
    # Masked conditioning tokens are not read.
    changed = tokens.clone()
    changed[0, 3] = 100.0
    again = model(pixel_values=pixels, conditioning=changed, conditioning_mask=mask)
    torch.testing.assert_close(again.logits, out.logits)
    # One vector per example works too, and codes only (signatures shared) keeps one connectivity.
    codes_only = NACModel(tiny(conditioning_dim=6)).eval()
    out = codes_only(pixel_values=pixels, conditioning=torch.randn(2, 6))
    assert out.connectivity.dim() == 3


@pytest.mark.parametrize(
    "conditioning, mask, message",
    [
        (None, None, "pass conditioning"),
        (torch.randn(3, 5), None, r"expected conditioning of shape"),
        (torch.randn(2, 6), None, r"expected conditioning of shape"),
        (torch.randn(3, 4, 6), torch.ones(3, 5), "conditioning_mask"),
        (torch.randn(3, 4, 6), torch.zeros(3, 4), "at least one unmasked"),
    ],
)
def test_bad_conditioning_raises_clear_errors(conditioning, mask, message):
    config = tiny(conditioning_dim=6)
    model = NACForClassification(config).eval()
    with pytest.raises(ValueError, match=message):
        model(**example_inputs(config), conditioning=conditioning, conditioning_mask=mask)
    with pytest.raises(ValueError, match="unconditional"):
        NACForClassification(tiny()).eval()(**example_inputs(config), conditioning=torch.randn(3, 6))


def test_loss_for_each_problem_type():
    torch.manual_seed(0)
    inputs = example_inputs(tiny())
    single = NACForClassification(tiny()).eval()
    out = single(**inputs, labels=labels_for())
    assert single.config.problem_type == "single_label_classification"
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, labels_for()))

    multi = NACForClassification(tiny(problem_type="multi_label_classification")).eval()
    targets = torch.tensor([[1.0, 0, 1], [0, 1, 0], [0, 0, 0]])
    out = multi(**inputs, labels=targets)
    assert torch.allclose(out.loss, F.binary_cross_entropy_with_logits(out.logits, targets))

    regression = NACForClassification(tiny(num_labels=1)).eval()
    values = torch.tensor([0.5, -1.0, 2.0])
    out = regression(**inputs, labels=values)
    assert regression.config.problem_type == "regression"
    assert torch.allclose(out.loss, F.mse_loss(out.logits.squeeze(-1), values))
    assert torch.allclose(regression(**inputs, labels=values[:, None]).loss, out.loss)
    several = NACForClassification(tiny(num_labels=3, problem_type="regression")).eval()
    for shape in ((), (3,), (3, 2)):  # a scalar, one value per example, or the wrong width: not (batch, num_labels)
        with pytest.raises(ValueError, match=r"regression expects labels of shape \(3, 3\)"):
            several(**inputs, labels=torch.zeros(shape))

    inferred = NACForClassification(tiny()).eval()
    out = inferred(**inputs, labels=targets)  # float labels of shape (B, num_labels): multi-label, as transformers
    assert inferred.config.problem_type == "multi_label_classification"


def test_the_input_modules_states_are_what_they_read():
    torch.manual_seed(0)
    config = tiny()
    model = NACModel(config).eval()
    read_in = model.read_in
    assert torch.all(read_in.attention_scale.gamma == 1.0)  # the input at full strength from the first step
    with torch.no_grad():
        read_in.attention_scale.gamma.fill_(0.5)
    seen = {}
    read_in.output.register_forward_hook(lambda m, args, out: seen.update(update=0.5 * out))  # after LayerScale
    read_in.ffn.register_forward_pre_hook(lambda m, args: seen.update(ffn_input=args[0]))
    with torch.no_grad():
        model(**example_inputs(config))
    torch.testing.assert_close(seen["ffn_input"], seen["update"])  # no residual: the seeded states are not kept


def test_head_reads_the_per_example_output_code_of_a_conditional_generator():
    torch.manual_seed(0)
    config = tiny(conditioning_dim=8)
    model = NACForClassification(config).eval()
    seen = []
    model.classifier.code_proj.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    conditioning = torch.randn(3, 8)
    output = model(**example_inputs(config), conditioning=conditioning)
    generator = model.nac.generator
    expected, _ = generator(3, conditioning)  # (B, U, C): the codes shifted by what each module read
    torch.testing.assert_close(seen[-1], expected[:, -1:])
    torch.testing.assert_close(model.nac(**example_inputs(config), conditioning=conditioning).output_codes,
                               expected[:, -1:])
    assert output.logits.shape == (3, 3)


def test_eval_is_deterministic_and_training_is_stochastic(tiny_config):
    model = NACForClassification(tiny_config)
    inputs = example_inputs(tiny_config)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, model(**inputs).logits)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(**inputs).logits, model(**inputs).logits)


@pytest.mark.parametrize("tokenizer_type", TOKENIZERS)
def test_save_load_round_trip_gives_equal_outputs(tmp_path, tokenizer_type):
    config = tiny(tokenizer_type=tokenizer_type, freeze_signatures=tokenizer_type == "conv")
    model = NACForClassification(config).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = NACForClassification.from_pretrained(tmp_path).eval()
    inputs = example_inputs(config)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, loaded(**inputs).logits, rtol=0, atol=1e-6)
    if config.freeze_signatures:
        assert not any("signatures" in name for name, _ in loaded.named_parameters())


def test_graph_prior_is_fit_at_creation_and_not_on_load(tmp_path, monkeypatch):
    config = tiny(graph_prior="ring-of-cliques")
    calls = []
    original = modeling.fit_signatures
    monkeypatch.setattr(modeling, "fit_signatures", lambda *a, **k: calls.append(1) or original(*a, **k))
    model = NACModel(config)
    assert calls == [1]
    model.save_pretrained(tmp_path)
    loaded = NACModel.from_pretrained(tmp_path)
    assert calls == [1], "the graph prior was fit again while loading a checkpoint"
    assert torch.equal(loaded.generator.signatures, model.generator.signatures)
    # The fitted processors talk exactly along the ring of cliques.
    num_in, num_proc = config.num_input_modules, config.num_processor_modules
    processors = model.generator.signatures[num_in : num_in + num_proc]
    talks = modeling.module_distance(processors, processors) < config.kernel_truncation
    import networkx as nx

    ring = torch.tensor(nx.to_numpy_array(nx.ring_of_cliques(2, 4))) > 0
    assert torch.equal(talks & ~torch.eye(num_proc, dtype=torch.bool), ring)


@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("per_example_codes", [False, True])
def test_fast_read_in_equals_naive_oracle(heads, per_example_codes):
    torch.manual_seed(0)
    config = tiny(tokenizer_type="byte", num_read_in_heads=heads)
    model = NACModel(config).double().eval()
    # Give the read-in non-trivial weights (the init is small) so that the comparison means something.
    with torch.no_grad():
        for p in model.read_in.parameters():
            p.normal_(0, 0.3)
    batch, num_in = 4, config.num_input_modules
    states = torch.randn(batch, num_in, config.hidden_size, dtype=torch.float64)
    codes = torch.randn(batch if per_example_codes else 1, num_in, config.code_dim, dtype=torch.float64)
    codes = codes if per_example_codes else codes[0]
    tokens = torch.randn(batch, 10, config.hidden_size, dtype=torch.float64)
    mask = torch.ones(batch, 10, dtype=torch.bool)
    mask[1, 6:] = False
    fast, _ = model.read_in.attend(states, codes, tokens, mask)
    naive = naive_read_in(model.read_in, states, codes, tokens, mask)
    assert (fast - naive).abs().max().item() < 1e-5
    fast_eager, _ = model.read_in.attend(states, codes, tokens, mask, output_attentions=True)
    assert (fast_eager - naive).abs().max().item() < 1e-5
    # In single precision as well.
    model.float()
    args32 = (states.float(), codes.float(), tokens.float(), mask)
    fast32, _ = model.read_in.attend(*args32)
    assert (fast32 - naive_read_in(model.read_in, *args32)).abs().max().item() < 1e-5


def test_read_in_never_builds_a_token_by_module_tensor():
    config = tiny(tokenizer_type="byte", num_input_modules=16, hidden_size=64)
    model = NACModel(config).eval()
    batch, length = 2, 200
    tokens, mask = model.tokenize(torch.randint(5, 261, (batch, length)))
    states = torch.randn(batch, config.num_input_modules, config.hidden_size)
    codes = model.generator.codes[: config.num_input_modules]
    with torch.no_grad():
        with LargestTensor() as fast:
            model.read_in.attend(states, codes, tokens, mask)
        with LargestTensor() as naive:
            naive_read_in(model.read_in, states, codes, tokens, mask)
    token_by_module = batch * length * config.num_input_modules * config.hidden_size * 4  # bytes of B·V·U·d
    assert naive.largest >= token_by_module  # the measurement sees such a tensor when one is built
    assert fast.largest < token_by_module / 8, f"the read-in built a tensor of {fast.largest} bytes"


def test_point_cloud_order_does_not_matter():
    config = tiny(tokenizer_type="point")
    model = NACForClassification(config).eval()
    points = torch.randn(2, 50, 3)
    permuted = points[:, torch.randperm(50)]
    with torch.no_grad():
        assert torch.allclose(model(points=points).logits, model(points=permuted).logits, atol=1e-5)


def test_point_mask_hides_points():
    config = tiny(tokenizer_type="point")
    model = NACForClassification(config).eval()
    points = torch.randn(2, 30, 3)
    padded = torch.cat([points, 100 * torch.randn(2, 10, 3)], dim=1)
    mask = torch.cat([torch.ones(2, 30), torch.zeros(2, 10)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model(points=points).logits, model(points=padded, points_mask=mask).logits, atol=1e-5)


@pytest.mark.parametrize("context_layers", [0, 2])
def test_byte_padding_does_not_change_the_output(context_layers):
    torch.manual_seed(0)
    config = tiny(tokenizer_type="byte", byte_context_layers=context_layers, layer_scale_init_value=1.0)
    model = NACForClassification(config).eval()
    input_ids = torch.randint(5, 261, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    padded_ids = torch.cat([input_ids, torch.zeros(2, 7, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, 7, dtype=torch.long)], dim=1)
    with torch.no_grad():
        short = model(input_ids=input_ids, attention_mask=mask).logits
        long = model(input_ids=padded_ids, attention_mask=padded_mask).logits
        assert torch.allclose(short, long, atol=1e-6)
        # Without a mask, the pad id marks the padding.
        assert torch.allclose(short, model(input_ids=padded_ids).logits, atol=1e-6)


def test_byte_context_layers_make_tokens_depend_on_their_neighbours_only():
    torch.manual_seed(0)
    config = tiny(tokenizer_type="byte", byte_context_layers=2, layer_scale_init_value=1.0)
    embedding = NACForClassification(config).eval().nac.input_tokenizer
    input_ids = torch.randint(5, 261, (1, 40))
    changed = input_ids.clone()
    changed[0, 20] = 5 if input_ids[0, 20] != 5 else 6
    with torch.no_grad():
        tokens, _ = embedding(input_ids, None)
        other, _ = embedding(changed, None)
    moved = (tokens - other).abs().amax(-1)[0] > 1e-6
    # Two blocks of width 7 reach 6 bytes either way, and no further.
    assert moved.nonzero().flatten().tolist() == list(range(14, 27))
    assert sum(isinstance(m, torch.nn.Conv1d) for m in embedding.modules()) == 2
    assert len(NACForClassification(tiny(tokenizer_type="byte")).nac.input_tokenizer.context) == 0


@pytest.mark.parametrize("training", [False, True])
def test_truncated_pairs_get_exactly_zero_attention(training):
    torch.manual_seed(0)
    config = tiny(graph_prior="none", signature_dim=4)
    model = NACModel(config).train(training)
    out = model(**example_inputs(config), output_attentions=True)
    num_proc = config.num_processor_modules
    silent = out.connectivity[0] == 0  # (P + O, I + P)
    assert silent.any() and (~silent).any()
    for layer in range(config.num_hidden_layers):
        weights = out.attentions[1 + layer]  # (B, H, P, I + P)
        assert torch.all(weights[..., silent[:num_proc]] == 0)
        assert torch.all(weights[..., ~silent[:num_proc]] > 0) or training
    readout = out.attentions[-1]
    assert torch.all(readout[..., silent[num_proc:]] == 0)


def test_signatures_learn_through_truncated_pairs():
    # The truncation is forward-only: a pair that does not talk still passes gradient to the signatures.
    torch.manual_seed(0)
    config = tiny(graph_prior="none", signature_dim=4, num_hidden_layers=1, stochastic_kernel=False)
    model = NACModel(config).train()
    kernels, talks = model.circuit()
    kernels.retain_grad()
    model.circuit = lambda signatures: (kernels, talks)  # hand the forward these tensors, to read their gradient
    model(**example_inputs(config)).last_hidden_state.pow(2).sum().backward()
    silent = ~talks[: config.num_processor_modules]
    assert silent.any()
    assert kernels.grad[0, : config.num_processor_modules][silent].abs().sum() > 0


def test_sdpa_and_explicit_attention_agree_in_eval(tiny_config):
    model = NACForClassification(tiny_config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_scale" in name:
                p.fill_(1.0)
    inputs = example_inputs(tiny_config)
    with torch.no_grad():
        fused = model(**inputs).logits  # SDPA everywhere
    explicit = model(**inputs, output_attentions=True).logits  # the kernel-modulated softmax written out
    assert torch.allclose(fused, explicit, atol=1e-5)


def test_threshold_eval_mode_uses_a_binary_kernel():
    config = tiny(kernel_eval_mode="threshold", graph_prior="none")
    model = NACModel(config).eval()
    attention = model.propagators[0].attention
    kernel = torch.tensor([[0.2, 0.7], [0.95, 0.4]])
    talks = torch.tensor([[True, True], [False, True]])
    assert torch.equal(attention.sample_kernel(kernel, talks, 2), torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
    attention.config.kernel_eval_mode = "expected"
    assert torch.equal(attention.sample_kernel(kernel, talks, 2), torch.tensor([[0.2, 0.7], [0.0, 0.4]]))


def test_stochastic_kernel_is_drawn_per_example_in_training():
    torch.manual_seed(0)
    model = NACModel(tiny()).train()
    attention = model.propagators[0].attention
    kernel = torch.full((3, 4), 0.5)
    talks = torch.ones(3, 4, dtype=torch.bool)
    talks[0, 0] = False
    sample = attention.sample_kernel(kernel, talks, 5)
    assert sample.shape == (5, 3, 4)
    assert torch.all(sample[:, 0, 0] == 0)
    assert not torch.allclose(sample[0], sample[1])
    assert torch.all((sample > 0) & (sample < 1) | ~talks)
    model.config.stochastic_kernel = False
    assert torch.equal(attention.sample_kernel(kernel, talks, 5), kernel * talks)


def test_graph_regularizer_falls_under_optimisation():
    torch.manual_seed(0)
    config = tiny(
        graph_prior="none",
        graph_regularizer="planted-partition",
        graph_regularizer_weight=1.0,
        graph_p_in=1.0,
        graph_p_out=0.0,
    )
    model = NACModel(config).train()
    optimizer = torch.optim.Adam([model.generator.signatures] + list(model.kernels.parameters()), lr=0.05)
    values = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = model(**example_inputs(config)).graph_regularizer_loss
        loss.backward()
        optimizer.step()
        values.append(loss.item())
    assert values[-1] < 0.5 * values[0], values[:: 10]


def test_regularizer_is_added_to_the_loss():
    config = tiny(graph_regularizer="scale-free", graph_regularizer_weight=0.3, graph_edges_per_node=2)
    model = NACForClassification(config).eval()
    inputs = example_inputs(config)
    out = model(**inputs, labels=labels_for())
    task = F.cross_entropy(out.logits, labels_for())
    assert out.graph_regularizer_loss > 0
    assert torch.allclose(out.loss, task + 0.3 * out.graph_regularizer_loss)
    # Without labels in evaluation no loss is wanted, and the regulariser (node matching on the CPU) is not run.
    assert model(**inputs).graph_regularizer_loss is None
    assert model.train()(**inputs).graph_regularizer_loss > 0


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config):
    inputs = example_inputs(tiny_config)

    def gradients(checkpointing: bool) -> tuple[dict, int]:
        torch.manual_seed(0)
        model = NACForClassification(tiny_config)
        assert model.supports_gradient_checkpointing
        if checkpointing:
            model.activation_checkpointing_enable()
        model.train()
        calls = []
        model.nac.propagators[0].attention.register_forward_hook(lambda *_: calls.append(1))
        torch.manual_seed(1)
        model(**inputs, labels=labels_for()).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}, len(calls)

    (plain, plain_calls), (checkpointed, checkpointed_calls) = gradients(False), gradients(True)
    assert (plain_calls, checkpointed_calls) == (1, 2), "the propagator was not recomputed in the backward pass"
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6), name


def test_outputs_carry_states_attentions_and_connectivity(tiny_config):
    model = NACModel(tiny_config).eval()
    out = model(**example_inputs(tiny_config), output_hidden_states=True, output_attentions=True)
    c = tiny_config
    total = c.num_input_modules + c.num_processor_modules + c.num_output_modules
    assert out.last_hidden_state.shape == (3, total, c.hidden_size)
    assert out.pooler_output.shape == (3, c.hidden_size)
    assert len(out.hidden_states) == c.num_hidden_layers + 3
    assert len(out.attentions) == c.num_hidden_layers + 2
    assert out.attentions[0].shape == (3, c.num_read_in_heads, c.num_input_modules, (c.image_size // c.patch_size) ** 2)
    receivers = c.num_processor_modules + c.num_output_modules
    senders = c.num_input_modules + c.num_processor_modules
    assert out.connectivity.shape == (c.num_hidden_layers + 1, receivers, senders)
    for weights in out.attentions:
        assert torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-5)
    as_tuple = model(**example_inputs(tiny_config), return_dict=False, output_attentions=True)
    assert torch.equal(as_tuple[0], out.last_hidden_state)


@pytest.mark.parametrize("kind", ["patch", "conv"])
def test_other_image_sizes_are_read_with_interpolate_pos_encoding(kind):
    torch.manual_seed(0)
    model = NACForClassification(tiny(tokenizer_type=kind)).eval()  # made for 16x16
    native, larger = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 24, 32), interpolate_pos_encoding=True).logits.shape == (2, 3)
        # at the model's own size the opt-in changes nothing
        torch.testing.assert_close(model(native, interpolate_pos_encoding=True).logits, model(native).logits,
                                   rtol=0, atol=0)
        # at 32x32 it is the model made for 32x32 whose position grid is the 16x16 one, resized bicubically
        weights = model.state_dict()
        grid = "nac.input_tokenizer." + ("position_embedding" if kind == "patch" else "position_grid")
        weights[grid] = F.interpolate(weights[grid], size=(8, 8), mode="bicubic", align_corners=False)
        made_for_32 = NACForClassification(tiny(tokenizer_type=kind, image_size=32)).eval()
        made_for_32.load_state_dict(weights)
        torch.testing.assert_close(model(larger, interpolate_pos_encoding=True).logits, made_for_32(larger).logits)


def test_head_swap_with_ignore_mismatched_sizes(tmp_path, tiny_config):
    model = NACForClassification(tiny_config)
    model.save_pretrained(tmp_path)
    swapped = NACForClassification.from_pretrained(tmp_path, num_labels=7, ignore_mismatched_sizes=True)
    assert swapped.classifier.linear.weight.shape == (7, tiny_config.hidden_size)
    assert torch.equal(swapped.nac.generator.codes, model.nac.generator.codes)
    assert swapped(**example_inputs(tiny_config)).logits.shape == (3, 7)


@pytest.mark.parametrize(
    "kind, inputs, message",
    [
        ("patch", {"pixel_values": torch.randn(2, 1, 16, 16)}, "3 channels"),
        ("patch", {"pixel_values": torch.randn(2, 3, 32, 32)},
         r"expected pixel_values of 16x16 \(config.image_size\), got 32x32.*interpolate_pos_encoding=True"),
        ("conv", {"pixel_values": torch.randn(2, 3, 16, 24)}, "16x16 .* got 16x24"),
        ("patch", {"pixel_values": torch.randn(2, 3, 18, 16), "interpolate_pos_encoding": True},
         "cannot be served by the position embedding"),
        ("byte", {"input_ids": torch.randint(5, 9, (2, 5)), "interpolate_pos_encoding": True}, "reads input_ids"),
        ("point", {"points": torch.randn(2, 10, 3), "interpolate_pos_encoding": True}, "reads points"),
        ("patch", {"pixel_values": torch.randn(3, 16, 16)}, "expected pixel_values of shape"),
        ("conv", {"pixel_values": torch.randint(0, 255, (2, 3, 16, 16))}, "floating-point pixel_values"),
        ("patch", {"input_ids": torch.randint(5, 261, (2, 5))}, "reads pixel_values"),
        ("byte", {"input_ids": torch.tensor([[5, 300]])}, r"must lie in \[0, 261\)"),
        ("byte", {"input_ids": torch.tensor([[5, -1]])}, r"must lie in \[0, 261\)"),
        ("byte", {"input_ids": torch.randint(5, 261, (1, 300))}, "max_position_embeddings"),
        ("byte", {"input_ids": torch.randn(2, 5)}, "integer input_ids"),
        ("byte", {"input_ids": torch.randint(5, 9, (2, 5)), "attention_mask": torch.ones(2, 4)}, "attention_mask"),
        ("byte", {"input_ids": torch.randint(5, 9, (2, 5)), "attention_mask": torch.zeros(2, 5)}, "at least one"),
        ("byte", {}, "pass input_ids"),
        ("point", {"points": torch.randn(2, 10, 2)}, r"\(batch, num_points, 3\)"),
        ("point", {"points": torch.randn(10, 3)}, r"\(batch, num_points, 3\)"),
        ("point", {"points": torch.randn(2, 10, 3), "points_mask": torch.ones(2, 9)}, "points_mask"),
    ],
)
def test_bad_inputs_raise_clear_errors(kind, inputs, message):
    model = NACForClassification(tiny(tokenizer_type=kind)).eval()
    with pytest.raises(ValueError, match=message):
        model(**inputs)


@pytest.mark.parametrize(
    "overrides, labels, message",
    [
        ({}, torch.tensor([0, 1]), r"labels of shape \(3,\)"),
        ({}, torch.tensor([0, 1, 3]), r"class ids in \[0, 3\)"),
        ({"problem_type": "single_label_classification"}, torch.tensor([0.0, 1, 2]), "integer class ids"),
        ({"problem_type": "single_label_classification"}, torch.full((3, 3), 0.5), "each row summing to 1"),
        ({"problem_type": "single_label_classification"}, torch.tensor([[1.5, -0.5, 0]] * 3), "non-negative"),
        ({"problem_type": "multi_label_classification"}, torch.ones(3, 2), r"labels of shape \(3, 3\)"),
        ({"num_labels": 1}, torch.tensor([1, 2, 3]), "floating-point labels"),
        ({"num_labels": 1}, torch.ones(3, 2), r"labels of shape \(3,\)"),
    ],
)
def test_bad_labels_raise_clear_errors(overrides, labels, message):
    config = tiny(**overrides)
    model = NACForClassification(config).eval()
    with pytest.raises(ValueError, match=message):
        model(**example_inputs(config), labels=labels)


def test_soft_targets_train_single_label_classification_with_their_cross_entropy():
    config = tiny(problem_type="single_label_classification")
    model = NACForClassification(config).eval()
    inputs, labels = example_inputs(config), torch.tensor([0, 2, 1])
    hard = model(**inputs, labels=labels)
    one_hot = model(**inputs, labels=F.one_hot(labels, 3).float())
    torch.testing.assert_close(one_hot.loss, hard.loss)
    mixed = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.1, 0.9], [0.25, 0.5, 0.25]])
    loss = model(**inputs, labels=mixed).loss
    torch.testing.assert_close(loss, -(mixed * hard.logits.log_softmax(-1)).sum(-1).mean())


def test_checkpoint_with_another_config_raises_a_clear_error(tmp_path, tiny_config):
    NACForClassification(tiny_config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"hidden_size: 32 vs 64"):
        NACForClassification.from_pretrained(tmp_path, config=tiny(hidden_size=64))
    with pytest.raises(ValueError, match=r"num_labels: 3 vs 5.*ignore_mismatched_sizes=True"):
        NACForClassification.from_pretrained(tmp_path, num_labels=5)


def test_non_nac_checkpoint_is_refused(tmp_path):
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match="model_type='vit'"):
        NACForClassification.from_pretrained(tmp_path)


def test_missing_checkpoint_raises_the_transformers_error(tmp_path):
    with pytest.raises(OSError):
        NACForClassification.from_pretrained(tmp_path / "nowhere")


def test_kernel_fields_shape_the_connectivity():
    torch.manual_seed(0)
    config = tiny(graph_prior="none", kernel_bandwidth_init=0.5, kernel_truncation=1.2)
    model = NACModel(config).eval()
    signatures = model.generator.signatures
    num_in, num_proc = config.num_input_modules, config.num_processor_modules
    distance = modeling.module_distance(signatures[num_in:], signatures[: num_in + num_proc])
    talks = distance < 1.2
    assert not torch.all(talks[num_proc:])  # truncation would cut some senders off the output module
    assert not torch.all(talks[:num_proc])  # ... and it does cut processors off
    talks[num_proc:] = True  # the read-out is not truncated: the output modules hear every sender
    expected = torch.exp(-distance / 0.5) * talks
    torch.testing.assert_close(model.connectivity()[0], expected)
    shared = NACModel(tiny(share_kernel=True)).eval()
    assert shared.connectivity().shape[0] == 1 and len(shared.kernels) == 1


def test_regularizer_loss_kinds_differ():
    inputs = example_inputs(tiny())
    values = {}
    for loss in ("mse", "kl"):
        torch.manual_seed(0)
        config = tiny(graph_regularizer="ring-of-cliques", graph_regularizer_weight=1.0,
                      graph_regularizer_distance=loss)
        values[loss] = NACModel(config).train()(**inputs).graph_regularizer_loss.item()
    assert all(v > 0 for v in values.values()) and values["mse"] != values["kl"]


def test_code_noise_is_drawn_each_pass_and_shared_by_the_batch():
    config = tiny(code_noise=0.1)
    model = NACModel(config)
    inputs = example_inputs(config)
    codes = model.generator.codes[-config.num_output_modules :]
    first, second = (model.train()(**inputs).output_codes for _ in range(2))
    assert first.shape == codes.shape  # one draw for all examples: the modulations stay one matmul per module
    assert not torch.equal(first, second) and not torch.equal(first, codes)
    relative = (first / codes - 1.0) / 0.1  # the noise n in c ⊙ (1 + code_noise · n)
    assert 0.3 < relative.std().item() < 3.0
    torch.testing.assert_close(model.eval()(**inputs).output_codes, codes, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------------------------
# attn_implementation: "sdpa" (fused, the default) and "eager" (written out) compute the same function
# ------------------------------------------------------------------------------------------------------------------


def eager_and_sdpa(config, training: bool = False):
    """Two models with the same weights, one per attention implementation."""
    torch.manual_seed(0)
    sdpa = NACForClassification(config).train(training)
    with torch.no_grad():
        for name, p in sdpa.named_parameters():
            if "layer_scale" in name:
                p.fill_(1.0)  # every branch at full strength, so that every attention shows in the output
    eager = copy.deepcopy(sdpa)
    eager.set_attn_implementation("eager")
    assert (sdpa.config._attn_implementation, eager.config._attn_implementation) == ("sdpa", "eager")
    return eager, sdpa


def kind_inputs(config) -> dict:
    inputs = example_inputs(config)
    if config.conditioning_dim:
        inputs["conditioning"] = torch.randn(3, 5, config.conditioning_dim, generator=torch.Generator().manual_seed(1))
    return inputs


@pytest.mark.parametrize("kind", list(MODEL_KINDS))
def test_eager_and_sdpa_attention_agree_in_eval(kind):
    config = tiny(**MODEL_KINDS[kind])
    eager, sdpa = eager_and_sdpa(config)
    inputs = kind_inputs(config)
    with torch.no_grad():
        fused, written = sdpa(**inputs, output_attentions=True), eager(**inputs, output_attentions=True)
        torch.testing.assert_close(written.logits, fused.logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(eager(**inputs).logits, sdpa(**inputs).logits, rtol=0, atol=1e-5)
    for weights_eager, weights_sdpa in zip(written.attentions, fused.attentions, strict=True):
        torch.testing.assert_close(weights_eager, weights_sdpa, rtol=0, atol=1e-5)


@pytest.mark.parametrize("stochastic_kernel", [False, True])
def test_eager_and_sdpa_attention_give_the_same_gradients_in_training(stochastic_kernel):
    config = tiny(graph_prior="none", kernel_truncation=0.6, stochastic_kernel=stochastic_kernel,
                  conditioning_dim=6, num_read_in_heads=2)
    eager, sdpa = eager_and_sdpa(config, training=True)
    inputs, labels = kind_inputs(config), torch.tensor([0, 1, 2])
    gradients = []
    for model in (sdpa, eager):
        torch.manual_seed(0)  # the same draws of noise, drop-path and kernel in both
        model(**inputs, labels=labels).loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, grad in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_eager_attention_runs_no_fused_kernel_and_sdpa_does(monkeypatch):
    config = tiny(conditioning_dim=6)
    eager, sdpa = eager_and_sdpa(config, training=True)
    calls = []
    fused = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append("sdpa") or fused(*a, **k))
    original = modeling.kernel_modulated_attention
    monkeypatch.setattr(modeling, "kernel_modulated_attention", lambda *a: calls.append("skmdpa") or original(*a))
    inputs = kind_inputs(config)
    eager(**inputs, labels=labels_for()).loss.backward()
    assert calls == []
    sdpa(**inputs, labels=labels_for()).loss.backward()
    # the conditioning reader and the read-in through SDPA; the propagators and the read-out through the
    # kernel-modulated attention
    assert calls.count("sdpa") == 2 and calls.count("skmdpa") == config.num_hidden_layers + 1


def test_eager_attention_compiles_to_one_graph():
    import torch._dynamo

    config = tiny(conditioning_dim=6)
    eager, _ = eager_and_sdpa(config, training=True)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(eager)(**kind_inputs(config), labels=labels_for())
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons


def test_attn_implementation_is_chosen_as_for_any_transformers_model(tmp_path):
    config = tiny()
    NACForClassification(config).save_pretrained(tmp_path)
    assert NACForClassification.from_pretrained(tmp_path).config._attn_implementation == "sdpa"
    loaded = NACForClassification.from_pretrained(tmp_path, attn_implementation="eager")
    assert loaded.config._attn_implementation == "eager"
    assert modeling.eager_attention(loaded.nac.read_in.config)  # every part of the model sees it
    assert NACModel(tiny(attn_implementation="eager")).config._attn_implementation == "eager"
    loaded.set_attn_implementation("sdpa")
    assert not modeling.eager_attention(loaded.nac.propagators[0].attention.config)
    for refused in ("flash_attention_2", "flex_attention", "paged|eager", "kernels-community/flash-attn", "fast"):
        with pytest.raises(ValueError, match=f"no attn_implementation='{re.escape(refused)}'.*'sdpa'.*'eager'"):
            NACForClassification.from_pretrained(tmp_path, attn_implementation=refused)
        with pytest.raises(ValueError, match="'sdpa'.*'eager'"):
            loaded.set_attn_implementation(refused)
        with pytest.raises(ValueError, match="attn_implementation"):
            tiny(attn_implementation=refused)
    assert loaded.config._attn_implementation == "sdpa"


def test_residual_branch_drops_whole_examples_and_scales_the_kept_ones():
    config = tiny(layer_scale_init_value=0.5)
    branch = modeling.ResidualBranch(config).train()
    states, update = torch.randn(64, 3, config.hidden_size), torch.randn(64, 3, config.hidden_size)
    out = branch(states, update, drop_rate=0.25)
    kept = (out != states).flatten(1).any(1)  # per example: the whole branch added, or none of it
    assert kept.any() and not kept.all()
    expected = states + 0.5 * update * (kept.float() / 0.75)[:, None, None]  # kept ones scaled by 1 / (1 − rate)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(branch.eval()(states, update, drop_rate=0.25), states + 0.5 * update)


def test_modulations_are_computed_once_in_evaluation_and_again_when_the_codes_change():
    from nac_hf.modeling_nac import ModFC

    torch.manual_seed(0)
    model = NACForClassification(tiny()).eval()
    pixels = torch.randn(2, 3, 16, 16)
    projections = []
    for module in model.modules():
        if isinstance(module, ModFC):
            module.code_proj.register_forward_hook(lambda *_: projections.append(1))

    def logits(grad: bool) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            return model(pixel_values=pixels).logits.detach()

    reference = logits(grad=True)  # with gradients: nothing is reused
    computed = len(projections)
    assert torch.equal(logits(grad=False), reference)
    assert len(projections) == 2 * computed
    assert torch.equal(logits(grad=False), reference)
    assert len(projections) == 2 * computed, "the second evaluation computed its modulations again"
    # Codes changed in place (a training step, a load): computed again, and right.
    with torch.no_grad():
        model.nac.generator.codes.mul_(0.5)
    changed = logits(grad=True)
    assert not torch.allclose(changed, reference)
    assert torch.equal(logits(grad=False), changed)
    state = {name: value.clone() for name, value in model.state_dict().items()}
    state["nac.generator.codes"].mul_(2.0)
    model.load_state_dict(state)
    assert torch.allclose(logits(grad=False), reference, atol=1e-6)
    # In training, never.
    model.train()
    before = len(projections)
    with torch.no_grad():
        model(pixel_values=pixels)
        model(pixel_values=pixels)
    assert len(projections) - before == 2 * computed
