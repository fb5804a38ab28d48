"""Export a saved NAC classifier to ONNX, with a dynamic batch (and a dynamic length for bytes and points).

    python scripts/export_onnx.py --checkpoint outputs/nac-digits --output model.onnx [--opset 18] [--check]

--checkpoint is a folder (or Hub id) of a NAC classifier. The graph maps the model's inputs (`pixel_values`;
`input_ids` and `attention_mask`; or `points`) to `logits`. With --check, onnxruntime runs the file on fresh inputs of
another batch size (and length) than the export's, and the script fails (exit 1) if its logits differ from PyTorch's
by more than 1e-4. Needs the onnx extra: pip install -e ".[onnx]".
"""

import sys
from dataclasses import dataclass, field

from transformers import AutoConfig, HfArgumentParser

import nac_hf  # noqa: F401  (registers NAC with the Auto classes)
from nac_hf import NACConfig, NACForClassification
from nac_hf.modalities import modality_of
from nac_hf.onnx_export import export_onnx, onnx_max_difference


TOLERANCE = 1e-4


@dataclass
class ExportArguments:
    checkpoint: str = field(metadata={"help": "Folder or Hub id of a NAC classifier."})
    output: str = field(metadata={"help": "Where to write the .onnx file."})
    opset: int | None = field(default=None, metadata={"help": "ONNX opset (default: the exporter's)."})
    check: bool = field(default=False, metadata={"help": "Compare onnxruntime with PyTorch on fresh inputs."})


def main() -> int:
    parser = HfArgumentParser(ExportArguments, description=__doc__)
    (args,) = parser.parse_args_into_dataclasses()
    try:
        config = AutoConfig.from_pretrained(args.checkpoint)
    except (OSError, ValueError) as error:
        parser.error(f"{args.checkpoint} is not a NAC checkpoint: {error}")
    if not isinstance(config, NACConfig):
        parser.error(f"{args.checkpoint} is not a NAC checkpoint: its config is a {config.model_type!r} config")
    model = NACForClassification.from_pretrained(args.checkpoint, config=config).eval()
    path = export_onnx(model, args.output, opset=args.opset)
    print(f"wrote {path} ({config.tokenizer_type} inputs, dynamic batch"
          f"{' and length' if modality_of(config).length_axis else ''})")
    if args.check:
        difference = onnx_max_difference(model, path)
        print(f"onnxruntime vs PyTorch on another batch size: max abs difference {difference:.2e}")
        if not difference <= TOLERANCE:
            print(f"the difference is above {TOLERANCE}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
