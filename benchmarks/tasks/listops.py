"""python -m benchmarks.tasks --task listops --output_dir data/listops [--seed 0] [--num_train 20000]
    [--num_validation 2000] [--num_test 2000] [--min_length 20] [--max_length 100] [--max_depth 10] [--max_args 10]

ListOps (Nangia & Bowman, 2018) drawn by the rules of Long Range Arena's generator (lra_benchmarks/data/listops.py):
nested expressions over the digits 0 … 9 whose value, a digit, is the label. The operators are `[MIN`, `[MAX`, `[MED`
(the integer part of the median) and `[SM` (the sum modulo 10), each closed by `]`. An expression is drawn from the
root, at depth 1: below `max_depth` a node is a digit with probability 3/4, else an operator over 2 … `max_args`
nodes drawn alike; at `max_depth` it is always a digit. Expressions are kept only when their length — the number of
their space-separated tokens, brackets included — lies strictly between `min_length` and `max_length`, and each is
kept once. They are written as LRA writes them, tokens separated by spaces: `[MAX 2 9 [MIN 4 7 ] 0 ]` (value 9).

LRA's setting is `min_length=500, max_length=2000` (about 2,500 bytes an expression, for accelerators). The default
window here, 20 … 100 tokens (about 100 bytes an expression, nearly all within the 256 bytes of the `tiny` preset's
longest text), gives a task a byte-level NAC trains on with two CPU cores; the default sizes of the splits are LRA's
validation and test sizes and about a fifth of its 96,000 training expressions. An expression that grows past
`max_length` is dropped as soon as it does (it could only be rejected), which leaves the distribution of the kept
expressions as it was.

The labels are skewed, in LRA as here: 0 and 9 (where MIN and MAX of many digits end) are each about 16 % of the
expressions and every other digit about 8 % (the data's description counts each split's labels).

Columns: `text` (the expression) and `label` (ClassLabel "0" … "9"). The splits are consecutive runs of one stream of
distinct expressions drawn with the seed: no expression is in two of them.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field

from datasets import ClassLabel, DatasetDict, Features, Value

from . import labelled_split


OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
OPERATOR_PROBABILITY = 0.25  # of a node above the deepest level being an operator (LRA's VALUE_P)
APPLY = {
    "[MIN": min,
    "[MAX": max,
    "[MED": lambda values: int(statistics.median(values)),  # the median of an even count is a mean: its integer part
    "[SM": lambda values: sum(values) % 10,
}
LABELS = [str(digit) for digit in range(10)]
DRAWS_PER_EXPRESSION = 1000  # draws allowed per expression asked for, before the window is called too narrow


@dataclass
class ListOpsArguments:
    """How many ListOps expressions, of which lengths and shapes (the fields of `build`'s settings)."""

    num_train: int = field(default=20_000, metadata={"help": "ListOps: training expressions."})
    num_validation: int = field(default=2_000, metadata={"help": "ListOps: validation expressions."})
    num_test: int = field(default=2_000, metadata={"help": "ListOps: test expressions."})
    min_length: int = field(
        default=20, metadata={"help": "ListOps: expressions have more tokens than this (LRA: 500)."}
    )
    max_length: int = field(
        default=100, metadata={"help": "ListOps: expressions have fewer tokens than this (LRA: 2000)."}
    )
    max_depth: int = field(default=10, metadata={"help": "ListOps: deepest nesting of operators and digits."})
    max_args: int = field(default=10, metadata={"help": "ListOps: most arguments of one operator."})

    def __post_init__(self):
        for name in ("num_train", "num_validation", "num_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.min_length < self.max_length - 1:
            raise ValueError(
                f"no length lies strictly between --min_length {self.min_length} and --max_length {self.max_length}; "
                "widen the window"
            )
        if self.max_depth < 2 or self.max_args < 2:
            raise ValueError(
                f"--max_depth and --max_args must be at least 2 for an operator to have digits below it, got "
                f"{self.max_depth} and {self.max_args}"
            )


class TooLong(Exception):
    """An expression being drawn has reached `max_length` tokens and can only be rejected."""


def draw_expression(rng: random.Random, tokens: list[str], depth: int, settings: ListOpsArguments) -> int:
    """Append one expression drawn at `depth` to `tokens` and return its value; raise `TooLong` once `tokens` reaches
    `settings.max_length`. The draws are LRA's, in its order: node kind, argument count, arguments, operator."""
    if depth == settings.max_depth or rng.random() > OPERATOR_PROBABILITY:
        value = rng.randrange(10)
        tokens.append(str(value))
        return value
    start = len(tokens)
    tokens.append("")  # the operator, drawn after its arguments as LRA draws it
    values = []
    for _ in range(rng.randint(2, settings.max_args)):
        values.append(draw_expression(rng, tokens, depth + 1, settings))
        if len(tokens) >= settings.max_length:
            raise TooLong
    operator = rng.choice(OPERATORS)
    tokens[start] = operator
    tokens.append(END)
    return APPLY[operator](values)


def distinct_expressions(count: int, settings: ListOpsArguments, rng: random.Random) -> list[tuple[str, int]]:
    """`count` distinct expressions with lengths inside the window, and their values, in the order drawn."""
    kept: dict[str, int] = {}
    for _ in range(DRAWS_PER_EXPRESSION * count):
        tokens: list[str] = []
        try:
            value = draw_expression(rng, tokens, 1, settings)
        except TooLong:
            continue
        if settings.min_length < len(tokens) < settings.max_length:
            kept.setdefault(" ".join(tokens), value)
            if len(kept) == count:
                return list(kept.items())
    raise ValueError(
        f"found only {len(kept)} distinct expressions of {settings.min_length} to {settings.max_length} tokens "
        f"(exclusive) in {DRAWS_PER_EXPRESSION * count} draws, of the {count} asked for: widen the window "
        "(--min_length, --max_length), or ask for fewer"
    )


def build(seed: int = 0, **settings) -> DatasetDict:
    """ListOps expressions drawn with `seed`: train / validation / test splits of `text` and `label`. `settings` are
    the fields of `ListOpsArguments` (split sizes, length window, depth and arguments)."""
    settings = ListOpsArguments(**settings)
    sizes = {"train": settings.num_train, "validation": settings.num_validation, "test": settings.num_test}
    expressions = distinct_expressions(sum(sizes.values()), settings, random.Random(seed))
    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})
    splits, start = {}, 0
    for name, size in sizes.items():
        texts, labels = map(list, zip(*expressions[start : start + size]))
        start += size
        description = (
            f"ListOps by LRA's rules, {settings.min_length} < tokens < {settings.max_length}, depth ≤ "
            f"{settings.max_depth}, ≤ {settings.max_args} arguments, seed {seed}: {name} split"
        )
        splits[name] = labelled_split({"text": texts, "label": labels}, features, description)
    return DatasetDict(splits)


__all__ = ["APPLY", "END", "OPERATORS", "ListOpsArguments", "build", "draw_expression"]
