"""python -m benchmarks.int8 --checkpoint outputs/nac-digits [--output int8.json] [--batch_size 256]
    [--dataset_name ... as in train.py]

A NAC classifier in float32 and with int8 dynamic quantisation, side by side in one run.

Two int8 models: `int8_all` quantises every nn.Linear; `int8_modfc` only the shared weights of the ModFC layers
(`*.linear`: the projections that act on every token and module), keeping the small code projections (`code_proj`,
whose output is layer-normalised into the modulation) and the seeder in float32. Evaluates all three on the
checkpoint's evaluation data (the held-out digits when no data is named) and reports top-1 of each, the agreement
of the int8 models' top-1 predictions with float32's, the size of their weights and the median CPU latency of the
forward pass at batch 1 and at the evaluation batch size (after warm-up, in one process).
"""

import copy
import io
import json
import sys
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.ao.quantization import default_dynamic_qconfig

from nac_hf.data import DataArguments
from nac_hf.evaluation import load_for_evaluation, predict

from .common import argument_parser, forward, median_time, take, top1, write_json


@dataclass
class Int8Arguments:
    checkpoint: str = field(metadata={"help": "A trained NAC classifier: a folder or a Hub id."})
    output: str | None = field(default=None, metadata={"help": "Write the figures as JSON here."})
    batch_size: int = field(default=256, metadata={"help": "Evaluation batch size; the larger timed batch."})


def weight_bytes(model: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def quantize(model: nn.Module, spec) -> nn.Module:
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8).eval()


def compare(models: dict, evaluation, batch_size: int) -> dict:
    """Top-1, top-1 agreement with `models["fp32"]`, weight size and latency at batch 1 and `batch_size` of each."""
    predictions = {name: predict(model, evaluation) for name, model in models.items()}
    results = {}
    for name, model in models.items():
        results[name] = {
            "top1_accuracy": top1(predictions[name], evaluation.labels),
            "top1_agreement_with_fp32": top1(predictions[name], predictions["fp32"].argmax(-1)),
            "weight_bytes": weight_bytes(model),
        }
    for size in (1, batch_size):
        inputs = take(evaluation.batches[0], size)
        for name, model in models.items():
            results[name][f"latency_s_batch_{size}"] = median_time(forward(model, inputs), repeats=7, warmup=2)
    return results


def main(argv: list[str] | None = None) -> int:
    args, data_args = argument_parser(__doc__, Int8Arguments, DataArguments).parse_args_into_dataclasses(argv)
    torch.manual_seed(0)
    full, evaluation = load_for_evaluation(args.checkpoint, data_args, args.batch_size)
    modfc = {name for name, module in full.named_modules() if isinstance(module, nn.Linear) and name.endswith(".linear")}
    models = {
        "fp32": full,
        "int8_all": quantize(full, {nn.Linear}),
        "int8_modfc": quantize(full, {name: default_dynamic_qconfig for name in modfc}),
    }
    results = {"checkpoint": args.checkpoint, "data": evaluation.source, "examples": len(evaluation.labels),
               **compare(models, evaluation, args.batch_size), "torch_threads": torch.get_num_threads()}
    print(json.dumps(results, indent=2))
    latency = f"latency_s_batch_{args.batch_size}"
    for name in ("int8_all", "int8_modfc"):
        entry, fp32 = results[name], results["fp32"]
        print(f"{name} vs fp32: top-1 agreement {100 * entry['top1_agreement_with_fp32']:.2f} %, top-1 loss "
              f"{100 * (fp32['top1_accuracy'] - entry['top1_accuracy']):.2f} points, weights "
              f"{fp32['weight_bytes'] / entry['weight_bytes']:.2f}x smaller, latency "
              f"x{entry[latency] / fp32[latency]:.2f} at batch {args.batch_size}")
    if args.output:
        write_json(args.output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
