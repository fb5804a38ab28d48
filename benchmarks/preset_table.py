"""Print the preset table of the README: each preset's main sizes and its parameter count.

    python -m benchmarks.preset_table
"""

import torch

from nac_hf import NACConfig, NACForClassification


def main() -> None:
    print("| preset | input | modules (input / processor / output) | hidden | layers | parameters |")
    print("|---|---|---|---|---|---|")
    for name in NACConfig.presets():
        config = NACConfig.from_preset(name)
        with torch.device("meta"):  # sizes only: no weights, no graph-prior fit
            count = sum(p.numel() for p in NACForClassification(config).parameters())
        size = f"{config.tokenizer_type} {config.image_size}×{config.image_size}, {config.num_labels} labels"
        modules = f"{config.num_input_modules} / {config.num_processor_modules} / {config.num_output_modules}"
        print(
            f"| `{name}` | {size} | {modules} | {config.hidden_size} | {config.num_hidden_layers} | "
            f"{count / 1e6:.3f} M |"
        )


if __name__ == "__main__":
    main()
