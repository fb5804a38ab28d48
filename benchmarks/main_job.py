"""Run the README's main job as a user would and check it against its budget: at most 5 minutes and at least 95 %
top-1 on the held-out digits.

    python -m benchmarks.main_job [--launcher accelerate|python] [--output_dir DIR] [-- extra train.py flags]

Prints the wall time, the held-out top-1 and whether both are within budget; exits 1 when one is not.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


BUDGET_SECONDS = 300
TARGET_TOP1 = 0.95
ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--launcher", choices=("accelerate", "python"), default="accelerate")
    parser.add_argument("--output_dir", default=None, help="Where the run writes (default: a temporary folder).")
    args, extra = parser.parse_known_args()
    output_dir = args.output_dir or tempfile.mkdtemp(prefix="nac-main-job-")
    launcher = [sys.executable, "-m", "accelerate.commands.launch"] if args.launcher == "accelerate" else [sys.executable]
    command = [*launcher, str(ROOT / "scripts" / "train.py"), "--output_dir", output_dir, *[a for a in extra if a != "--"]]
    print("running:", " ".join(command), flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        print(f"the main job failed with exit code {done.returncode}")
        return 1
    results = json.loads((Path(output_dir) / "all_results.json").read_text())
    top1 = results["eval_top1_accuracy"]
    in_time, accurate = seconds <= BUDGET_SECONDS, top1 >= TARGET_TOP1
    print(f"wall time {seconds:.0f} s (budget {BUDGET_SECONDS} s): {'ok' if in_time else 'OVER'}")
    print(f"held-out top-1 {100 * top1:.2f} % (target {100 * TARGET_TOP1:.0f} %): {'ok' if accurate else 'BELOW'}")
    return 0 if in_time and accurate else 1


if __name__ == "__main__":
    sys.exit(main())
