"""A NAC classifier in float32 and with int8 dynamic quantisation, side by side in one run.

    python -m benchmarks.int8 outputs/nac-digits --output int8.json [--dataset_name ... as in train.py]

Two int8 models: `int8_all` quantises every nn.Linear; `int8_modfc` only the shared weights of the ModFC layers
(`*.linear`: the projections that act on every token and module), keeping the small code projections (`code_proj`,
whose output is layer-normalised into the modulation) and the seeder in float32. Evaluates all three on the
checkpoint's evaluation data (the held-out digits when no data is named) and reports top-1 of each, the agreement
of the int8 models' top-1 predictions with float32's, the size of their weights and the median CPU latency of the
forward pass at batch 1 and at the evaluation batch size (after warm-up, in one process).
"""

import argparse
import copy
import io
import json
import sys

import torch
from torch import nn
from torch.ao.quantization import default_dynamic_qconfig
from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification, HfArgumentParser

import nac_hf  # noqa: F401  (registers NAC with the Auto classes)
from nac_hf.data import DataArguments

from .common import load_evaluation_set, median_seconds, predict, take


def weight_bytes(model: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def quantize(model: nn.Module, spec) -> nn.Module:
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), spec, dtype=torch.qint8).eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--output", default=None, help="Write the figures as JSON here.")
    parser.add_argument("--batch_size", type=int, default=256)
    args, rest = parser.parse_known_args()
    (data_args,) = HfArgumentParser(DataArguments).parse_args_into_dataclasses(rest)
    torch.manual_seed(0)

    evaluation = load_evaluation_set(args.checkpoint, data_args, args.batch_size)
    auto = AutoModelForSequenceClassification if "input_ids" in evaluation.batches[0] else AutoModelForImageClassification
    full = auto.from_pretrained(args.checkpoint).eval()
    modfc = {name for name, module in full.named_modules() if isinstance(module, nn.Linear) and name.endswith(".linear")}
    models = {
        "fp32": full,
        "int8_all": quantize(full, {nn.Linear}),
        "int8_modfc": quantize(full, {name: default_dynamic_qconfig for name in modfc}),
    }

    predictions = {name: predict(model, evaluation).argmax(-1) for name, model in models.items()}
    results = {"checkpoint": args.checkpoint, "data": evaluation.source, "examples": len(evaluation.labels)}
    for name, model in models.items():
        results[name] = {
            "top1_accuracy": (predictions[name] == evaluation.labels).float().mean().item(),
            "top1_agreement_with_fp32": (predictions[name] == predictions["fp32"]).float().mean().item(),
            "weight_bytes": weight_bytes(model),
        }
    for batch_size in (1, args.batch_size):
        inputs = take(evaluation.batches[0], batch_size)
        for name, model in models.items():
            results[name][f"latency_s_batch_{batch_size}"] = median_seconds(model, inputs)
    results["torch_threads"] = torch.get_num_threads()

    print(json.dumps(results, indent=2))
    for name in ("int8_all", "int8_modfc"):
        entry = results[name]
        loss = 100 * (results["fp32"]["top1_accuracy"] - entry["top1_accuracy"])
        print(f"{name} vs fp32: top-1 agreement {100 * entry['top1_agreement_with_fp32']:.2f} %, top-1 loss "
              f"{loss:.2f} points, weights {results['fp32']['weight_bytes'] / entry['weight_bytes']:.2f}x smaller, "
              f"latency x{entry[f'latency_s_batch_{args.batch_size}'] / results['fp32'][f'latency_s_batch_{args.batch_size}']:.2f} "
              f"at batch {args.batch_size}")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
