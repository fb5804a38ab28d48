"""A NAC classifier in float32 and with int8 dynamic quantisation of its Linear layers, side by side in one run.

    python scripts/benchmark_int8.py outputs/nac-digits --output int8.json [--dataset_name ... as in train.py]

Evaluates both on the checkpoint's evaluation data (the held-out digits when no data is named) and reports top-1 of
each, the agreement of their top-1 predictions, the size of their weights and the median CPU latency of the forward
pass at batch 1 and at the evaluation batch size (after warm-up, the two models timed alternately in one process).
"""

import argparse
import copy
import io
import json
import sys

import torch
from torch import nn
from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification, HfArgumentParser

import nac_hf  # noqa: F401  (registers NAC with the Auto classes)
from nac_hf.data import DataArguments
from nac_hf.evaluation import load_evaluation_set, median_seconds, predict, take


def weight_bytes(model: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


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
    int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(full), {nn.Linear}, dtype=torch.qint8).eval()

    predictions = {name: predict(model, evaluation).argmax(-1) for name, model in (("fp32", full), ("int8", int8))}
    results = {"checkpoint": args.checkpoint, "data": evaluation.source, "examples": len(evaluation.labels)}
    for name, model in (("fp32", full), ("int8", int8)):
        results[name] = {
            "top1_accuracy": (predictions[name] == evaluation.labels).float().mean().item(),
            "weight_bytes": weight_bytes(model),
        }
    results["top1_agreement"] = (predictions["fp32"] == predictions["int8"]).float().mean().item()
    for batch_size in (1, args.batch_size):
        inputs = take(evaluation.batches[0], batch_size)
        for name, model in (("fp32", full), ("int8", int8)):
            results[name][f"latency_s_batch_{batch_size}"] = median_seconds(model, inputs)
    results["torch_threads"] = torch.get_num_threads()

    print(json.dumps(results, indent=2))
    loss = 100 * (results["fp32"]["top1_accuracy"] - results["int8"]["top1_accuracy"])
    print(f"\nint8 vs fp32: top-1 agreement {100 * results['top1_agreement']:.2f} %, top-1 loss {loss:.2f} points, "
          f"weights {results['fp32']['weight_bytes'] / results['int8']['weight_bytes']:.2f}x smaller")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
