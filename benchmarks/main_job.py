"""python -m benchmarks.main_job [--launcher accelerate|python] [--output_dir DIR] [-- extra scripts/train.py flags]

Runs the README's main job as a user would (`accelerate launch scripts/train.py`, the flags after `--` passed on) and
checks it against its budget: at most 5 minutes and at least 95 % top-1 on the held-out digits. Prints the wall time,
the held-out top-1 and whether both are within budget; exits 1 when one is not.
"""

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .common import argument_parser


BUDGET_SECONDS = 300
TARGET_TOP1 = 0.95
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class MainJobArguments:
    launcher: Literal["accelerate", "python"] = field(
        default="accelerate", metadata={"help": "accelerate: `accelerate launch scripts/train.py`, as the README runs "
                                                "it; python: `python scripts/train.py`."}
    )
    output_dir: str | None = field(default=None, metadata={"help": "Where the run writes (default: a temporary folder)."})


def split_at_dashes(argv: list[str]) -> tuple[list[str], list[str]]:
    """This command's own flags, and the flags after `--` that go to scripts/train.py."""
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def main(argv: list[str] | None = None) -> int:
    own, extra = split_at_dashes(sys.argv[1:] if argv is None else argv)
    (args,) = argument_parser(__doc__, MainJobArguments).parse_args_into_dataclasses(own)
    output_dir = args.output_dir or tempfile.mkdtemp(prefix="nac-main-job-")
    launcher = [sys.executable, "-m", "accelerate.commands.launch"] if args.launcher == "accelerate" else [sys.executable]
    command = [*launcher, str(ROOT / "scripts" / "train.py"), "--output_dir", output_dir, *extra]
    print("running:", " ".join(command), flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        print(f"the main job failed with exit code {done.returncode}")
        return 1
    top1 = json.loads((Path(output_dir) / "all_results.json").read_text())["eval_top1_accuracy"]
    in_time, accurate = seconds <= BUDGET_SECONDS, top1 >= TARGET_TOP1
    print(f"wall time {seconds:.0f} s (budget {BUDGET_SECONDS} s): {'ok' if in_time else 'OVER'}")
    print(f"held-out top-1 {100 * top1:.2f} % (target {100 * TARGET_TOP1:.0f} %): {'ok' if accurate else 'BELOW'}")
    return 0 if in_time and accurate else 1


if __name__ == "__main__":
    sys.exit(main())
