"""python -m benchmarks.preset_table [--presets tiny,small]

Prints the preset table of the README: each preset's input, its module counts, hidden size and layers, and its
parameter count (counted on the meta device: no weights are made).
"""

from dataclasses import dataclass, field

import torch

from nac_hf import NACConfig, NACForClassification

from .common import argument_parser


@dataclass
class PresetTableArguments:
    presets: str | None = field(default=None, metadata={"help": "Presets to table, comma-separated (default: all)."})


def main(argv: list[str] | None = None) -> None:
    (args,) = argument_parser(__doc__, PresetTableArguments).parse_args_into_dataclasses(argv)
    print("| preset | input | modules (input / processor / output) | hidden | layers | parameters |")
    print("|---|---|---|---|---|---|")
    for name in args.presets.split(",") if args.presets else NACConfig.presets():
        config = NACConfig.from_preset(name)
        with torch.device("meta"):  # sizes only: no weights, no graph-prior fit
            count = sum(p.numel() for p in NACForClassification(config).parameters())
        reads = {"image": f"{config.tokenizer_type} {config.image_size}×{config.image_size}",
                 "text": f"bytes, {config.max_position_embeddings} positions", "points": "point clouds"}
        size = f"{reads[config.modality]}, {config.num_labels} labels"
        modules = f"{config.num_input_modules} / {config.num_processor_modules} / {config.num_output_modules}"
        print(
            f"| `{name}` | {size} | {modules} | {config.hidden_size} | {config.num_hidden_layers} | "
            f"{count / 1e6:.3f} M |"
        )


if __name__ == "__main__":
    main()
