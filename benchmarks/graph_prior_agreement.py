"""How well the fitted signatures reproduce each graph prior: the edge agreement (fraction of processor pairs whose
"talks" / "does not talk" under the truncated kernel matches the prior graph) at each preset's size, and the time
the fit takes.

    python -m benchmarks.graph_prior_agreement
"""

import time

from nac_hf import NACConfig
from nac_hf.graph_priors import PRIOR_KINDS, edge_agreement, fit_signatures, graph_adjacency
from nac_hf.modeling_nac import CircuitGenerator


def main() -> None:
    presets = ["tiny", "small", "paper-tiny-imagenet"]
    print("| prior | " + " | ".join(f"`{name}`" for name in presets) + " |")
    print("|---|" + "---|" * len(presets))
    for kind in PRIOR_KINDS:
        cells = []
        for name in presets:
            config = NACConfig.from_preset(name, graph_prior=kind)
            # An 8-node Erdős–Rényi graph at p = 0.1 is often empty; use a denser one at the tiny size.
            if name == "tiny" and kind == "erdos-renyi":
                config.graph_edge_prob = 0.3
            graph = CircuitGenerator(config).prior_graph()
            adjacency = graph_adjacency(graph)
            start = time.perf_counter()
            signatures = fit_signatures(
                adjacency,
                config.signature_dim,
                config.kernel_truncation,
                steps=config.graph_fit_steps,
                lr=config.graph_fit_lr,
                seed=config.graph_seed,
            )
            seconds = time.perf_counter() - start
            agreement = edge_agreement(signatures, adjacency, config.kernel_truncation)
            cells.append(f"{agreement:.4f} ({seconds:.2f} s)")
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
