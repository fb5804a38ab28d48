"""python -m benchmarks.tasks --task reviews --output_dir data/reviews [--seed 0] [--archive PATH] [--cache_dir DIR]
    [--min_rating 0.5] [--validation_fraction 0.1] [--test_fraction 0.1]

Movie-review sentiment, for a model that reads bytes. The texts are the 10,605 movie-review snippets of VADER's
evaluation data (Hutto & Gilbert, ICWSM 2014): sentences of the 2,000 reviews of Pang & Lee (2004), each rated from
−4 (most negative) to +4 (most positive) by 20 or more people. The source distribution of vaderSentiment 3.3.2 (MIT
licence) ships them in `additional_resources/hutto_ICWSM_2014.tar.gz`, as `movieReviewSnippets_GroundTruth.txt`:
one snippet a line, tab-separated id, mean rating and text.

Labels: a snippet is `negative` when its mean rating is −`min_rating` or lower and `positive` when it is +`min_rating`
or higher; one whose mean rating is nearer zero is neither and is dropped, and a text met twice is kept once (its
first line), so that no text is in two splits. With the default `min_rating` of 0.5: 533 snippets dropped as
neither and 2 repeated texts, leaving 10,070: 5,075 negative and 4,995 positive. The splits (by default 80 / 10 / 10
%) are stratified by label and fixed by the seed. Columns: `text` (str, as rated, UTF-8) and `label` (ClassLabel
"negative", "positive").

The archive: `--archive PATH` (the sdist vaderSentiment-3.3.2.tar.gz, or hutto_ICWSM_2014.tar.gz from inside it),
else the sdist in the cache folder (`--cache_dir`, else $NAC_HF_CACHE/vader, else ~/.cache/nac_hf/vader), where it
is first downloaded with `python -m pip download --no-deps --no-binary :all: vaderSentiment==3.3.2`.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from datasets import ClassLabel, DatasetDict, Features, Value

from . import labelled_split


REQUIREMENT = "vaderSentiment==3.3.2"
SDIST = "vaderSentiment-3.3.2.tar.gz"
RESOURCES = "hutto_ICWSM_2014.tar.gz"  # the archive inside the sdist that holds the rated snippets
SNIPPETS = "movieReviewSnippets_GroundTruth.txt"
CACHE_VARIABLE = "NAC_HF_CACHE"
LABELS = ["negative", "positive"]


@dataclass
class ReviewsArguments:
    """Where the rated snippets come from, which count as positive or negative, and how they are split (the fields
    of `build`'s settings)."""

    archive: str | None = field(
        default=None,
        metadata={"help": f"Reviews: {SDIST} or {RESOURCES}, to read instead of the cached or downloaded sdist."},
    )
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": f"Reviews: where the sdist is kept (unset: ${CACHE_VARIABLE}/vader, else ~/.cache/nac_hf/vader)."
        },
    )
    min_rating: float = field(
        default=0.5,
        metadata={"help": "Reviews: snippets whose mean rating lies strictly within ±this are dropped as neutral."},
    )
    validation_fraction: float = field(default=0.1, metadata={"help": "Reviews: fraction held out for validation."})
    test_fraction: float = field(default=0.1, metadata={"help": "Reviews: fraction held out for testing."})

    def __post_init__(self):
        if not 0 < self.min_rating <= 4:
            raise ValueError(f"--min_rating must lie in (0, 4], the ratings' scale, got {self.min_rating}")
        fractions = (self.validation_fraction, self.test_fraction)
        if min(fractions) <= 0 or sum(fractions) >= 1:
            raise ValueError(
                f"--validation_fraction and --test_fraction must be positive and leave a training split, got "
                f"{self.validation_fraction} and {self.test_fraction}"
            )


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the sdist is kept: `cache_dir`, else $NAC_HF_CACHE/vader, else ~/.cache/nac_hf/vader."""
    if cache_dir is not None:
        return Path(cache_dir)
    root = os.environ.get(CACHE_VARIABLE)
    return (Path(root) if root else Path.home() / ".cache" / "nac_hf") / "vader"


def fetch_sdist(cache_dir: str | os.PathLike | None = None) -> Path:
    """The vaderSentiment 3.3.2 sdist in the cache folder, downloaded there with pip when it is not yet."""
    folder = cache_folder(cache_dir)
    path = folder / SDIST
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", REQUIREMENT,
               "-d", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not path.is_file():
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise FileNotFoundError(
            f"cannot get the movie-review snippets: {path} does not exist and `python {' '.join(command[1:])}` failed "
            f"({said[0]}). Get {SDIST} (the source distribution of {REQUIREMENT}) by hand and pass it with "
            f"--archive PATH, or put it in {folder}"
        )
    return path


def read_snippets(archive: str | os.PathLike) -> str:
    """The text of `movieReviewSnippets_GroundTruth.txt` in `archive`: the sdist, or the resources archive in it."""
    if not Path(archive).is_file():
        raise FileNotFoundError(f"no archive at {archive}: --archive takes {SDIST} or {RESOURCES}")
    with tarfile.open(archive) as outer:
        members = {Path(member.name).name: member for member in outer.getmembers() if member.isfile()}
        if SNIPPETS in members:
            return outer.extractfile(members[SNIPPETS]).read().decode("utf-8")
        if RESOURCES not in members:
            raise ValueError(f"{archive} holds neither {SNIPPETS} nor {RESOURCES}: is it {SDIST}?")
        inner_bytes = outer.extractfile(members[RESOURCES]).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        found = [member for member in inner.getmembers() if Path(member.name).name == SNIPPETS]
        if not found:
            raise ValueError(f"{RESOURCES} in {archive} holds no {SNIPPETS}")
        return inner.extractfile(found[0]).read().decode("utf-8")


def parse_snippets(text: str) -> list[tuple[str, float]]:
    """(text, mean rating) of each line `id<TAB>mean rating<TAB>text`, in the file's order."""
    snippets = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"line {number} of {SNIPPETS} is not id, mean rating and text separated by tabs: {line!r}")
        snippets.append((parts[2].strip(), float(parts[1])))
    return snippets


def polar_snippets(snippets: list[tuple[str, float]], min_rating: float) -> tuple[list[str], list[int], dict]:
    """Texts and labels (0 negative, 1 positive) of the snippets rated at least `min_rating` from zero, each text
    once; and how many snippets were read, dropped as neither and dropped as repeated."""
    texts, labels, seen = [], [], set()
    counts = {"snippets": len(snippets), "neither": 0, "repeated": 0}
    for text, rating in snippets:
        if abs(rating) < min_rating:
            counts["neither"] += 1
        elif text in seen:
            counts["repeated"] += 1
        else:
            seen.add(text)
            texts.append(text)
            labels.append(int(rating > 0))
    return texts, labels, counts


def build(seed: int = 0, **settings) -> DatasetDict:
    """The movie-review snippets as positive or negative: stratified train / validation / test splits drawn with
    `seed`. `settings` are the fields of `ReviewsArguments` (archive, cache folder, rating threshold, fractions)."""
    settings = ReviewsArguments(**settings)
    archive = settings.archive or fetch_sdist(settings.cache_dir)
    texts, labels, counts = polar_snippets(parse_snippets(read_snippets(archive)), settings.min_rating)
    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})
    description = (
        f"movie-review snippets of vaderSentiment 3.3.2, positive at a mean rating ≥ {settings.min_rating:g}, "
        f"negative at ≤ −{settings.min_rating:g}: of {counts['snippets']} snippets, {counts['neither']} dropped as "
        f"neither and {counts['repeated']} as repeated; seed {seed}"
    )
    everything = labelled_split({"text": texts, "label": labels}, features, description)
    held_out = settings.validation_fraction + settings.test_fraction
    first = everything.train_test_split(test_size=held_out, seed=seed, stratify_by_column="label")
    second = first["test"].train_test_split(
        test_size=settings.test_fraction / held_out, seed=seed, stratify_by_column="label"
    )
    splits = {"train": first["train"], "validation": second["train"], "test": second["test"]}
    return DatasetDict({
        name: labelled_split(split.to_dict(), features, f"{description}: {name} split")
        for name, split in splits.items()
    })


__all__ = ["ReviewsArguments", "build", "cache_folder", "fetch_sdist", "parse_snippets", "read_snippets"]
