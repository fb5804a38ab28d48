"""Classification tasks built in code from packages, each a `datasets.DatasetDict` of train / validation / test splits
fixed by a seed, which `scripts/train.py --dataset_name FOLDER` trains on once written to FOLDER
(`python -m benchmarks.tasks --task NAME --output_dir FOLDER`):

- `reviews`: sentiment of movie-review snippets read byte by byte (the ratings shipped with vaderSentiment);
- `listops`: the value of nested list operations, by the rules of Long Range Arena's generator;
- `shapes`: the class of a procedural 3-D shape from a noisy, partly occluded point cloud.

Each module has a `build(seed=0, **settings)` whose settings are the fields of its arguments dataclass, and each
split's description (`split.info.description`) says how it was made and how many examples each label has.
"""

from __future__ import annotations

from collections import Counter

from datasets import Dataset, DatasetDict, Features


def label_counts(split: Dataset, column: str = "label") -> dict[str, int]:
    """How many examples of each label `split` has, by label name, in the order of its ClassLabel."""
    counts = Counter(split[column])
    return {name: counts.get(index, 0) for index, name in enumerate(split.features[column].names)}


def labelled_split(columns: dict, features: Features, description: str) -> Dataset:
    """A split of these columns whose description is `description` followed by its label counts."""
    split = Dataset.from_dict(columns, features=features)
    counts = ", ".join(f"{name} {count}" for name, count in label_counts(split).items())
    split.info.description = f"{description}; labels: {counts}"
    return split


def summary(task: DatasetDict) -> str:
    """One line per split: its size and its label counts."""
    return "\n".join(f"{name}: {len(split)} examples, labels {label_counts(split)}" for name, split in task.items())


__all__ = ["label_counts", "labelled_split", "summary"]
