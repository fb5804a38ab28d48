"""Dropping modules: slicing equals masking, everything kept changes nothing, a dropped NAC saves and loads as any
other, and the orders rank modules by the circuit they learned."""

import pytest
import torch
from transformers import AutoModelForImageClassification

import nac_hf.modeling_nac as modeling
from nac_hf import NACForClassification, NACImageProcessor, NACModel
from nac_hf.module_dropping import drop_modules, module_scores
from nac_test_utils import example_inputs, load_script_inputs, run_load_script, tiny


def trained_like(**overrides) -> NACForClassification:
    """A tiny classifier whose kernel lets most pairs talk, with varied signatures (as training leaves them)."""
    torch.manual_seed(0)
    fields = dict(num_input_modules=6, num_processor_modules=10, graph_prior="none", kernel_truncation=1.0)
    return NACForClassification(tiny(**{**fields, **overrides})).eval()


# Processors that read the input themselves, each through its own input module.
READ_IN = dict(processors_read_in=True, num_input_modules=10)


def masked_logits(model, inputs, inputs_kept, processors_kept, monkeypatch) -> torch.Tensor:
    """The oracle: the undropped model with the dropped modules cut out of every kernel as senders, so that what
    they compute reaches no one."""
    config = model.config
    senders = torch.zeros(config.num_input_modules + config.num_processor_modules, dtype=torch.bool)
    senders[inputs_kept] = True
    senders[config.num_input_modules + torch.as_tensor(processors_kept)] = True
    senders = senders[config.num_input_modules - model.nac.input_senders :]  # the columns of the circuit
    circuit = modeling.NACModel.circuit

    def cut(self, signatures=None):
        kernels, talks = circuit(self, signatures)
        return kernels, talks & senders

    monkeypatch.setattr(modeling.NACModel, "circuit", cut)
    with torch.no_grad():
        logits = model(**inputs).logits
    monkeypatch.setattr(modeling.NACModel, "circuit", circuit)
    return logits


def test_keeping_every_module_changes_nothing():
    model = trained_like()
    inputs = example_inputs(model.config)
    with torch.no_grad():
        before = model(**inputs).logits
    kept = drop_modules(model, keep_processor=1.0, keep_input=6)
    assert kept == {"input": list(range(6)), "processor": list(range(10))}
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, before)


@pytest.mark.parametrize("order", ["random", "out_degree", "in_degree", "kernel_mass"])
def test_dropping_equals_cutting_the_modules_out_of_the_circuit(order, monkeypatch):
    model = trained_like()
    inputs = example_inputs(model.config)
    original = trained_like()
    kept = drop_modules(model, keep_processor=0.5, keep_input=3, order=order, seed=1)
    assert len(kept["processor"]) == 5 and len(kept["input"]) == 3
    assert model.nac.generator.codes.shape[0] == 3 + 5 + 1 and model.config.num_processor_modules == 5
    with torch.no_grad():
        dropped = model(**inputs).logits
    expected = masked_logits(original, inputs, kept["input"], kept["processor"], monkeypatch)
    assert (dropped - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("order", ["random", "kernel_mass"])
def test_a_processor_that_reads_the_input_goes_with_its_input_module(order, monkeypatch):
    model, original = trained_like(**READ_IN), trained_like(**READ_IN)
    inputs = example_inputs(model.config)
    kept = drop_modules(model, keep_processor=4, order=order, seed=1)
    assert kept["input"] == kept["processor"] and len(kept["processor"]) == 4
    assert (model.config.num_input_modules, model.config.num_processor_modules) == (4, 4)
    with torch.no_grad():
        dropped = model(**inputs).logits
    expected = masked_logits(original, inputs, kept["input"], kept["processor"], monkeypatch)
    assert (dropped - expected).abs().max().item() <= 1e-5
    # The input modules follow the processors; asking for others is refused, and nothing is dropped.
    with pytest.raises(ValueError, match="pass keep_processor only"):
        drop_modules(original, keep_processor=[0, 1], keep_input=[0, 2])
    assert original.config.num_processor_modules == 10
    assert drop_modules(original, keep_processor=[0, 1], keep_input=[1, 0]) == {"input": [0, 1], "processor": [0, 1]}


def test_a_dropped_nac_saves_loads_and_is_smaller(tmp_path):
    model = trained_like(graph_regularizer="ring-of-cliques", graph_regularizer_weight=1.0, graph_num_groups=2)
    inputs = example_inputs(model.config)
    drop_modules(model, keep_processor=[0, 3, 4], keep_input=[1, 5])
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert (loaded.config.num_input_modules, loaded.config.num_processor_modules) == (2, 3)
    assert loaded.config.graph_prior == "none" and loaded.config.graph_regularizer == "none"
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)
    assert loaded.num_parameters() < trained_like().num_parameters()
    # And where nac_hf is not installed, from the folder's own code.
    processor = NACImageProcessor(size={"height": 16, "width": 16})
    processor.save_pretrained(tmp_path)
    remote = run_load_script(tmp_path, "image", "remote", cwd=tmp_path.parent)
    with torch.no_grad():
        expected = model(**load_script_inputs("image", processor)).logits
    torch.testing.assert_close(torch.tensor(remote["logits"]), expected)


def test_orders_follow_the_degrees_of_hand_placed_signatures():
    torch.manual_seed(0)
    config = tiny(num_input_modules=2, num_processor_modules=4, signature_dim=8, graph_prior="none",
                  kernel_truncation=0.6)
    model = NACModel(config)
    # Signatures on axes: two modules talk when their cosine is above 0.4. Processor 0 points between the axes of
    # both input modules and of processors 1 and 2 (cosine 0.5 with each); processor 3 is alone on its own axis.
    axes = torch.eye(8)
    hub = axes[0] + axes[1] + axes[2] + axes[3]
    model.generator.signatures.data.copy_(torch.stack([axes[0], axes[1], hub, axes[2], axes[3], axes[6], axes[7]]))
    inputs_out, out_degree = module_scores(model, "out_degree")
    _, in_degree = module_scores(model, "in_degree")
    # Receivers: processors 0-3 and the output module, which hears every sender (the read-out is not truncated).
    assert out_degree.tolist() == [3, 2, 2, 1] and inputs_out.tolist() == [2, 2]
    assert in_degree.tolist() == [4, 1, 1, 0]  # a module hearing itself is no edge
    assert drop_modules(model, keep_processor=2, order="out_degree")["processor"] == [0, 1]  # a tie goes by index


@pytest.mark.parametrize(
    "fields", [{}, {**READ_IN, "num_input_modules": 5}], ids=["inputs-apart", "processors-read-in"]
)
def test_the_loss_order_removes_at_each_step_the_processor_the_loss_misses_least(fields, monkeypatch):
    model = trained_like(num_processor_modules=5, num_labels=3, **fields)
    examples = {**example_inputs(model.config, batch_size=24), "labels": torch.arange(24) % 3}
    inputs = {name: value for name, value in examples.items() if name != "labels"}
    input_scores, scores = module_scores(model, "loss", examples=examples)
    # The oracle: the same greedy elimination, each candidate's loss from the masked (not sliced) model.
    all_inputs = list(range(model.config.num_input_modules))
    alive, removed = list(range(5)), []
    while len(alive) > 1:
        losses = {}
        for candidate in alive:
            kept = [p for p in alive if p != candidate]
            logits = masked_logits(model, inputs, kept if fields else all_inputs, kept, monkeypatch)
            losses[candidate] = torch.nn.functional.cross_entropy(logits, examples["labels"]).item()
        removed.append(min(alive, key=lambda p: (losses[p], p)))
        alive.remove(removed[-1])
    assert sorted(range(5), key=lambda p: scores[p].item()) == removed + alive
    if fields:  # each input module follows its processor
        assert torch.equal(input_scores, scores)
    else:
        assert torch.equal(input_scores, module_scores(model, "kernel_mass")[0])
    assert drop_modules(model, keep_processor=2, order="loss", examples=examples)["processor"] == sorted(
        (removed + alive)[-2:])


def test_the_loss_order_needs_a_classifier_and_labelled_examples():
    model = trained_like()
    examples = example_inputs(model.config)
    with pytest.raises(ValueError, match="needs examples"):
        drop_modules(model, keep_processor=2, order="loss", examples=examples)  # no labels
    with pytest.raises(ValueError, match="pass the classifier"):
        drop_modules(model.nac, keep_processor=2, order="loss", examples={**examples, "labels": torch.zeros(3)})
    assert model.config.num_processor_modules == 10
    # Named modules need no ranking, so no examples either.
    assert drop_modules(model, keep_processor=[1, 4], keep_input=[0], order="loss")["processor"] == [1, 4]


def test_bad_requests_are_refused():
    model = trained_like()
    for keep, message in ((0, "between 1 and the 10"), (11, "between 1 and the 10"), (1.5, "fraction"),
                          ([10], "outside 0..9")):
        with pytest.raises(ValueError, match=message):
            drop_modules(model, keep_processor=keep)
    with pytest.raises(ValueError, match="unknown module order"):
        drop_modules(model, keep_processor=2, order="size")
    assert model.config.num_processor_modules == 10  # nothing was dropped by a refused call


def test_the_script_measures_every_order_at_every_fraction(tmp_path):
    from nac_test_utils import run_checkpoint_script

    model = trained_like(num_labels=10, image_size=8, patch_size=2, num_channels=1)
    results = run_checkpoint_script(model, "module_dropping", tmp_path, "--keep", "1,0.5", "--keep_input", "1",
                                    "--random_seeds", "0,1", "--repeats", "1", "--max_eval_samples", "40")
    assert results["examples"] == 40 and results["baseline"]["processor_modules"] == 10
    rows = results["rows"]
    assert len(rows) == (2 + 4) * 2  # random twice, the four learned orders once; two fractions each
    assert {row["order"] for row in rows} == {"random", "out_degree", "in_degree", "kernel_mass", "loss"}
    for row in rows:
        assert row["processor_modules"] == (10 if row["keep_processor"] == 1.0 else 5)
        assert 0.0 <= row["accuracy"] <= 1.0 and row["throughput"] > 0
        assert row["speedup"] > 0 and row["baseline_throughput"] > 0  # timed in turns with the full model
        assert row["gflops"] < results["baseline"]["gflops"] or row["keep_processor"] == 1.0
    full = [row for row in rows if row["keep_processor"] == 1.0]
    assert all(row["accuracy"] == results["baseline"]["accuracy"] for row in full)  # nothing dropped, same answers


def test_module_dropout_draws_processors_per_example_and_keeps_the_inputs():
    model = NACModel(tiny(module_dropout=0.25, num_processor_modules=40, graph_num_groups=2)).train()
    torch.manual_seed(0)
    kept = model.kept_senders(500, "cpu")  # (B, I + P)
    assert kept.shape == (500, 4 + 40) and kept[:, :4].all()
    assert abs((~kept[:, 4:]).float().mean().item() - 0.25) < 0.02
    assert not torch.equal(kept[0], kept[1])
    talks = torch.ones(41, 44, dtype=torch.bool)
    assert model.eval().drop_senders(talks, 3) is talks  # never in evaluation
    off = NACModel(tiny()).train()
    state = torch.get_rng_state()
    assert off.drop_senders(talks, 3) is talks and torch.equal(torch.get_rng_state(), state)  # off: nothing drawn


def test_a_dropped_out_module_is_cut_out_of_its_example(monkeypatch):
    deterministic = dict(seeder_noise=False, code_noise=0.0, stochastic_kernel=False, drop_path_rate=0.0)
    model = trained_like(module_dropout=0.5, **deterministic).train()
    inputs = example_inputs(model.config, batch_size=2)
    masks = torch.ones(2, 16, dtype=torch.bool)
    masks[0, [6, 8, 9]] = False  # processors 0, 2 and 3 dropped for the first example
    masks[1, [7, 15]] = False
    monkeypatch.setattr(modeling.NACModel, "kept_senders", lambda self, batch, device: masks)
    with torch.no_grad():
        together = model(**inputs).logits
    monkeypatch.undo()
    model.config.module_dropout = 0.0  # the oracle: no dropout of its own, the example's modules cut out by hand
    for example in range(2):
        alone = {name: value[example : example + 1] for name, value in inputs.items()}
        processors = [i - 6 for i in range(6, 16) if masks[example, i]]
        expected = masked_logits(model, alone, list(range(6)), processors, monkeypatch)
        torch.testing.assert_close(together[example : example + 1], expected)


def test_every_parameter_learns_under_module_dropout():
    model = trained_like(module_dropout=0.5).train()
    model(**example_inputs(model.config), labels=torch.tensor([0, 1, 2])).loss.backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []


def test_the_table_of_several_models_averages_them_and_keeps_each_ones_loss():
    from benchmarks.module_dropping import table

    def results(full: float, kept: float, speedups: list[float]) -> dict:
        rows = [{"order": "random", "seed": seed, "keep_input": 0.5, "keep_processor": 0.5, "accuracy": kept,
                 "gflops": 0.5, "speedup": speedup, "processor_modules": 4, "input_modules": 4}
                for seed, speedup in enumerate(speedups)]
        return {"baseline": {"accuracy": full, "gflops": 1.0}, "rows": rows}

    first, second = results(0.9, 0.8, [1.8, 2.2]), results(1.0, 0.7, [2.0])
    # Another fraction of input modules, at the same fraction of processors: a row of its own.
    first["rows"].append({**first["rows"][0], "keep_input": 1.0, "input_modules": 8, "accuracy": 0.9, "speedup": 1.5})
    second["rows"].append({**second["rows"][0], "keep_input": 1.0, "input_modules": 8, "accuracy": 1.0})
    lines = table([first, second], ["random"]).splitlines()
    assert lines[2] == "| random | 4 | 8 | 95.00 % (90.0, 100.0) | +0.00 | 2.00× | 1.75× |"
    assert lines[3] == "| random | 4 | 4 | 75.00 % (80.0, 70.0) | -20.00 | 2.00× | 2.00× |"


def test_paired_times_times_each_function_warm_in_blocks_of_turns(monkeypatch):
    from benchmarks import common

    clock = [0.0]
    monkeypatch.setattr(common.time, "perf_counter", lambda: clock[0])
    calls = []

    def timed(name, seconds):
        def function():
            calls.append(name)
            # The first call after the other function is slow (cold); the warm calls of a block are not.
            clock[0] += seconds * (5 if len(calls) > 1 and calls[-2] != name else 1)
        return function

    full, dropped = timed("full", 0.4), timed("dropped", 0.1)
    full_seconds, seconds, speedup = common.paired_times(full, dropped, repeats=3, warmup=1, block=2)
    # A warm-up call of each, then per turn one untimed and two timed calls of each, full first.
    assert calls == ["full", "dropped"] + ["full"] * 3 + ["dropped"] * 3 + ["full"] * 3 + ["dropped"] * 3 + [
        "full"] * 3 + ["dropped"] * 3
    assert (full_seconds, seconds) == pytest.approx((0.4, 0.1))
    assert speedup == pytest.approx(4.0)
