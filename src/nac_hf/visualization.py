"""Pictures of a NAC's learned circuit: which modules talk (docs/architecture.md, "Signature kernel") and how
strongly.

`circuit_summary` counts the graph in plain Python numbers and needs nothing but torch; `draw_circuit` draws it with
matplotlib (the `viz` extra) and networkx.

Both read the circuit of the model's own signatures (`NACModel.circuit()` without arguments). With
`config.conditional_signatures` these are the base signatures, before any example's conditioning shifts them. Should
the circuit carry a batch axis all the same (per-example signatures), the examples are pooled: a pair talks when it
talks in at least one example, and the kernel shown is the mean over examples of the truncated kernel.
"""

from __future__ import annotations

import math

import torch

from .modeling_nac import NACModel


MATPLOTLIB_MISSING = 'drawing a NAC circuit needs matplotlib; install it with: pip install matplotlib'
GROUP_COLORS = {"input": "#1f77b4", "processor": "#ff7f0e", "output": "#2ca02c"}
# Above this many modules the graph gets small nodes, thin edges and no labels.
MAX_LABELLED_MODULES = 48


def _nac(model) -> NACModel:
    """The bare NACModel of a NACModel or of a task model that holds one (`NACForClassification.nac`)."""
    nac = getattr(model, "base_model", model)
    if not isinstance(nac, NACModel):
        raise TypeError(
            f"expected a NACModel or a model that holds one (e.g. NACForClassification), got {type(model).__name__}"
        )
    return nac


@torch.no_grad()
def _circuit(nac: NACModel) -> tuple[torch.Tensor, torch.Tensor]:
    """The truncated kernel averaged over kernels `(P + O, I + P)` and where modules talk `(P + O, I + P)`."""
    kernels, talks = nac.circuit_of_all_senders()  # (K, [B,] P + O, I + P), ([B,] P + O, I + P)
    kernel = (kernels * talks).float().mean(0)
    if talks.dim() == 3:  # per-example signatures: pool the examples
        kernel, talks = kernel.mean(0), talks.any(0)
    return kernel.cpu(), talks.cpu()


def _not_self(config) -> torch.Tensor:
    """`(P + O, I + P)`: False where receiver and sender are the same processor module."""
    num_in, num_proc = config.num_input_modules, config.num_processor_modules
    mask = torch.ones(num_proc + config.num_output_modules, num_in + num_proc, dtype=torch.bool)
    index = torch.arange(num_proc)
    mask[index, num_in + index] = False
    return mask


def circuit_summary(model) -> dict:
    """Numbers that describe a NAC's circuit, as plain Python ints and floats.

    `model` is a `NACModel` or a model holding one (`NACForClassification`). Receivers are the processor and output
    modules, senders the input and processor modules (`NACModel.circuit`). A sender *talks* to a processor when their
    signature distance `1 − cos` is below `config.kernel_truncation` (pairs at `d ≥ ε` never talk); the read-out is
    not truncated, so the output modules hear every sender (docs/architecture.md, "Signature kernel"). A processor
    module is always at distance 0 from itself; these self-pairs are left out of every count.

    Keys:
        input_modules, processor_modules, output_modules: I, P, O.
        kernels: number of signature kernels (one per propagator layer plus the read-out's, or one if
            `config.share_kernel`); they share the signatures, hence who talks, and differ in bandwidth only.
        kernel_truncation: ε.
        edges: directed sender → receiver pairs that talk, over the whole `(P + O) × (I + P)` circuit.
            `edges == input_edges + 2 * processor_edges + output_edges + input_output_edges`.
        processor_edges: unordered processor pairs {i, j}, i ≠ j, that talk (the distance is symmetric; a pair counts
            if either direction is below ε, which differs from both only by float rounding).
        processor_density: processor_edges / (P (P − 1) / 2), 0.0 with fewer than two processors.
        mean_in_degree: edges / (P + O), the mean number of senders per receiver.
        input_edges: input → processor pairs that talk.
        output_edges: processor → output pairs that talk.
        input_output_edges: input → output pairs that talk (the read-out also reads the input modules).
    """
    nac = _nac(model)
    config = nac.config
    num_in, num_proc, num_out = config.num_input_modules, config.num_processor_modules, config.num_output_modules
    _, talks = _circuit(nac)
    processors = talks[:num_proc, num_in:]  # (P, P), receiver × sender
    processor_pairs = torch.triu(processors | processors.T, diagonal=1)
    processor_edges = int(processor_pairs.sum())
    edges = int((talks & _not_self(config)).sum())
    possible = num_proc * (num_proc - 1) // 2
    return {
        "input_modules": num_in,
        "processor_modules": num_proc,
        "output_modules": num_out,
        "kernels": len(nac.kernels),
        "kernel_truncation": float(config.kernel_truncation),
        "edges": edges,
        "processor_edges": processor_edges,
        "processor_density": processor_edges / possible if possible else 0.0,
        "mean_in_degree": edges / (num_proc + num_out),
        "input_edges": int(talks[:num_proc, :num_in].sum()),
        "output_edges": int(talks[num_proc:, num_in:].sum()),
        "input_output_edges": int(talks[num_proc:, :num_in].sum()),
    }


def _module_graph(config, kernel: torch.Tensor, talks: torch.Tensor):
    """The circuit as an undirected networkx graph: nodes `("input" | "processor" | "output", index)` with a `group`,
    edges where modules talk (self-pairs left out) with the mean truncated kernel as `weight`."""
    import networkx as nx

    num_in, num_proc = config.num_input_modules, config.num_processor_modules
    senders = [("input", i) for i in range(num_in)] + [("processor", p) for p in range(num_proc)]
    receivers = [("processor", p) for p in range(num_proc)] + [("output", o) for o in range(config.num_output_modules)]
    graph = nx.Graph()
    for group, index in senders + receivers[num_proc:]:
        graph.add_node((group, index), group=group)
    for r, s in (talks & _not_self(config)).nonzero().tolist():
        # A processor pair comes twice, with the same kernel (the distance is symmetric): one edge.
        graph.add_edge(senders[s], receivers[r], weight=float(kernel[r, s]))
    return graph


def _layout(graph, seed: int = 0) -> dict:
    """Input modules in a column on the left, output modules in a column on the right, processor modules in between
    by a kernel-weighted spring layout. The columns are ordered by where their processor neighbours sit, so that
    edges cross less."""
    import networkx as nx
    import numpy as np

    def members(group):
        return [node for node, data in graph.nodes(data=True) if data["group"] == group]

    processors = members("processor")
    spring = nx.spring_layout(graph.subgraph(processors), weight="weight", seed=seed) if processors else {}
    position = {}
    if spring:
        xy = np.array([spring[node] for node in processors])  # (P, 2)
        low, high = xy.min(0), xy.max(0)
        xy = (xy - low) / np.maximum(high - low, 1e-9)
        for node, (x, y) in zip(processors, xy.tolist()):
            position[node] = (0.18 + 0.64 * x, 0.02 + 0.96 * y)

    def column(nodes, x):
        def height(node):
            neighbours = [position[n][1] for n in graph.neighbors(node) if n in position]
            return sum(neighbours) / len(neighbours) if neighbours else 0.5

        ordered = sorted(nodes, key=lambda node: (height(node), node[1]))
        for rank, node in enumerate(ordered):
            position[node] = (x, 0.5 if len(nodes) == 1 else 0.02 + 0.96 * rank / (len(nodes) - 1))

    column(members("input"), 0.0)
    column(members("output"), 1.0)
    return position


def _draw_graph(ax, config, kernel: torch.Tensor, talks: torch.Tensor) -> None:
    import networkx as nx
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D

    graph = _module_graph(config, kernel, talks)
    position = _layout(graph)
    num_modules = graph.number_of_nodes()
    labelled = num_modules <= MAX_LABELLED_MODULES

    edges = list(graph.edges(data="weight"))
    if edges:
        weights = torch.tensor([weight for _, _, weight in edges])
        low, high = float(weights.min()), float(weights.max())
        strength = (weights - low) / (high - low) if high > low else torch.ones_like(weights)
        # Many edges: fainter and thinner, so that the picture is not a solid block of ink.
        top_alpha = min(0.85, 25.0 / math.sqrt(len(edges)))
        top_width = 1.8 if labelled else 0.6
        alphas = (0.15 + 0.85 * strength) * top_alpha
        widths = (0.25 + 0.75 * strength) * top_width
        colors = []
        for (u, v, _), alpha in zip(edges, alphas.tolist()):
            sender = u if u[0] == "input" or v[0] == "output" else v
            colors.append(to_rgba(GROUP_COLORS[graph.nodes[sender]["group"]], alpha))
        nx.draw_networkx_edges(
            graph, position, edgelist=[(u, v) for u, v, _ in edges], edge_color=colors, width=widths.tolist(), ax=ax
        )

    for group, color in GROUP_COLORS.items():
        nodes = [node for node, data in graph.nodes(data=True) if data["group"] == group]
        # Unlabelled: small nodes, but a group of few (the output modules) stays easy to find.
        node_size = 260 if labelled else max(12.0, 2400.0 / num_modules, 80.0 if len(nodes) <= 8 else 0.0)
        nx.draw_networkx_nodes(
            graph, position, nodelist=nodes, node_color=color, node_size=node_size, edgecolors="white",
            linewidths=0.8 if labelled else 0.3, ax=ax,
        )
    if labelled:
        nx.draw_networkx_labels(graph, position, labels={node: str(node[1]) for node in graph}, font_size=7, ax=ax)

    counts = {"input": config.num_input_modules, "processor": config.num_processor_modules,
              "output": config.num_output_modules}
    handles = [
        Line2D([], [], marker="o", linestyle="", markersize=8, markerfacecolor=color, markeredgecolor="white",
               label=f"{group} modules ({counts[group]})")
        for group, color in GROUP_COLORS.items()
    ]
    handles.append(Line2D([], [], color="0.35", linewidth=1.5, label="talk (opacity, width ∝ kernel)"))
    # Below the axes, never over the nodes.
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=2, frameon=False, fontsize=8)
    ax.set_title(
        f"module graph: edges where modules talk (d < ε = {config.kernel_truncation:g})\n"
        "inputs left, outputs right; edge colour = sender's group",
        fontsize=9,
    )
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.04, 1.04)
    ax.set_axis_off()


def _draw_kernel(fig, ax, config, kernel: torch.Tensor, num_kernels: int) -> None:
    import numpy as np

    num_in, num_proc, num_out = config.num_input_modules, config.num_processor_modules, config.num_output_modules
    # A row per receiver, but the output rows together at least 6 % of the processor rows' height: one output module
    # under 256 processors would otherwise be a line two pixels high.
    out_height = max(1.0, 0.06 * num_proc / num_out)
    row_edges = np.concatenate([np.arange(num_proc + 1.0), num_proc + out_height * np.arange(1.0, num_out + 1)])
    column_edges = np.arange(num_in + num_proc + 1.0)
    # White at 0, so truncated pairs read as empty; talking pairs have K ≥ exp(−ε/τ).
    mesh = ax.pcolormesh(column_edges, row_edges, kernel.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xlim(0, column_edges[-1])
    ax.set_ylim(row_edges[-1], 0)  # receiver 0 at the top, as in a matrix
    ax.axhline(num_proc, color="0.2", linewidth=1.0)
    ax.axvline(num_in, color="0.2", linewidth=1.0)

    def name(group, count):
        return f"{group}\n({count - 1 if count == 1 else f'0–{count - 1}'})"

    ax.set_xticks([num_in / 2, num_in + num_proc / 2], [name("input", num_in), name("processor", num_proc)])
    ax.set_yticks(
        [num_proc / 2, (row_edges[num_proc] + row_edges[-1]) / 2],
        [name("processor", num_proc), name("output", num_out)],
        rotation=90,
        va="center",
    )
    ax.tick_params(length=0, labelsize=8)
    ax.set_xlabel("senders", fontsize=9)
    ax.set_ylabel("receivers", fontsize=9)
    if num_kernels == 1:
        which = "the one shared kernel"
    else:
        which = f"mean over {num_kernels} kernels ({num_kernels - 1} propagator layers + read-out)"
    enlarged = ", output rows enlarged" if out_height > 1 else ""
    ax.set_title(f"kernel K = exp(−d/τ), {which}\n0 (white) where truncated, d ≥ ε{enlarged}", fontsize=9)
    colorbar = fig.colorbar(mesh, ax=ax, fraction=0.05, pad=0.03)
    colorbar.set_label("K", fontsize=9)
    colorbar.ax.tick_params(labelsize=8)


def draw_circuit(model, path=None, *, title: str | None = None, dpi: int = 150):
    """Draw a NAC's circuit: the module graph (left) and the kernel as a receivers × senders heat map (right).

    `model` is a `NACModel` or a model holding one (`NACForClassification`). In the graph the input modules stand in
    a column on the left and the output modules on the right, the processor modules in between by a kernel-weighted
    spring layout with a fixed seed (the same model gives the same picture); an edge joins two modules that talk,
    with opacity and width growing with the kernel averaged over the model's kernels. The heat map shows that mean
    truncated kernel, 0 where modules do not talk, with the module groups marked.

    Returns a `matplotlib.figure.Figure` on its own Agg canvas, made without pyplot: no pyplot figure is opened, so
    there is nothing to close and no global state changes. Writes a PNG at `path` when given. Needs matplotlib:
    `pip install matplotlib`.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(MATPLOTLIB_MISSING) from error

    nac = _nac(model)
    config = nac.config
    kernel, talks = _circuit(nac)
    summary = circuit_summary(nac)

    fig = Figure(figsize=(14, 6.5), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    graph_ax, kernel_ax = fig.subplots(1, 2, width_ratios=[1.15, 1])
    _draw_graph(graph_ax, config, kernel, talks)
    _draw_kernel(fig, kernel_ax, config, kernel, summary["kernels"])
    if title is None:
        num_out = summary["output_modules"]
        title = (
            f"NAC circuit: {summary['input_modules']} input, {summary['processor_modules']} processor, "
            f"{num_out} output module{'' if num_out == 1 else 's'}; {summary['edges']} edges, processor density "
            f"{summary['processor_density']:.2f}, mean in-degree {summary['mean_in_degree']:.1f}"
        )
    fig.suptitle(title, fontsize=11)
    if path is not None:
        fig.savefig(path, format="png", dpi=dpi)
    return fig


__all__ = ["circuit_summary", "draw_circuit"]
