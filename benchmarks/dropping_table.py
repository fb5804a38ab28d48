"""The module-dropping table of several trained models, as Markdown: for each order and kept fractions, top-1 (the
mean over the models, and each model's), its loss against each model's full top-1, the FLOP ratio and the measured
speed-up (means over the models, and over the seeds of `random`).

    python -m benchmarks.dropping_table DIR_OR_JSON [DIR_OR_JSON ...] [--orders kernel_mass,random]

Each argument is a module_dropping.json of benchmarks.module_dropping, or a folder holding one.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path


def load(path: str) -> dict:
    path = Path(path)
    return json.loads((path / "module_dropping.json" if path.is_dir() else path).read_text())


def table(results: list[dict], orders: list[str]) -> str:
    lines = ["| order | kept processors | input modules | top-1 (mean; each model) | loss (points) | FLOP ratio | "
             "measured speed-up |", "|---|---|---|---|---|---|---|"]
    for order in orders:
        keeps = {(row["keep_input"], row["keep_processor"]) for row in results[0]["rows"] if row["order"] == order}
        for keep in sorted(keeps, reverse=True):
            accuracy, loss, flops, speedup, counts = [], [], [], [], set()
            for result in results:
                rows = [r for r in result["rows"] if r["order"] == order
                        and (r["keep_input"], r["keep_processor"]) == keep]
                mean = statistics.mean(r["accuracy"] for r in rows)
                accuracy.append(100 * mean)
                loss.append(100 * (result["baseline"]["accuracy"] - mean))
                flops.append(result["baseline"]["gflops"] / rows[0]["gflops"])
                speedup.append(statistics.mean(r["speedup"] for r in rows))
                counts.add((rows[0]["processor_modules"], rows[0]["input_modules"]))
            (processors, inputs), = counts
            each = ", ".join(f"{a:.1f}" for a in accuracy)
            lines.append(f"| {order} | {processors} | {inputs} | {statistics.mean(accuracy):.2f} % ({each}) | "
                         f"{0.0 - statistics.mean(loss) + 0.0:+.2f} | {statistics.mean(flops):.2f}× | "
                         f"{statistics.mean(speedup):.2f}× |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+")
    parser.add_argument(
        "--orders", default=None, help="Orders to table, comma-separated (default: every order measured)."
    )
    args = parser.parse_args()
    results = [load(path) for path in args.results]
    measured = list(dict.fromkeys(row["order"] for result in results for row in result["rows"]))
    print(table(results, args.orders.split(",") if args.orders else measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())
