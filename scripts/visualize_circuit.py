"""Draw the learned circuit of a NAC checkpoint as a PNG: the module graph and the signature kernel as a heat map.

    python scripts/visualize_circuit.py --checkpoint outputs/nac-digits
    python scripts/visualize_circuit.py --checkpoint outputs/nac-digits --output digits-circuit.png --title "digits NAC"

--checkpoint is a folder written by save_pretrained (a NACModel or a NACForClassification) or a Hub model id. The PNG
goes to --output, by default CHECKPOINT/circuit.png for a folder and ./circuit.png for a Hub id. Prints where it went
and the circuit's numbers (nac_hf.visualization.circuit_summary). Needs matplotlib (the `viz` extra).
"""

import os
import sys
from dataclasses import dataclass, field

import transformers
from transformers import HfArgumentParser

from nac_hf import NACModel
from nac_hf.visualization import circuit_summary, draw_circuit


# Without these the picture would show freshly initialised values, not the checkpoint's circuit.
CIRCUIT_WEIGHTS = ("generator.signatures", "kernels.")


def load_nac(checkpoint: str) -> NACModel:
    """The NACModel of a checkpoint folder or Hub id; exits with a readable message when there is none."""
    looks_local = os.path.isabs(checkpoint) or checkpoint.startswith((".", "~")) or checkpoint.count("/") > 1
    if looks_local and not os.path.isdir(os.path.expanduser(checkpoint)):
        sys.exit(f"error: no checkpoint folder at {checkpoint!r}")
    # The head of a classifier checkpoint is reported as unexpected on every load: keep that report quiet.
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        model, info = NACModel.from_pretrained(os.path.expanduser(checkpoint), output_loading_info=True)
    except (OSError, ValueError) as error:
        local = os.path.isdir(os.path.expanduser(checkpoint))
        where = "" if local else " (no local folder of that name; tried the Hub)"
        sys.exit(f"error: could not load a NAC from {checkpoint!r}{where}: {error}")
    missing = [key for key in info["missing_keys"] if key.startswith(CIRCUIT_WEIGHTS)]
    if missing:
        sys.exit(
            f"error: the checkpoint at {checkpoint!r} has no weights for {sorted(missing)}; it holds no NAC circuit"
        )
    return model.eval()


@dataclass
class CircuitArguments:
    checkpoint: str = field(metadata={"help": "Checkpoint folder (save_pretrained) or Hub model id."})
    output: str | None = field(
        default=None, metadata={"help": "PNG to write (default: CHECKPOINT/circuit.png, or ./circuit.png for a Hub id)."}
    )
    title: str | None = field(default=None, metadata={"help": "Figure title (default: the circuit's main numbers)."})


def main() -> None:
    (args,) = HfArgumentParser(CircuitArguments, description=__doc__.split("\n\n")[0]).parse_args_into_dataclasses()
    model = load_nac(args.checkpoint)
    output = args.output
    if output is None:
        folder = os.path.expanduser(args.checkpoint)
        output = os.path.join(folder, "circuit.png") if os.path.isdir(folder) else "circuit.png"
    try:
        draw_circuit(model, output, title=args.title)
    except ImportError as error:
        sys.exit(f"error: {error}")
    except OSError as error:
        sys.exit(f"error: could not write {output!r}: {error}")
    print(f"wrote {output}")
    for key, value in circuit_summary(model).items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
