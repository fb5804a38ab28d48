"""python -m benchmarks.graph_prior_agreement [--presets tiny,small,paper-tiny-imagenet]

How well the fitted signatures reproduce each graph prior: the edge agreement (fraction of processor pairs whose
"talks" / "does not talk" under the truncated kernel matches the prior graph) at each preset's size, and the time
the fit takes.
"""

import time
from dataclasses import dataclass, field

from nac_hf import NACConfig
from nac_hf.graph_priors import PRIOR_KINDS, edge_agreement, fit_signatures, graph_adjacency
from nac_hf.modeling_nac import CircuitGenerator

from .common import argument_parser


@dataclass
class AgreementArguments:
    presets: str = field(default="tiny,small,paper-tiny-imagenet", metadata={"help": "Presets, comma-separated."})


def agreement(preset: str, kind: str) -> str:
    """The edge agreement of `kind`'s fitted signatures at `preset`'s size, and the fit's time, as a table cell."""
    config = NACConfig.from_preset(preset, graph_prior=kind)
    # An 8-node Erdős–Rényi graph at p = 0.1 is often empty; use a denser one at the tiny size.
    if preset == "tiny" and kind == "erdos-renyi":
        config.graph_edge_prob = 0.3
    adjacency = graph_adjacency(CircuitGenerator(config).prior_graph())
    start = time.perf_counter()
    signatures = fit_signatures(adjacency, config.signature_dim, config.kernel_truncation,
                                steps=config.graph_fit_steps, lr=config.graph_fit_lr, seed=config.graph_seed)
    seconds = time.perf_counter() - start
    return f"{edge_agreement(signatures, adjacency, config.kernel_truncation):.4f} ({seconds:.2f} s)"


def main(argv: list[str] | None = None) -> None:
    (args,) = argument_parser(__doc__, AgreementArguments).parse_args_into_dataclasses(argv)
    presets = args.presets.split(",")
    print("| prior | " + " | ".join(f"`{name}`" for name in presets) + " |")
    print("|---|" + "---|" * len(presets))
    for kind in PRIOR_KINDS:
        print(f"| {kind} | " + " | ".join(agreement(name, kind) for name in presets) + " |")


if __name__ == "__main__":
    main()
