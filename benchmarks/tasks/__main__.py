"""python -m benchmarks.tasks --task {reviews,listops,shapes} --output_dir DIR [--seed 0] [the task's flags]

Build one of the classification tasks of `benchmarks.tasks` with a seed, write it to DIR with
`DatasetDict.save_to_disk`, and print each split's size and label counts. Train on it with

    python scripts/train.py --dataset_name DIR --output_dir RUN [--preset small] ...

Flags that start their help with a task's name ("ListOps:", "Reviews:", "Shapes:") set that task and no other; see
each task's module (`benchmarks/tasks/<task>.py`) for what they mean and their defaults' settings.
"""

import dataclasses
import sys
from dataclasses import dataclass, field

from ..common import argument_parser
from . import listops, reviews, shapes, summary


# Each task: the module that builds it and the dataclass of its settings.
TASKS = {
    "reviews": (reviews, reviews.ReviewsArguments),
    "listops": (listops, listops.ListOpsArguments),
    "shapes": (shapes, shapes.ShapesArguments),
}


@dataclass
class TaskArguments:
    task: str = field(metadata={"help": "The task to build.", "choices": list(TASKS)})
    output_dir: str = field(metadata={"help": "The folder the DatasetDict is written to (save_to_disk)."})
    seed: int = field(default=0, metadata={"help": "Fixes the data and its splits."})


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, TaskArguments, *(arguments for _, arguments in TASKS.values()))
    args, *settings = parser.parse_args_into_dataclasses(argv)
    module, arguments = TASKS[args.task]
    chosen = next(setting for setting in settings if isinstance(setting, arguments))
    task = module.build(args.seed, **dataclasses.asdict(chosen))
    task.save_to_disk(args.output_dir)
    print(f"{args.task} (seed {args.seed}) written to {args.output_dir}\n{summary(task)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
