"""Classification data for training NACs: Hub datasets, folders written by `DatasetDict.save_to_disk`, image folders,
csv/json/parquet text files, and the handwritten digits that ship with scikit-learn (the default, which needs no
download). A dataset holds images, texts or point clouds (a `points` column of [x, y, z] rows), as its columns say.

A run's data has a training split, a validation split (evaluated while training, and what model selection looks at)
and, where the data has one, a test split, evaluated once at the end. A dataset with a validation split (validation,
valid, val or dev) uses it; one without has `--validation_split_percentage` of its training split held out,
stratified, as the validation split, and its test split (e.g. CIFAR's) stays the test split. The digits are the
exception: their fixed, stratified 20 % is the evaluation split of the main job, as it always was, and nothing is
chosen on it (the main job keeps its last epoch)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import (
    ClassLabel,
    Dataset,
    DatasetDict,
    Features,
    Image,
    IterableDataset,
    IterableDatasetDict,
    Value,
    load_dataset,
    load_from_disk,
)

from .augmentation import random_resized_crop


logger = logging.getLogger(__name__)

IMAGE_COLUMNS = ("image", "img", "picture", "photo")
TEXT_COLUMNS = ("text", "sentence", "content", "review", "document", "question")
POINT_COLUMNS = ("points", "point_cloud", "xyz")
LABEL_COLUMNS = ("label", "labels", "fine_label", "class", "target", "category", "sentiment")
VALIDATION_SPLITS = ("validation", "valid", "val", "dev")
TEST_SPLITS = ("test",)
CROPS = ("pad", "random-resized")
FILE_FORMATS = {"csv": "csv", "tsv": "csv", "json": "json", "jsonl": "json", "parquet": "parquet"}

# The digits default: a fixed, stratified 20 % held out for evaluation.
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
DIGITS_SOURCE = "scikit-learn digits"
DIGITS_DATASET_ID = "scikit-learn-digits"  # how model cards name it in their `datasets` metadata


@dataclass
class DataArguments:
    """Where the training data comes from and how it is read. With no source given, the handwritten digits of
    scikit-learn are used (1,797 8×8 images, 10 labels; 20 % held out for evaluation)."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A dataset on the Hub (e.g. uoft-cs/cifar10, stanfordnlp/imdb), a local one, or a folder "
            "written by DatasetDict.save_to_disk."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of that dataset."})
    train_dir: str | None = field(default=None, metadata={"help": "An image folder (one sub-folder per label)."})
    validation_dir: str | None = field(default=None, metadata={"help": "An image folder for evaluation."})
    train_file: str | None = field(default=None, metadata={"help": "A csv / tsv / json / jsonl / parquet file."})
    validation_file: str | None = field(default=None, metadata={"help": "A file of the same format for evaluation."})
    image_column: str | None = field(default=None, metadata={"help": "Column of the images (detected if unset)."})
    text_column: str | None = field(default=None, metadata={"help": "Column of the texts (detected if unset)."})
    label_column: str | None = field(default=None, metadata={"help": "Column of the labels (detected if unset)."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    validation_split: str | None = field(
        default=None,
        metadata={
            "help": "Split to evaluate on while training (detected among validation/valid/val/dev if unset; without "
            "one, --validation_split_percentage of the training split is held out). Naming the test split here makes "
            "it the evaluation split, as the digits' is."
        },
    )
    validation_split_percentage: float = field(
        default=10.0,
        metadata={"help": "Percentage of the training split held out (stratified) when there is no validation split."},
    )
    test_split: str | None = field(
        default=None,
        metadata={
            "help": "Split evaluated once, at the end of training (test_results.json; detected as 'test' if unset and "
            "not the evaluation split)."
        },
    )
    keep_labels: str | None = field(
        default=None,
        metadata={"help": "Keep only these labels, by name, comma-separated (e.g. '0,1,2,3,4'); ids follow this order."},
    )
    shots_per_label: int | None = field(
        default=None,
        metadata={
            "help": "Train on only this many examples of each label (after --keep_labels), drawn with --seed by "
            "nac_hf.few_shot.sample_shots; the evaluation and test splits stay whole."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training examples."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many evaluation (and test) examples."}
    )
    augment: bool = field(
        default=False, metadata={"help": "Random crops of training images (--crop), and flips with --horizontal_flip."}
    )
    crop: str = field(
        default="pad",
        metadata={
            "help": "With --augment: 'pad' (a random crop of the image padded by 1/8 of its size, the usual CIFAR "
            "crop) or 'random-resized' (a crop of --crop_min_scale to all of the area, aspect 3/4 to 4/3, resized "
            "back: DeiT's)."
        },
    )
    crop_min_scale: float = field(
        default=0.08, metadata={"help": "With --crop random-resized: the smallest fraction of the area a crop keeps."}
    )
    horizontal_flip: bool = field(
        default=False, metadata={"help": "With --augment, also flip training images horizontally (not for digits)."}
    )
    mixup_alpha: float = field(
        default=0.0,
        metadata={"help": "Mixup of training images with weights drawn from Beta(alpha, alpha); 0 for none."},
    )
    cutmix_alpha: float = field(
        default=0.0,
        metadata={
            "help": "Cutmix of training images with box areas drawn from Beta(alpha, alpha); 0 for none. With mixup "
            "too, each batch takes one of them at random."
        },
    )
    repeated_augmentations: int = field(
        default=1,
        metadata={
            "help": "Repeated augmentation: each epoch takes each of 1/N of the training examples N times, augmented "
            "anew (the epoch keeps its length); 1 for none."
        },
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Truncate texts to this many bytes (default: the model's max_position_embeddings)."}
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Read the training split as a stream (a datasets IterableDataset) instead of downloading it first: "
            "shuffled through a buffer, each process of a distributed run served its own part; needs --max_steps. "
            "The evaluation split is loaded whole."
        },
    )
    shuffle_buffer_size: int = field(
        default=10_000, metadata={"help": "With --streaming: how many examples the shuffling buffer holds."}
    )

    def __post_init__(self):
        if self.dataset_name and (self.train_dir or self.train_file):
            raise ValueError("give one data source: --dataset_name, --train_dir or --train_file, not several")
        if self.train_dir and self.train_file:
            raise ValueError("give one data source: --train_dir (images) or --train_file (texts), not both")
        if self.validation_dir and not self.train_dir:
            raise ValueError("--validation_dir needs --train_dir")
        if self.validation_file and not self.train_file:
            raise ValueError("--validation_file needs --train_file")
        if self.streaming and not (self.dataset_name or self.train_dir or self.train_file):
            raise ValueError("--streaming reads --dataset_name, --train_dir or --train_file; the digits are in memory")
        if self.shuffle_buffer_size < 1:
            raise ValueError(f"--shuffle_buffer_size must be at least 1, got {self.shuffle_buffer_size}")
        if not 0 < self.validation_split_percentage < 100:
            raise ValueError(
                f"--validation_split_percentage must lie in (0, 100), got {self.validation_split_percentage}"
            )
        self._check_augmentation()
        if self.shots_per_label is not None and self.shots_per_label < 1:
            raise ValueError(f"--shots_per_label must be at least 1, got {self.shots_per_label}")
        if self.streaming and (self.shots_per_label or self.repeated_augmentations > 1):
            raise ValueError(
                "--shots_per_label and --repeated_augmentations choose examples by index, which a stream has not; "
                "train without --streaming"
            )

    def _check_augmentation(self):
        if self.crop not in CROPS:
            raise ValueError(f"--crop takes one of {list(CROPS)}, got {self.crop!r}")
        if not 0 < self.crop_min_scale <= 1:
            raise ValueError(f"--crop_min_scale must lie in (0, 1], got {self.crop_min_scale}")
        for name in ("mixup_alpha", "cutmix_alpha"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be 0 (off) or positive, got {getattr(self, name)}")
        if self.repeated_augmentations < 1:
            raise ValueError(f"--repeated_augmentations must be at least 1, got {self.repeated_augmentations}")


@dataclass
class ClassificationData:
    """Train and evaluation splits with the columns that matter and the label names."""

    dataset: DatasetDict  # "train", "validation", and "test" when a split is evaluated once at the end
    modality: str  # what the inputs are, a key of `nac_hf.modalities.MODALITIES`: "image", "text" or "points"
    input_column: str
    label_column: str
    label_names: list[str]
    source: str
    eval_split: str = "validation"  # where the evaluation examples come from, in words
    test_split: str | None = None  # the split `dataset["test"]` was, when the data has one evaluated at the end

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.label_names)}


def digits_dataset() -> DatasetDict:
    """scikit-learn's handwritten digits as 8×8 grayscale images: a stratified train / test split fixed by seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    train_idx, test_idx = train_test_split(
        np.arange(len(images)),
        test_size=DIGITS_TEST_FRACTION,
        random_state=DIGITS_SPLIT_SEED,
        stratify=digits.target,
    )
    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})

    def split(indices):
        return Dataset.from_dict(
            {"image": [images[i] for i in indices], "label": [int(digits.target[i]) for i in indices]},
            features=features,
        )

    return DatasetDict(train=split(train_idx), test=split(test_idx))


def _first_of(names, candidates):
    lowered = {name.lower(): name for name in names}
    return next((lowered[c] for c in candidates if c in lowered), None)


def _file_format(path: str) -> str:
    extension = path.rsplit(".", 1)[-1].lower()
    if extension not in FILE_FORMATS:
        raise ValueError(f"cannot read {path!r}: expected a file ending in one of {sorted(FILE_FORMATS)}")
    return FILE_FORMATS[extension]


def load_raw(
    args: DataArguments, cache_dir: str | None = None, streaming: bool = False, split: str | None = None
) -> tuple[DatasetDict, str]:
    """The dataset as it comes (as streams with `streaming`; only `split` when one is named), with a description of
    where it came from."""
    common = {"cache_dir": cache_dir, "streaming": streaming, "split": split}
    if args.dataset_name and is_saved_to_disk(args.dataset_name):
        return load_saved(args.dataset_name, streaming, split), args.dataset_name
    if args.dataset_name:
        return load_dataset(args.dataset_name, args.dataset_config_name, **common), args.dataset_name
    if args.train_dir:
        files = {"train": f"{args.train_dir}/**"}
        if args.validation_dir:
            files["validation"] = f"{args.validation_dir}/**"
        return load_dataset("imagefolder", data_files=files, **common), args.train_dir
    if args.train_file:
        fmt = _file_format(args.train_file)
        files = {"train": args.train_file}
        if args.validation_file:
            if _file_format(args.validation_file) != fmt:
                raise ValueError("--train_file and --validation_file must have the same format")
            files["validation"] = args.validation_file
        options = {"delimiter": "\t"} if args.train_file.endswith(".tsv") else {}
        return load_dataset(fmt, data_files=files, **common, **options), args.train_file
    return digits_dataset(), DIGITS_SOURCE


def is_saved_to_disk(path: str) -> bool:
    """Whether `path` is a folder written by `DatasetDict.save_to_disk` or `Dataset.save_to_disk`."""
    folder = Path(path)
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def load_saved(path: str, streaming: bool = False, split: str | None = None):
    """A folder written by `save_to_disk`, memory-mapped where it lies (a saved `Dataset` is the training split): as
    streams with `streaming`, only `split` when one is named."""
    saved = load_from_disk(path)
    if isinstance(saved, Dataset):
        saved = DatasetDict(train=saved)
    if split is not None:
        if split not in saved:
            raise ValueError(f"no split {split!r} in {path}; it has {sorted(saved)}")
        return saved[split].to_iterable_dataset() if streaming else saved[split]
    if streaming:
        return IterableDatasetDict({name: part.to_iterable_dataset() for name, part in saved.items()})
    return saved


def find_columns(split, args: DataArguments, source: str) -> tuple[str, str, str]:
    """What a split holds: its modality ("image", "points" or "text"), input column and label column, as the
    arguments name them or as found from the features and the usual column names."""
    train, columns = split, split.column_names
    image_column = args.image_column or next(
        (name for name, feature in train.features.items() if isinstance(feature, Image)), None
    ) or _first_of(columns, IMAGE_COLUMNS)
    if args.image_column and args.image_column not in columns:
        raise ValueError(f"--image_column {args.image_column!r} is not a column of {source}: {columns}")
    label_column = args.label_column or next(
        (name for name, feature in train.features.items() if isinstance(feature, ClassLabel)), None
    ) or _first_of(columns, LABEL_COLUMNS)
    if label_column is None or label_column not in columns:
        raise ValueError(f"cannot find the label column of {source} among {columns}; name it with --label_column")
    points_column = None if args.text_column else _first_of(columns, POINT_COLUMNS)
    if image_column is not None and not args.text_column:
        modality, input_column = "image", image_column
    elif points_column is not None:
        modality, input_column = "points", points_column
    else:
        text_column = args.text_column or _first_of(columns, TEXT_COLUMNS) or next(
            (
                name
                for name, feature in train.features.items()
                if name != label_column and isinstance(feature, Value) and feature.dtype in ("string", "large_string")
            ),
            None,
        )
        if text_column is None or text_column not in columns:
            raise ValueError(
                f"cannot find an image, point-cloud ({', '.join(POINT_COLUMNS)}) or text column in {source} among "
                f"{columns}; name it with --image_column or --text_column"
            )
        modality, input_column = "text", text_column
    return modality, input_column, label_column


def load_classification_data(args: DataArguments, seed: int = 42, cache_dir: str | None = None) -> ClassificationData:
    """Load the data the arguments name, find its columns, label names, evaluation split and test split (with
    `args.streaming`, the training split as a shuffled stream). See the module's docstring for which split is
    which."""
    if args.streaming:
        return load_streamed_data(args, seed, cache_dir)
    raw, source = load_raw(args, cache_dir)
    if args.train_split not in raw:
        raise ValueError(f"no split {args.train_split!r} in {source}; it has {sorted(raw)} (--train_split)")
    modality, input_column, label_column = find_columns(raw[args.train_split], args, source)
    dataset, names = choose_splits(raw, args, source)

    if not isinstance(dataset["train"].features[label_column], ClassLabel):
        # Plain labels (ints or strings) become a ClassLabel, so that names reach id2label.
        label_names = _label_names(dataset, label_column)
        dataset = dataset.map(
            lambda batch: {label_column: [_label_id(value, label_names) for value in batch[label_column]]},
            batched=True,
            desc="label ids",
        )
        dataset = dataset.cast_column(label_column, ClassLabel(names=label_names))
    label_names = list(dataset["train"].features[label_column].names)

    if args.keep_labels:
        dataset, label_names = _keep_labels(dataset, label_column, label_names, args.keep_labels.split(","))

    if "validation" not in dataset:
        held_out = dataset["train"].train_test_split(
            test_size=args.validation_split_percentage / 100.0, seed=seed, stratify_by_column=label_column
        )
        dataset["train"], dataset["validation"] = held_out["train"], held_out["test"]
        logger.info("no validation split in %s: held out %s%% of the training split", source,
                    args.validation_split_percentage)
        eval_split = f"{args.validation_split_percentage:g} % of {args.train_split} held out, stratified, seed {seed}"
    elif source == DIGITS_SOURCE and names["validation"] == "test":
        eval_split = f"a fixed stratified {100 * DIGITS_TEST_FRACTION:g} % held out"
    else:
        eval_split = names["validation"]

    dataset = _limit(dataset, args, label_column, seed)
    dataset = DatasetDict({name: split.select_columns([input_column, label_column]) for name, split in dataset.items()})
    return ClassificationData(dataset, modality, input_column, label_column, label_names, source, eval_split,
                              names.get("test"))


def choose_splits(raw: DatasetDict, args: DataArguments, source: str) -> tuple[DatasetDict, dict[str, str]]:
    """The training split, the validation split (named, detected, or None when it is to be held out of the training
    split; for the digits their test split) and the test split when there is one, and the raw names of each."""
    for flag, name in (("--validation_split", args.validation_split), ("--test_split", args.test_split)):
        if name is not None and name not in raw:
            raise ValueError(f"no split {name!r} in {source}; it has {sorted(raw)} ({flag})")
    validation = args.validation_split or next((name for name in VALIDATION_SPLITS if name in raw), None)
    if validation is None and source == DIGITS_SOURCE:
        validation = "test"
    test = args.test_split or next(
        (name for name in TEST_SPLITS if name in raw and name not in (validation, args.train_split)), None
    )
    if test is not None and test in (validation, args.train_split):
        raise ValueError(f"--test_split {test!r} is also the training or evaluation split; name another")
    names = {"train": args.train_split, "validation": validation, "test": test}
    names = {role: name for role, name in names.items() if name is not None}
    return DatasetDict({role: raw[name] for role, name in names.items()}), names


def _limit(dataset: DatasetDict, args: DataArguments, label_column: str, seed: int) -> DatasetDict:
    """The splits cut to `--shots_per_label` (training), `--max_train_samples` and `--max_eval_samples`."""
    if args.shots_per_label is not None:
        dataset["train"] = sample_shots(dataset["train"], label_column, args.shots_per_label, seed)
    if args.max_train_samples is not None:
        train = dataset["train"].shuffle(seed=seed)
        dataset["train"] = train.select(range(min(args.max_train_samples, len(train))))
    if args.max_eval_samples is not None:
        for name in ("validation", "test"):
            if name in dataset:
                dataset[name] = dataset[name].select(range(min(args.max_eval_samples, len(dataset[name]))))
    return dataset


def sample_shots(dataset: Dataset, label_column: str, shots: int, seed: int) -> Dataset:
    """`shots` examples of every label, drawn without replacement with a seed (`nac_hf.few_shot.sample_shots`).

    Deterministic for a seed; for one seed, the k-shot set is contained in every larger one (each label's examples
    are shuffled once and the first k are taken), so results across shot counts differ by the added examples only.
    Every label of the dataset's `ClassLabel` must have at least `shots` examples.
    """
    labels = np.asarray(dataset[label_column])
    feature = dataset.features[label_column]
    label_ids = range(feature.num_classes) if isinstance(feature, ClassLabel) else np.unique(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in label_ids:
        candidates = np.flatnonzero(labels == label)
        if len(candidates) < shots:
            raise ValueError(
                f"label {label} has {len(candidates)} training examples, fewer than the {shots} shots per label "
                "asked for; ask for fewer shots"
            )
        chosen.extend(rng.permutation(candidates)[:shots].tolist())
    return dataset.select(sorted(chosen))


def load_streamed_data(args: DataArguments, seed: int, cache_dir: str | None) -> ClassificationData:
    """The training split as a stream: its columns and labels from the dataset's features (a stream cannot be read
    ahead for them), shuffled through a buffer of `args.shuffle_buffer_size` and cut to `args.max_train_samples`; the
    evaluation split loaded whole, as without streaming. Under DDP, `nac_hf.training.make_trainer` has each process
    read its own part (Accelerate shards the stream by its files, or deals out the examples of each batch)."""
    streams, source = load_raw(args, cache_dir, streaming=True)
    if args.train_split not in streams:
        raise ValueError(f"no split {args.train_split!r} in {source}; it has {sorted(streams)} (--train_split)")
    # Nothing can be held out of a stream: without a validation split, the test split is the evaluation split.
    evaluation_splits = VALIDATION_SPLITS + TEST_SPLITS
    split_name = args.validation_split or next((name for name in evaluation_splits if name in streams), None)
    if split_name is None or split_name not in streams:
        raise ValueError(
            f"--streaming needs an evaluation split in {source} (it has {sorted(streams)}): a stream cannot be held "
            "out from; name one with --validation_split, or train without --streaming"
        )
    train = streams[args.train_split]
    if train.features is None:
        raise ValueError(f"{source} does not say its features, which --streaming needs; train without --streaming")
    modality, input_column, label_column = find_columns(train, args, source)
    label = train.features[label_column]
    if not isinstance(label, ClassLabel):
        raise ValueError(
            f"--streaming needs the label column {label_column!r} of {source} to be a ClassLabel, so that the labels "
            "are known without reading the whole stream; train without --streaming"
        )
    evaluation = DatasetDict(validation=load_raw(args, cache_dir, split=split_name)[0])
    if evaluation["validation"].features[label_column] != label:
        raise ValueError(f"the {args.train_split} and {split_name} splits of {source} name their labels differently")
    label_names = list(label.names)
    if args.keep_labels:
        train, _ = _keep_labels(train, label_column, label_names, args.keep_labels.split(","))
        evaluation, label_names = _keep_labels(evaluation, label_column, label_names, args.keep_labels.split(","))
    train = train.select_columns([input_column, label_column]).shuffle(seed=seed, buffer_size=args.shuffle_buffer_size)
    if args.max_train_samples is not None:
        train = train.take(args.max_train_samples)
    validation = evaluation["validation"]
    if args.max_eval_samples is not None:
        validation = validation.select(range(min(args.max_eval_samples, len(validation))))
    dataset = DatasetDict(train=train, validation=validation.select_columns([input_column, label_column]))
    return ClassificationData(dataset, modality, input_column, label_column, label_names, source, split_name)


def _keep_labels(dataset: DatasetDict, label_column: str, names: list[str], keep: list[str]):
    """Only the examples of the labels in `keep`, relabelled 0..len(keep)-1 in that order."""
    keep = [name.strip() for name in keep]
    unknown = [name for name in keep if name not in names]
    if unknown:
        raise ValueError(f"--keep_labels names labels {unknown} that the data does not have; it has {names}")
    new_id = {names.index(name): index for index, name in enumerate(keep)}
    if isinstance(dataset, IterableDataset):  # relabelled as it is read, with the features said up front
        features = dataset.features.copy()
        features[label_column] = ClassLabel(names=keep)
        dataset = dataset.filter(lambda batch: [i in new_id for i in batch[label_column]], batched=True)
        relabel = lambda batch: {label_column: [new_id[i] for i in batch[label_column]]}  # noqa: E731
        return dataset.map(relabel, batched=True, features=features), keep
    dataset = dataset.filter(lambda batch: [i in new_id for i in batch[label_column]], batched=True)
    dataset = dataset.cast_column(label_column, Value("int64"))
    dataset = dataset.map(lambda batch: {label_column: [new_id[i] for i in batch[label_column]]}, batched=True)
    return dataset.cast_column(label_column, ClassLabel(names=keep)), keep


def _label_names(dataset: DatasetDict, label_column: str) -> list[str]:
    feature = dataset["train"].features[label_column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    values = set()
    for split in dataset.values():
        values.update(split.unique(label_column))
    if all(isinstance(v, (int, np.integer)) for v in values):
        return [str(v) for v in range(max(values) + 1)]  # integer labels keep their ids
    return sorted(str(v) for v in values)


def _label_id(value, label_names: list[str]) -> int:
    if isinstance(value, (int, np.integer)):
        return int(value)
    return label_names.index(str(value))


def augment_images(
    pixel_values: torch.Tensor,
    flip: bool = False,
    generator: torch.Generator | None = None,
    crop: str = "pad",
    min_scale: float = 0.08,
) -> torch.Tensor:
    """Augmentation of a (C, H, W) image: a random crop — `crop="pad"`, of the image padded by 1/8 of its size
    (reflection); `"random-resized"`, a crop of `min_scale` to all of its area resized back
    (`nac_hf.augmentation.random_resized_crop`) — and with `flip` a horizontal flip with probability 1/2."""
    if crop == "random-resized":
        cropped = random_resized_crop(pixel_values, min_scale, generator)
    else:
        _, height, width = pixel_values.shape
        pad = max(1, min(height, width) // 8)
        padded = torch.nn.functional.pad(pixel_values[None], (pad, pad, pad, pad), mode="reflect")[0]
        top, left = (int(torch.randint(0, 2 * pad + 1, (1,), generator=generator)) for _ in range(2))
        cropped = padded[:, top : top + height, left : left + width]
    if flip and torch.rand((), generator=generator) < 0.5:
        cropped = cropped.flip(-1)
    return cropped
