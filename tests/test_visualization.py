import math
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nac_hf import NACConfig, NACForClassification, NACModel
from nac_hf.modeling_nac import truncate
from nac_test_utils import tiny
from nac_hf.visualization import circuit_summary, draw_circuit


pytest.importorskip("matplotlib")
from matplotlib.collections import LineCollection, QuadMesh  # noqa: E402
from PIL import Image  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "visualize_circuit.py"


def independent_summary(model: NACModel) -> dict:
    """The summary's numbers counted pair by pair from the signatures: processors talk below the truncation, the
    output modules hear every sender (docs/architecture.md, "Signature kernel")."""
    config = model.config
    num_in, num_proc, num_out = config.num_input_modules, config.num_processor_modules, config.num_output_modules
    s = torch.nn.functional.normalize(model.generator.signatures.detach().double(), dim=-1)
    groups = ["input"] * num_in + ["processor"] * num_proc + ["output"] * num_out
    talks = {}
    for r in range(num_in, num_in + num_proc + num_out):  # receivers: processor and output modules
        for s_ in range(num_in + num_proc):  # senders: input and processor modules
            if r != s_:
                reads_out = r >= num_in + num_proc  # the read-out is not truncated
                talks[r, s_] = reads_out or 1.0 - float(s[r] @ s[s_]) < config.kernel_truncation
    edges = sum(talks.values())
    pairs = sum(
        talks[i, j] or talks[j, i] for i in range(num_in, num_in + num_proc) for j in range(i + 1, num_in + num_proc)
    )

    def count(receiver_group, sender_group):
        return sum(v for (r, s_), v in talks.items() if groups[r] == receiver_group and groups[s_] == sender_group)

    return {
        "input_modules": num_in,
        "processor_modules": num_proc,
        "output_modules": num_out,
        "kernels": 1 if config.share_kernel else config.num_hidden_layers + 1,
        "kernel_truncation": config.kernel_truncation,
        "edges": edges,
        "processor_edges": pairs,
        "processor_density": pairs / (num_proc * (num_proc - 1) / 2),
        "mean_in_degree": edges / (num_proc + num_out),
        "input_edges": count("processor", "input"),
        "output_edges": count("output", "processor"),
        "input_output_edges": count("output", "input"),
    }


def hand_placed(**overrides) -> NACModel:
    """2 input, 4 processor, 1 output module at chosen signatures. With ε = 0.9 a pair talks when cos > 0.1:
    p0–p1 and p2–p3 (cos 1/√2); i0 → p0 (cos 1), i0 → p1 (1/√2), i1 → p3 (1/√2). Everything else is orthogonal;
    the output module hears every sender all the same (the read-out is not truncated), most strongly i1 (cos 1)."""
    model = NACModel(tiny(num_input_modules=2, num_processor_modules=4, graph_prior="none", **overrides)).eval()
    e = torch.eye(model.config.signature_dim)
    signatures = torch.stack([e[0], e[3], e[0], e[0] + e[1], e[2], e[2] + e[3], e[3]])  # i0 i1 p0 p1 p2 p3 o0
    with torch.no_grad():
        model.generator.signatures.copy_(signatures)
    return model


def panels(fig):
    graph_ax, kernel_ax = fig.axes[:2]
    heat = next(c for c in kernel_ax.collections if isinstance(c, QuadMesh)).get_array()
    segments = [s for c in graph_ax.collections if isinstance(c, LineCollection) for s in c.get_segments()]
    return graph_ax, np.asarray(heat), segments


def assert_png(path: Path, dpi: int) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (round(14 * dpi), round(6.5 * dpi))
        gray = np.asarray(image.convert("L"), dtype=np.float64)
    assert gray.std() > 20, "the picture is (nearly) blank"
    assert (gray < 200).mean() > 0.03, "hardly anything is drawn"


def test_summary_matches_pairwise_count_for_each_model_class():
    torch.manual_seed(0)
    model = NACForClassification(tiny(num_output_modules=2, output_pooling="mean"))
    summary = circuit_summary(model)
    assert summary == circuit_summary(model.nac)
    expected = independent_summary(model.nac)
    assert summary.keys() == expected.keys()
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value), key
        assert type(summary[key]) in (int, float), key
    # Every directed pair is counted once: the groups add up to the whole circuit.
    assert summary["edges"] == (
        summary["input_edges"] + 2 * summary["processor_edges"] + summary["output_edges"]
        + summary["input_output_edges"]
    )
    assert 0 < summary["processor_edges"] < 28


def test_summary_of_hand_placed_signatures():
    model = hand_placed()
    assert circuit_summary(model) == {
        "input_modules": 2,
        "processor_modules": 4,
        "output_modules": 1,
        "kernels": 3,
        "kernel_truncation": 0.9,
        "edges": 13,  # 3 input→processor + 2 × 2 processor pairs + 4 processor→output + 2 input→output
        "processor_edges": 2,
        "processor_density": 2 / 6,
        "mean_in_degree": 13 / 5,
        "input_edges": 3,
        "output_edges": 4,
        "input_output_edges": 2,
    }
    # A tighter truncation (cos > 0.8) keeps only the aligned pair among the processors' senders: i0 → p0.
    model.config.kernel_truncation = 0.2
    summary = circuit_summary(model)
    assert (summary["edges"], summary["processor_edges"], summary["input_edges"]) == (7, 0, 1)
    assert (summary["output_edges"], summary["input_output_edges"], summary["kernel_truncation"]) == (4, 2, 0.2)


def test_conditional_signatures_use_the_base_circuit_and_pool_a_batch_axis():
    model = hand_placed(conditioning_dim=6, conditional_signatures=True)
    assert circuit_summary(model) == circuit_summary(hand_placed())
    # Per-example signatures, should circuit() give them: example b moves p0 onto p2 (it then talks with p2 and p3,
    # not with i0 and p1). A pair talks when it talks in some example; the heat map is the mean over the examples.
    a = model.generator.signatures.detach().clone()
    b = a.clone()
    b[2] = torch.eye(a.shape[1])[2]
    model.circuit = lambda: NACModel.circuit(model, torch.stack([a, b]))
    summary = circuit_summary(model)
    assert (summary["processor_edges"], summary["input_edges"], summary["edges"]) == (4, 3, 17)
    _, heat, _ = panels(draw_circuit(model, dpi=40))
    assert heat[0, 2 + 2] == pytest.approx(0.5)  # p0 ← p2: K = 1 in b, truncated in a
    assert heat[0, 0] == pytest.approx(0.5)  # p0 ← i0: K = 1 in a, truncated in b


def test_summary_rejects_other_models():
    with pytest.raises(TypeError, match="NACModel"):
        circuit_summary(torch.nn.Linear(2, 2))


def test_draw_shows_the_truncated_kernel_and_the_edges_that_talk(tmp_path):
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    model = hand_placed()
    path = tmp_path / "circuit.png"
    fig = draw_circuit(model, path, title="hand placed", dpi=60)
    assert_png(path, dpi=60)
    assert plt.get_fignums() == open_before, "draw_circuit left a pyplot figure open"
    assert fig._suptitle.get_text() == "hand placed"

    graph_ax, heat, segments = panels(fig)
    expected = model.connectivity().detach().mean(0).numpy()  # (P + O, I + P)
    np.testing.assert_allclose(heat, expected, rtol=1e-6)
    assert heat[1, 0] == pytest.approx(math.exp(-(1 - 1 / math.sqrt(2))))  # p1 ← i0 at τ = 1
    assert heat[0, 1] == 0.0  # p0 ← i1: truncated
    # One line per talking pair, a processor pair once: 3 + 2 + 4 + 2.
    assert len(segments) == 11
    assert len(graph_ax.texts) == 7  # a label per module at this size
    legend = [text.get_text() for text in graph_ax.get_legend().get_texts()]
    assert legend[:3] == ["input modules (2)", "processor modules (4)", "output modules (1)"]


def test_draw_without_path_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    draw_circuit(NACModel(tiny()), dpi=40)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", NACConfig.presets())
def test_draw_every_preset(name, tmp_path):
    torch.manual_seed(0)
    # The preset's modules, kernels and graph prior; narrow states, which the circuit does not depend on.
    narrow = dict(hidden_size=32, code_dim=16, intermediate_size=48, num_attention_heads=2, attention_head_dim=16)
    config = NACConfig.from_preset(name, num_output_modules=3, num_labels=3, **narrow)
    model = NACForClassification(config)
    fig = draw_circuit(model, tmp_path / "circuit.png", dpi=60)
    assert_png(tmp_path / "circuit.png", dpi=60)
    graph_ax, heat, segments = panels(fig)
    # A column for every input and processor module: the input modules' are 0 where they send to no one.
    kernels, talks = model.nac.circuit_of_all_senders()
    np.testing.assert_allclose(heat, truncate(kernels, talks).detach().mean(0).numpy(), rtol=1e-6)
    receivers = config.num_processor_modules + config.num_output_modules
    assert heat.shape == (receivers, config.num_input_modules + config.num_processor_modules)
    summary = circuit_summary(model)
    undirected = summary["edges"] - summary["processor_edges"]
    assert len(segments) == undirected
    many = summary["input_modules"] + summary["processor_modules"] + summary["output_modules"] > 48
    assert len(graph_ax.texts) == (0 if many else sum(heat.shape) - config.num_processor_modules)


def test_script_writes_the_png_next_to_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = NACForClassification(tiny())
    model.save_pretrained(tmp_path / "ckpt")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--checkpoint", str(tmp_path / "ckpt"), "--title", "tiny"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    path = tmp_path / "ckpt" / "circuit.png"
    assert f"wrote {path}" in result.stdout
    assert f"edges: {circuit_summary(model)['edges']}" in result.stdout
    assert_png(path, dpi=150)


def test_script_errors_name_the_problem(tmp_path, monkeypatch, capsys):
    script = runpy.run_path(str(SCRIPT), run_name="visualize_circuit")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    for argv, message in [
        (["--checkpoint", str(tmp_path / "missing")], "no checkpoint folder at"),
        (["--checkpoint", str(tmp_path / "bert")], "expected a NAC configuration"),
    ]:
        monkeypatch.setattr(sys, "argv", ["visualize_circuit.py", *argv])
        with pytest.raises(SystemExit) as exit_info:
            script["main"]()
        assert message in str(exit_info.value.code)


def test_import_error_names_the_package_when_matplotlib_is_missing():
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from nac_hf import NACConfig, NACModel\n"
        "from nac_hf.visualization import circuit_summary, draw_circuit\n"
        "model = NACModel(NACConfig.from_preset('tiny'))\n"
        "print('edges', circuit_summary(model)['edges'])\n"
        "try:\n"
        "    draw_circuit(model)\n"
        "except ImportError as error:\n"
        "    print('ImportError:', error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "edges " in result.stdout  # the summary needs no matplotlib
    assert 'ImportError: drawing a NAC circuit needs matplotlib; install it with: pip install matplotlib' in (
        result.stdout
    )
