"""python -m benchmarks.results_page [--check]

Writes the results page (docs/results.md) and the README's results table from the measurements' json files, so
that no figure can drift from its source; with --check, writes nothing and fails if either differs from what the json
files give.

Each section reads the json files in docs/results/ that a command of benchmarks/ wrote, and says that command.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .common import argument_parser, mean_std


ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
PAGE = ROOT / "docs" / "results.md"
README = ROOT / "README.md"
# The README's table lies between these two lines.
TABLE_START = "<!-- results table: written by python -m benchmarks.results_page -->"
TABLE_END = "<!-- end of results table -->"

DROPPING_SEEDS = (42, 43, 44)
DROPPING_FILES = tuple(f"module-dropping-digits-seed{seed}.json" for seed in DROPPING_SEEDS)
DROPPING_COMMAND = ("python -m benchmarks.main_job --output_dir outputs/nac-digits-seedS -- --seed S; "
                    "python -m benchmarks.module_dropping --checkpoint outputs/nac-digits-seedS --output_dir DIR "
                    "--keep 1,0.5,0.25,0.1875,0.15625,0.125,0.09375,0.0625")


@dataclass
class PageArguments:
    check: bool = field(default=False, metadata={"help": "Fail if the page or the README's table is out of date."})


def read(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def link(name: str) -> str:
    return f"[{name}](results/{name})"


def percent(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"


def learning() -> tuple[str, dict]:
    data = read("learning-check-tiny.json")
    seeds = len(data["runs"])
    figure = (f"{100 * data['test_top1_mean']:.1f} ± {100 * data['test_top1_std']:.1f} % held-out top-1 over {seeds} "
              "seeds")
    command = (f"python -m benchmarks.learning_check --preset tiny --seeds {','.join(str(r['seed']) for r in data['runs'])} "
               "--output docs/results/learning-check-tiny.json")
    text = (f"The `tiny` preset trained from the paper's defaults for {data['steps']} steps on the digits: {figure} "
            f"({percent(data['train_top1_mean'])} on the training set). How each initialisation value was found: "
            "[initialisation-and-learning.md](initialisation-and-learning.md).")
    return section("Learning from the paper's defaults", text, command, ["learning-check-tiny.json"]), {
        "result": "learns from the paper's defaults (`tiny`, digits)", "figure": figure,
        "json": "learning-check-tiny.json", "command": command}


def main_job() -> tuple[str, dict]:
    files = [read(name) for name in DROPPING_FILES]
    accuracies = [data["baseline"]["accuracy"] for data in files]
    mean, std = mean_std(accuracies)
    figure = f"{100 * mean:.2f} ± {100 * std:.2f} % held-out top-1 ({', '.join(percent(a) for a in accuracies)})"
    command = "python -m benchmarks.main_job --output_dir outputs/nac-digits-seedS -- --seed S"
    text = (f"`accelerate launch scripts/train.py` (the `digits` preset) with seeds "
            f"{', '.join(map(str, DROPPING_SEEDS))}: {figure} on the {files[0]['examples']} held-out digits, read from "
            "the full model's row of each model's module-dropping measurement (the command trains the model; "
            "`benchmarks.module_dropping` writes the json).")
    return section("The main job", text, command, list(DROPPING_FILES)), {
        "result": "the main job (`digits`, 3 seeds)", "figure": figure, "json": DROPPING_FILES[0], "command": command}


def speed() -> tuple[str, dict]:
    name = "speed-paper-tiny-imagenet.json"
    data = read(name)
    command = (f"python -m benchmarks.speed --preset {data['preset']} --batch_size {data['batch_size']} "
               f"--output docs/results/{name}")
    rows = ["| model | params | GFLOP/example | eval forward | training step | step / eval | step / eval FLOPs | "
            "eval / GEMM bound | peak memory |", "|---|---|---|---|---|---|---|---|---|"]
    for model in [data, *data["baselines"]]:
        rows.append(f"| {model['model']} | {model['parameters'] / 1e6:.2f} M | {model['gflop_per_example']:.2f} | "
                    f"{model['eval_s']:.2f} s | {model['train_s']:.2f} s | {model['train_over_eval']:.2f} | "
                    f"{model['train_over_eval_flops']:.2f} | {model['eval_over_gemm_bound']:.2f} | "
                    f"{model['peak_rss_mb'] / 1024:.1f} GiB |")
    text = (f"Batch {data['batch_size']}, {data['dtype']}, {data['device']} with {data['threads']} threads, torch "
            f"{data['torch']}; each model in a process of its own, the eval forward, the training step (AdamW) and a "
            "GEMM timed in turns; the baselines are sized to the NAC's FLOPs. Compare ratios within this table, not "
            "times across machines. The write-up, with the bf16, compiled and other variants: "
            "[measurements.md](measurements.md#training-speed).\n\n" + "\n".join(rows))
    figure = (f"training step {data['train_over_eval']:.2f}× the eval forward (FLOPs: "
              f"{data['train_over_eval_flops']:.2f}×); eval forward {data['eval_over_gemm_bound']:.2f}× its GEMM bound")
    return section("Speed beside a ViT and a Perceiver", text, command, [name]), {
        "result": "speed, `paper-tiny-imagenet`, CPU", "figure": figure, "json": name, "command": command}


def int8() -> tuple[str, dict]:
    name = "int8-digits.json"
    data = read(name)
    fp32, quantised = data["fp32"], data["int8_all"]
    command = f"python -m benchmarks.int8 --checkpoint CHECKPOINT --output docs/results/{name}"
    figure = (f"weights {fp32['weight_bytes'] / quantised['weight_bytes']:.1f}× smaller, "
              f"{percent(quantised['top1_agreement_with_fp32'])} of predictions as in fp32, batch-256 latency "
              f"{quantised['latency_s_batch_256'] / fp32['latency_s_batch_256']:.2f}× fp32's")
    text = (f"`torch.ao.quantization.quantize_dynamic` on every `nn.Linear`, on {data['examples']} held-out digits, "
            f"{data['torch_threads']} threads: {figure}; top-1 {percent(fp32['top1_accuracy'])} in fp32, "
            f"{percent(quantised['top1_accuracy'])} in int8. Measured on a checkpoint of an earlier `digits` preset, not on "
            "the current preset's model.")
    return section("int8", text, command, [name]), {
        "result": "int8 dynamic quantisation (earlier `digits` preset)", "figure": figure, "json": name,
        "command": command}


def dropping_cells() -> dict[tuple[str, int], list[dict]]:
    """Per (order, processors kept): the rows of the three models (and of every seed of `random`)."""
    cells: dict[tuple[str, int], list[dict]] = {}
    for name in DROPPING_FILES:
        data = read(name)
        for row in data["rows"]:
            row = {**row, "loss": data["baseline"]["accuracy"] - row["accuracy"],
                   "flop_ratio": data["baseline"]["gflops"] / row["gflops"]}
            cells.setdefault((row["order"], row["processor_modules"]), []).append(row)
    return cells


def dropping_table(cells: dict, kept: list[int]) -> tuple[list[str], tuple | None]:
    """The table's rows, and the fastest `loss`-order count at which every model stays within 3 points."""
    rows = ["| processors kept | `loss`: top-1 | loss (points) | FLOP ratio | measured speed-up | `kernel_mass` | "
            "`random` | `out_degree` |", "|---|---|---|---|---|---|---|---|"]
    best = None
    for count in kept:
        loss = cells[("loss", count)]
        accuracy, points = mean_std(r["accuracy"] for r in loss)[0], 100 * mean_std(r["loss"] for r in loss)[0]
        speedup = mean_std(r["speedup"] for r in loss)[0]
        others = [percent(mean_std(r["accuracy"] for r in cells[(order, count)])[0])
                  for order in ("kernel_mass", "random", "out_degree")]
        rows.append(f"| {count} | {percent(accuracy)} | {-points:+.2f} | "
                    f"{mean_std(r['flop_ratio'] for r in loss)[0]:.2f}× | {speedup:.2f}× | " + " | ".join(others) + " |")
        per_model_worst = max(100 * r["loss"] for r in loss)
        if per_model_worst <= 3.0 and (best is None or speedup > best[1]):
            best = (count, speedup, per_model_worst)
    return rows, best


def module_dropping() -> tuple[str, None]:
    cells = dropping_cells()
    kept = sorted({count for _, count in cells}, reverse=True)
    rows, best = dropping_table(cells, kept)
    margins = [100 * (mean_std(r["accuracy"] for r in cells[("kernel_mass", c)])[0]
                      - mean_std(r["accuracy"] for r in cells[("random", c)])[0]) for c in kept if c <= kept[0] // 2]
    figure = (f"best speed-up with every model within 3 points: {best[1]:.2f}× ({best[0]} of {kept[0]} processors, "
              f"`loss` order, worst model −{best[2]:.2f} points)" if best else "no count keeps every model within 3 points")
    text = (f"Each of the three main-job models, its processors ranked by each order and dropped down to each count; "
            f"top-1 on the {read(DROPPING_FILES[0])['examples']} held-out digits, measured throughput at batch 256 timed in turns with the full model; "
            f"means over the models (and over the seeds of `random`). {figure}. `kernel_mass`, which needs no data, "
            f"beats `random` by {min(margins):.1f} to {max(margins):.1f} points at half the processors or fewer.\n\n"
            + "\n".join(rows) + "\n\n![Accuracy against measured speed-up](results/module-dropping-digits-seed42.png)")
    # The curves of every count; the operating point, chosen on validation, is the claims' `dropping` row.
    return section("Dropping modules", text, DROPPING_COMMAND, list(DROPPING_FILES)), None


def early_exit() -> tuple[str, None]:
    name = "early-exit-digits-seed42.json"
    data = read(name)
    base = data["baseline"]
    command = ("python -m benchmarks.early_exit --checkpoint outputs/nac-digits-seed42 --output_dir DIR "
               "--thresholds " + ",".join(f"{row['threshold']:g}" for row in data["rows"]))
    rows = ["| threshold | mean layers | top-1 | speed-up, batch 256 | speed-up, batch 1 |", "|---|---|---|---|---|",
            f"| none | {base['mean_layers']:g} | {percent(base['accuracy'])} | 1× | 1× |"]
    for row in data["rows"]:
        rows.append(f"| {row['threshold']:g} | {row['mean_layers']:.2f} | {percent(row['accuracy'])} | "
                    f"{row['speedup']:.2f}× | {row['speedup_batch_1']:.2f}× |")
    lossless = [r for r in data["rows"] if r["accuracy"] >= base["accuracy"] and r["threshold"] < 1]
    cheapest = min(lossless, key=lambda r: r["mean_layers"]) if lossless else None
    figure = (f"{cheapest['mean_layers'] / base['layers']:.0%} of the layers at no loss (threshold "
              f"{cheapest['threshold']:g}), {cheapest['speedup']:.2f}× at batch 256" if cheapest else "no lossless exit")
    text = (f"The seed-42 main-job model ({base['layers']} propagator layers, trained without `exit_training`); "
            f"{data['examples']} held-out digits: {figure}. The early read-outs' logits differ from the full model's "
            f"by up to {max(r['max_logit_difference'] for r in data['rows']):.2f}.\n\n" + "\n".join(rows)
            + "\n\n![Accuracy against layers run and speed-up](results/early-exit-digits-seed42.png)")
    # The curve of every threshold; the operating point, chosen on validation, is the claims' `early_exit` row.
    return section("Early exit", text, command, [name]), None


def claims_details(benchmark: str, details: dict) -> str:
    """What each family chose on validation (trial, adaptation modes) and each NAC's operating points."""
    lines = [f"**{benchmark}.** Chosen on validation:"]
    for family, pretrained in details["pretrained"].items():
        trial, scores = pretrained["trial"], [run["validation"] for run in pretrained["tuning"]]
        modes = ", ".join(f"{shots}-shot {cell['mode']}" for shots, cell in details["low_shot"][family].items())
        lines.append(f"- {family}: {pretrained['parameters'] / 1e6:.2f} M parameters; learning rate "
                     f"{trial['learning_rate']:g}, regularisation strength {trial['strength']:g} (validation top-1 of "
                     f"the trials: {', '.join(percent(v) for v in scores)}); modes {modes}")
    for claim_id, points in details["operating_points"].items():
        cells = [f"seed {seed}: " + (f"{point['processor_modules']} processors" if claim_id == "dropping"
                                     else f"threshold {point['threshold']:g}, {point['mean_layers']:.2f} layers")
                 + f", {point['speedup']:.2f}×, {100 * (point['accuracy'] - point['full_accuracy']):+.2f} points"
                 for seed, point in points.items()]
        lines.append(f"- {claim_id.replace('_', ' ')}: " + "; ".join(cells))
    return "\n".join(lines)


def claims_summary(rows: list[dict]) -> str:
    """One benchmark's rows in a line: the low-shot and out-of-distribution differences by baseline, the operating
    points, and how many rows hold."""
    parts = []
    for baseline in dict.fromkeys(r["baseline_name"] for r in rows if r["id"] not in ("dropping", "early_exit")):
        mine = [r for r in rows if r["baseline_name"] == baseline]
        parts.append(f"NAC − {baseline}: " + ", ".join(
            f"{r['id'].removeprefix('low_shot_') + '-shot' if r['id'].startswith('low_shot') else r['id']} "
            f"{r['diff']:+.1f} [{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]" for r in mine))
    for r in rows:
        if r["id"] in ("dropping", "early_exit"):
            parts.append(f"{r['id'].replace('_', ' ')} {', '.join(f'{s:.1f}×' for s in r['speedups'])} at "
                         f"{r['diff']:+.1f} points")
    held = sum(r["verdict"] == "holds" for r in rows)
    unlearned = sorted({r["baseline_name"] for r in rows if r["verdict"] == "baseline did not learn"})
    return ("; ".join(parts) + f" (points, 95 % CI); {held} of {len(rows)} claims hold"
            + (f" ({', '.join(unlearned)}: did not learn its pre-training task)" if unlearned else ""))


def claims_findings(data: dict) -> str:
    """What the rows say where a claim does not hold, what the protocol tried, and what has not been run."""
    from .paper_claims import BENCHMARKS

    rows = data["rows"]
    lines = ["**Where a claim does not hold.** Each family had the same "
             f"{next(iter(data['protocol']['tuning_trials'].values()))} trials of learning rate and regularisation, "
             "the NAC five adaptation modes (full, head, codes, extend, prototype) and the baselines three, each chosen "
             "on validation."]
    for benchmark in data["details"]:
        mine = [r for r in rows if r["benchmark"] == benchmark]
        unlearned = [r for r in mine if r["verdict"] == "baseline did not learn"]
        for name in sorted({r["baseline_name"] for r in unlearned}):
            share = next(r["pretrain_validation"] for r in unlearned if r["baseline_name"] == name)
            lines.append(f"- {benchmark}: the {name} reached {percent(share['baseline'])} validation top-1 on the "
                         f"pre-training task (the NAC {percent(share['nac'])}) at this training budget: its rows are no "
                         "evidence either way.")
        wide = [r for r in mine if r["verdict"] == "not reproduced" and r["ci_high"] - r["ci_low"] > 10]
        if wide:
            lines.append(f"- {benchmark}: {len(wide)} intervals are wider than 10 points: the pre-training seeds "
                         "disagree more than the claimed margins, so more seeds, not more adaptation runs, would "
                         "narrow them.")
    missing = [name for name in BENCHMARKS if name not in data["details"]]
    if missing:
        lines.append(f"- Not yet run under this protocol: {', '.join(missing)} "
                     f"(`python -m benchmarks.paper_claims --benchmarks {','.join(missing)}`).")
    return "\n".join(lines)


def claims() -> tuple[str, list[dict]]:
    name = "claims.json"
    data = read(name)
    protocol = data["protocol"]
    trials = ", ".join(f"({t['learning_rate']:g}, {t['strength']:g})" for t in protocol["trials"])
    text = (f"Under the fair protocol (`benchmarks.protocol`): every family got the same "
            f"{next(iter(protocol['tuning_trials'].values()))} trials of learning rate and regularisation strength "
            f"({trials}), chosen by validation top-1; {protocol['pretrain_seeds']} pre-training seeds, each adapted "
            f"from {protocol['adapt_seeds']} seeds; adaptation modes and operating points chosen on validation; the "
            f"test splits read once. Intervals: {protocol['interval']}. A claim holds only where the whole interval "
            f"clears the paper's margin. Every training and adaptation is kept in the command's --output_dir, so that "
            "a rerun measures only what is missing and the operating points.\n\n" + data["table"] + "\n\n"
            + "\n\n".join(claims_details(benchmark, details) for benchmark, details in data["details"].items())
            + "\n\n" + claims_findings(data))
    rows = []
    for benchmark in data["details"]:
        mine = [r for r in data["rows"] if r["benchmark"] == benchmark]
        rows.append({"result": f"the paper's claims, fair protocol ({benchmark})", "figure": claims_summary(mine),
                     "json": name, "command": data["command"]})
    return section("The paper's claims under the fair protocol", text, data["command"], [name]), rows


TASKS = ("reviews", "listops", "shapes")
COMPETITIVE_MARGIN = -0.02  # "competitive": the NAC within 2 points of its baseline or ahead


def task_verdict(diff: dict) -> str:
    """Within 2 points or ahead only where the whole 95 % interval is at or above −2 points."""
    return "competitive" if diff["ci_low"] >= COMPETITIVE_MARGIN else "not shown competitive"


def task_line(data: dict) -> str:
    nac, baseline, diff, constant = data["nac"], data["baseline"], data["paired_diff"], data["majority_answer"]
    return (f"NAC {100 * nac['mean']:.2f} ± {100 * nac['std']:.2f} %, {baseline['name']} {100 * baseline['mean']:.2f} ± "
            f"{100 * baseline['std']:.2f} % test top-1 over {len(nac['runs'])} seeds (always answering "
            f"{constant['label']!r}: {percent(constant['test_top1'])}); NAC − {baseline['name']} "
            f"{100 * diff['mean']:+.1f} [{100 * diff['ci_low']:+.1f}, {100 * diff['ci_high']:+.1f}] points: "
            f"{task_verdict(diff)}")


def preset_search(name: str) -> str:
    """The variants of a task's preset tried on validation (`benchmarks.preset_search`)."""
    data = read(f"preset-search-{name}.json")
    setting = data["setting"]
    cells = [f"{row['name']}" + (f" ({', '.join(f'{k}={v}' for k, v in row['overrides'].items())})"
                                 if row["overrides"] else "")
             + f": {percent(row['validation'])}, {row['parameters'] / 1e6:.3f} M parameters ({data['baseline']} "
             f"{100 * row['size_gap']:+.1f} %{'' if row['comparable'] else ', too far from its size'}), trained in "
             f"{row['train_seconds'] / 60:.1f} min"
             for row in data["variants"]]
    return (f"**{name}, the preset chosen on validation**, variants of the preset as it stood before "
            f"(`{data['command']}`; learning rate "
            f"{setting['learning_rate']:g}, strength {setting['strength']:g}, {setting['epochs']:g} epochs, seed "
            f"{setting['seed']}; validation top-1): " + "; ".join(cells) + f". Chosen: {data['chosen']}.")


def task_gap(name: str, data: dict) -> str:
    """Where the NAC's mean falls behind its baseline's: by how much, and what was tried for the NAC."""
    gap = -100 * data["paired_diff"]["mean"]
    if gap <= 0:
        return ""
    trials = ", ".join(f"{trial['learning_rate']:g} at strength {trial['strength']:g}"
                       for trial in data["protocol"]["trials"])
    if (RESULTS / f"preset-search-{name}.json").is_file():
        variants = [row["name"] for row in read(f"preset-search-{name}.json")["variants"] if row["overrides"]]
        searched = f"the preset's variants {', '.join(variants)} on validation (below)"
    else:
        searched = "no variant of the preset yet"
    return (f" The NAC is {gap:.1f} points behind on the mean; tried for it: the learning rates {trials}, and "
            f"{searched}.")


def training_minutes(family: dict) -> str:
    """The span of a family's training times (every trial and seed), in minutes."""
    seconds = [run["train_seconds"] for run in family["tuning"] + family["details"][1:]]
    return f"{min(seconds) / 60:.1f} to {max(seconds) / 60:.1f} min"


def tasks() -> tuple[str, list[dict]]:
    """The comparisons of `benchmarks.task_comparison` that have been run (docs/results/TASK.json)."""
    names = [name for name in TASKS if (RESULTS / f"{name}.json").is_file()]
    lines, rows = [], []
    for name in names:
        data = read(f"{name}.json")
        nac, baseline = data["nac"], data["baseline"]
        chosen = "; ".join(
            f"{family['name']} ({family['params'] / 1e6:.2f} M parameters): learning rate "
            f"{family['trial']['learning_rate']:g}, strength {family['trial']['strength']:g} (validation top-1 of the "
            f"trials: {', '.join(percent(run['validation']) for run in family['tuning'])}); test top-1 per seed "
            f"{', '.join(percent(value) for value in family['runs'])}" for family in (nac, baseline))
        minutes = {family["name"]: training_minutes(family) for family in (nac, baseline)}
        lines.append(f"**{name}** (`{data['command']}`; {data['protocol']['epochs']:g} epochs per training, "
                     f"{data['train_seconds'] / 60:.0f} min of training in all; a training of the NAC took "
                     f"{minutes[nac['name']]}, of the {baseline['name']} {minutes[baseline['name']]}, the slower ones "
                     "beside other jobs): "
                     f"{task_line(data)}. Chosen on "
                     f"validation: {chosen}. The NAC of seed {data['published']['seed']} is written as a publishable "
                     "folder." + task_gap(name, data))
        rows.append({"result": f"`{name}` beside a same-size {baseline['name']}", "figure": task_line(data),
                     "json": f"{name}.json", "command": data["command"]})
    for name in TASKS:
        if (RESULTS / f"preset-search-{name}.json").is_file():
            lines.append(preset_search(name))
    missing = [name for name in TASKS if name not in names]
    text = ("The task's NAC preset and a baseline of its size (parameters within 10 %), the same trials of learning "
            "rate and regularisation strength for both, each family's best trial by validation top-1, trained from "
            "--seeds seeds; the test split read once per model; NAC − baseline paired by seed with a Student-t 95 % "
            "interval. The paper calls NACs competitive on such tasks; here that holds where the whole interval lies at "
            "or above −2 points.\n\n"
            + "\n\n".join(lines)
            + (f"\n\nNot yet run: {', '.join(missing)}." if missing else ""))
    searched = [f"preset-search-{name}.json" for name in TASKS if (RESULTS / f"preset-search-{name}.json").is_file()]
    return section("Tasks beyond images", text, "python -m benchmarks.task_comparison --task TASK --output_dir DIR",
                   [f"{name}.json" for name in names] + searched), rows


SECTIONS = (learning, main_job, speed, int8, module_dropping, early_exit, claims, tasks)


def section(title: str, text: str, command: str, files: list[str]) -> str:
    sources = f"\n\nSource: {', '.join(link(name) for name in files)}." if files else ""
    return f"## {title}\n\n`{command}`\n\n{text}{sources}\n"


def render() -> tuple[str, str]:
    """The results page and the README's table."""
    parts = [section_fn() for section_fn in SECTIONS]
    page = ("# Results\n\nWritten by `python -m benchmarks.results_page` from the json files in "
            "[results/](results/); each section names the command that wrote its file. Measured on a CPU (the "
            "json files give the threads) unless a section says otherwise.\n\n" + "\n".join(text for text, _ in parts))
    lines = ["| result | figure | json | command |", "|---|---|---|---|"]
    for row in (row for _, rows in parts for row in (rows if isinstance(rows, list) else [rows]) if row):
        lines.append(f"| {row['result']} | {row['figure']} | [json](docs/results/{row['json']}) | "
                     f"`{row['command']}` |")
    return page, "\n".join(lines)


def with_table(readme: str, table: str) -> str:
    if TABLE_START not in readme or TABLE_END not in readme:
        raise ValueError(f"README.md has no results table between {TABLE_START!r} and {TABLE_END!r}")
    head, rest = readme.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_START}\n{table}\n{TABLE_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    (args,) = argument_parser(__doc__, PageArguments).parse_args_into_dataclasses(argv)
    page, table = render()
    readme = README.read_text()
    if args.check:
        stale = [str(path.relative_to(ROOT)) for path, text in ((PAGE, page), (README, with_table(readme, table)))
                 if not path.exists() or path.read_text() != text]
        if stale:
            print(f"out of date: {', '.join(stale)}; run python -m benchmarks.results_page", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page)
    README.write_text(with_table(readme, table))
    print(f"wrote {PAGE.relative_to(ROOT)} and the table of {README.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
