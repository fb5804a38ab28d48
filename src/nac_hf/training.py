"""Training NACs with `Trainer`, step by step: the data of a run, the model and processor it starts from, the
`Trainer` with its transforms, augmentation and offline top-k metrics, training (resuming from the last complete
checkpoint), evaluation on the validation split and once on the test split, and the record a model card is made
from. `scripts/train.py` calls these steps in order and publishes the result with `nac_hf.hub`.

`NACTrainer` is `Trainer` with what the recipes of `nac_hf.recipes` add: soft targets (mixup, cutmix, label smoothing:
`nac_hf.augmentation`) and their cross-entropy, repeated augmentation as its training sampler, and evaluation with
the averaged weights of `nac_hf.ema.EMACallback`."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import gc
import json
import logging
import math
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import evaluate
import torch
import transformers
from datasets import IterableDataset
from safetensors import safe_open
from transformers import (
    AutoConfig,
    DataCollatorWithPadding,
    DefaultDataCollator,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

import nac_hf

from . import __version__
from .augmentation import MixingCollator, RepeatedAugmentationSampler, soft_target_cross_entropy
from .configuration_nac import NACConfig, preset_fields
from .data import (
    DIGITS_DATASET_ID,
    DIGITS_SOURCE,
    ClassificationData,
    DataArguments,
    augment_images,
    load_classification_data,
)
from .ema import EMACallback, sharded_parts
from .modalities import MODALITIES, modality_of
from .modeling_nac import CheckpointMismatchError, NACForClassification
from .recipes import RECIPES


logger = logging.getLogger(__name__)

# The top-k accuracy metric ships inside the package: `evaluate.load` reads it from this path, with no network.
TOP_K_ACCURACY = str(Path(__file__).parent / "metrics" / "top_k_accuracy")
# What a run writes for its model card (`nac_hf.hub` reads it).
TRAINING_DETAILS = "training_details.json"


@dataclass
class ModelArguments:
    """Which NAC a run starts from: a checkpoint (folder or Hub id), or a preset with overrides."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved NAC folder or Hub id to start from (its head is resized to the labels)."}
    )
    preset: str | None = field(
        default=None,
        metadata={
            "help": f"Preset of a new model, one of {NACConfig.presets()}; by default 'digits' for the digits default "
            "data and 'small' for any other."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Config fields to override, as 'k=v,k=v' (e.g. 'hidden_size=96,num_hidden_layers=2')."},
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and datasets are kept."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Load a checkpoint's own code (for folders saved where nac_hf is absent)."}
    )


@dataclass
class NACTrainingArguments(TrainingArguments):
    """`TrainingArguments` and the number of threads a CPU run computes with."""

    cpu_threads: int | None = field(
        default=None,
        metadata={
            "help": "Threads per process when training on CPUs. Default: every core this process may run on, shared "
            "among the processes on this machine (accelerate launch and torchrun would otherwise leave one thread "
            "per process)."
        },
    )

    keep_freed_memory: bool = field(
        default=True,
        metadata={
            "help": "When training on CPUs under Linux (glibc): keep the memory a step frees for the next step "
            "instead of handing it back to the operating system, which then has to fault it in again page by page "
            "(see nac_hf.training.keep_freed_memory). The process keeps its peak memory."
        },
    )

    recipe: str | None = field(
        default=None,
        metadata={
            "help": f"A training recipe of nac_hf.recipes, one of {sorted(RECIPES)}: in scripts/train.py it sets the "
            "preset and the defaults of the other flags (explicit flags still win), and the run records it."
        },
    )

    ema_decay: float | None = field(
        default=None,
        metadata={
            "help": "Keep an exponential moving average of the weights with this decay per optimizer step, evaluate "
            "with it, and save it as the model (checkpoints and the final model; nac_hf.ema). Unset: none."
        },
    )

    warmup_epochs: float | None = field(
        default=None,
        metadata={"help": "Linear warm-up of the learning rate over this many epochs (instead of --warmup_steps)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"--cpu_threads must be at least 1, got {self.cpu_threads}")
        if self.recipe is not None and self.recipe not in RECIPES:
            raise ValueError(f"--recipe takes one of {sorted(RECIPES)}, got {self.recipe!r}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"--ema_decay must lie in (0, 1), got {self.ema_decay}")
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise ValueError(f"--warmup_epochs must be 0 or more, got {self.warmup_epochs}")
        if self.warmup_epochs and self.warmup_steps:
            raise ValueError(
                f"give --warmup_epochs ({self.warmup_epochs}) or --warmup_steps ({self.warmup_steps}), not both "
                "(--warmup_epochs 0 to count the warm-up in steps)"
            )


def set_cpu_threads(training_args: TrainingArguments) -> int | None:
    """Give torch `--cpu_threads` threads on a CPU run, or by default the cores this process may run on divided by
    the processes on this machine. Returns the number set, or None when the run is not on CPUs."""
    if not training_args.use_cpu:
        return None
    threads = getattr(training_args, "cpu_threads", None)
    if threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads)
    return threads


# glibc's mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Have glibc's `malloc` keep the memory that tensors free for the next allocations of this process: blocks up to
    1 GiB come from its heap, which is never trimmed (`mallopt(M_MMAP_THRESHOLD)`, `mallopt(M_TRIM_THRESHOLD)`).

    A training step allocates and frees the same activations at every step. By default glibc maps blocks over 32 MiB
    afresh and hands the free top of its heap back to the operating system, so every step faults its memory in again,
    page by page: hundreds of MiB per step for `paper-tiny-imagenet` at batch 32 (`train_page_faults_mb` of
    `python -m benchmarks.speed --keep_freed_memory false`). The process keeps its peak memory instead. Process-wide
    and not undone; returns whether it was set (Linux with glibc only, else nothing changes)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        libc = None
    if libc is None or not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, 2**30)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def end_distributed(*trainers: Trainer) -> None:
    """Leave the process group this process joined (under `torchrun` or `accelerate launch`), if any, after releasing
    the distributed wrapper of each of `trainers` that is still in use: a barrier, then `destroy_process_group`.

    The wrapper's gradient reducer holds the group. Freed after `destroy_process_group`, it would be the one to tear
    the group down, holding the interpreter lock, while a gloo worker thread may still be dropping its last finished
    collective, which needs that lock: the process then never exits, and torchrun waits for it for good. So the
    wrappers go first (`gc.collect()` frees those only cycles still hold), while the group is still registered.
    Left to the interpreter's exit, the teardown of a gloo group sometimes aborted a process that had finished its run
    ("terminate called without an active exception"); destroying the group without the barrier first could hang a
    rank."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    for trainer in trainers:
        trainer.model_wrapped = trainer.model
        trainer.accelerator.free_memory()
    gc.collect()
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def parse_config_overrides(text: str | None) -> dict:
    """`"hidden_size=96,graph_prior=none,freeze_signatures=true"` → config fields, typed like their defaults."""
    if not text:
        return {}
    fields = NACConfig.__dataclass_fields__
    overrides = {}
    for item in text.split(","):
        if "=" not in item:
            raise ValueError(f"--config_overrides expects 'key=value' pairs separated by commas, got {item!r}")
        key, value = (part.strip() for part in item.split("=", 1))
        if key == "num_labels":
            overrides[key] = int(value)
            continue
        if key not in fields:
            raise ValueError(f"--config_overrides: {key!r} is not a NACConfig field")
        overrides[key] = _typed(key, value, fields[key].default)
    return overrides


def _typed(key: str, value: str, default):
    if isinstance(default, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"--config_overrides: {key} takes true or false, got {value!r}")
        return value.lower() in ("true", "1")
    if isinstance(default, str):
        return value
    if default is None:  # an optional field: none, a number, or a word (e.g. problem_type=regression)
        if value.lower() in ("none", "null"):
            return None
        try:
            return int(value)
        except ValueError:
            return value
    try:
        return type(default)(value)
    except ValueError:
        raise ValueError(f"--config_overrides: {key} takes a {type(default).__name__}, got {value!r}") from None


def build_model(model_args: ModelArguments, data: ClassificationData) -> NACForClassification:
    """A NAC for the data's labels: loaded from a checkpoint (with a new head when the labels differ) or new."""
    labels = {"num_labels": len(data.label_names), "id2label": data.id2label, "label2id": data.label2id}
    overrides = parse_config_overrides(model_args.config_overrides)
    if model_args.model_name_or_path:
        source = model_args.model_name_or_path
        common = {"cache_dir": model_args.cache_dir, "trust_remote_code": model_args.trust_remote_code}
        saved = AutoConfig.from_pretrained(source, **common)
        config = AutoConfig.from_pretrained(source, **common, **overrides, **labels)
        check_modality(config, data)
        # Only the head may change size (new labels); any other weight of another shape would be drawn afresh.
        reshaped = [line for line in saved.architecture_differences(config) if not line.startswith("num_labels:")]
        if reshaped:
            raise CheckpointMismatchError(
                f"--config_overrides change the shape of {source}'s weights (checkpoint vs requested: "
                f"{'; '.join(reshaped)}), so they could not be loaded; drop those overrides to fine-tune the "
                "checkpoint, or train a new model with --preset"
            )
        auto = MODALITIES[data.modality].auto_model()
        model = auto.from_pretrained(source, config=config, ignore_mismatched_sizes=True, **common)
        if saved.id2label != config.id2label:
            # `ignore_mismatched_sizes` redraws the head only when the number of labels changes; a new label set of
            # the old size would otherwise keep rows that mean the old labels.
            reinitialize(model, model.classifier)
        return model
    preset = preset_of(model_args, data)
    reads = MODALITIES[data.modality]
    preset_reads = preset_fields(preset).get("tokenizer_type", NACConfig.__dataclass_fields__["tokenizer_type"].default)
    if "tokenizer_type" not in overrides and preset_reads not in reads.tokenizer_types:
        overrides["tokenizer_type"] = reads.tokenizer_types[0]  # the preset, reading the data's kind of input
    config = NACConfig.from_preset(preset, **{**overrides, **labels})
    check_modality(config, data)
    return NACForClassification(config)


def preset_of(model_args: ModelArguments, data: ClassificationData) -> str:
    """The preset a new model is built from: `--preset`, else `digits` for the digits data and `small` for any other."""
    return model_args.preset or ("digits" if data.source == DIGITS_SOURCE else "small")


@torch.no_grad()
def reinitialize(model, module: torch.nn.Module) -> None:
    """Draw `module`'s weights afresh with `model`'s own initialisation, also where they were loaded."""
    for part in module.modules():
        # Loaded weights are flagged as initialised, and transformers' initialisers skip flagged tensors.
        part._is_hf_initialized = False
        for parameter in part.parameters(recurse=False):
            parameter._is_hf_initialized = False
    module.apply(model._init_weights)


def check_modality(config, data: ClassificationData) -> None:
    if getattr(config, "model_type", None) != "nac":
        raise ValueError(
            f"expected a NAC checkpoint (model_type 'nac'), got model_type {getattr(config, 'model_type', None)!r}"
        )
    if modality_of(config).name != data.modality:
        raise ValueError(
            f"{data.source} holds {data.modality} data but the model reads tokenizer_type={config.tokenizer_type!r}; "
            f"use a {' or '.join(MODALITIES[data.modality].tokenizer_types)} model"
        )


def build_processor(model_args: ModelArguments, config, data: ClassificationData):
    """The checkpoint's image processor or tokenizer when it has one, else one made for the config (None for inputs
    that need no processor)."""
    auto = MODALITIES[data.modality].auto_processor()
    if model_args.model_name_or_path and auto is not None:
        try:
            return auto.from_pretrained(
                model_args.model_name_or_path,
                cache_dir=model_args.cache_dir,
                trust_remote_code=model_args.trust_remote_code,
            )
        except (OSError, ValueError):
            logger.info("%s has no processor: making one for its config", model_args.model_name_or_path)
    return new_processor(config)


def new_processor(config):
    """A new processor for the inputs `config` reads (`NACImageProcessor` of its image size, `NACByteTokenizer` of
    its longest text), or None when they need none."""
    reads = modality_of(config)
    if reads.processor_class is None:
        return None
    return getattr(nac_hf, reads.processor_class)(**reads.processor_settings(config))


def prepare_datasets(data: ClassificationData, processor, data_args: DataArguments, config):
    """Train and evaluation datasets that yield model inputs and `labels`, and the collator that batches them
    (`prepare_splits` for the test split too)."""
    splits, collator = prepare_splits(data, processor, data_args, config)
    return splits["train"], splits["validation"], collator


def prepare_splits(data: ClassificationData, processor, data_args: DataArguments, config):
    """Every split of `data` ("train", "validation", and "test" when there is one) as datasets that yield model
    inputs and `labels`, and the collator that batches them.

    Inputs of one shape (images) are made from the raw column as they are read, the training split augmented with
    `data_args.augment`; inputs whose length varies (texts) are encoded once, cut to `data_args.max_length`, and
    padded per batch; inputs the model reads as they are (point clouds) are read as float tensors and padded per
    batch where their lengths differ."""
    reads = MODALITIES[data.modality]
    if reads.length_axis is None:
        return _transformed_datasets(data, processor, data_args, reads.main_input_name)
    if reads.processor_class is None:
        return _raw_datasets(data, reads.main_input_name, reads.mask_name)
    longest = reads.longest(config)
    return _encoded_datasets(data, processor, min(data_args.max_length or longest, longest))


def _transformed_datasets(data: ClassificationData, processor, data_args: DataArguments, input_name: str):
    column, label = data.input_column, data.label_column

    def transform(augment: bool):
        def apply(batch):
            values = processor([example for example in batch[column]], return_tensors="pt")[input_name]
            if augment:
                values = torch.stack([
                    augment_images(value, data_args.horizontal_flip, crop=data_args.crop,
                                   min_scale=data_args.crop_min_scale)
                    for value in values
                ])
            return {input_name: list(values), "labels": batch[label]}

        return apply

    splits = {name: split.with_transform(transform(False)) for name, split in data.dataset.items() if name != "train"}
    train = data.dataset["train"]
    if isinstance(train, IterableDataset):  # transformed as it is read, in the dataloader's workers
        splits["train"] = train.map(transform(data_args.augment), batched=True, remove_columns=[column, label])
    else:
        splits["train"] = train.with_transform(transform(data_args.augment))
    return splits, DefaultDataCollator()


def _encoded_datasets(data: ClassificationData, processor, max_length: int):
    column, label = data.input_column, data.label_column

    def encode(batch):
        encoded = processor(batch[column], truncation=True, max_length=max_length)
        return {**encoded, "labels": batch[label]}

    encoded = {}
    for name, split in data.dataset.items():
        progress = {} if isinstance(split, IterableDataset) else {"desc": "bytes"}  # a stream maps as it is read
        encoded[name] = split.map(encode, batched=True, remove_columns=[column, label], **progress)
    return encoded, DataCollatorWithPadding(processor)


def _raw_datasets(data: ClassificationData, input_name: str, mask_name: str):
    renames = {data.input_column: input_name, data.label_column: "labels"}
    renames = {old: new for old, new in renames.items() if old != new}
    splits = {name: split.rename_columns(renames).with_format("torch") for name, split in data.dataset.items()}
    return splits, PaddingCollator(input_name, mask_name)


@dataclass
class PaddingCollator:
    """Batches of inputs whose first axis differs in length between examples (the points of clouds, `(N, 3)`):
    stacked as float tensors `(B, N, 3)` when all have one length, else zero-padded to the longest with a mask under
    `mask_name` (1 for a real row, 0 for padding), so that padding is never read as points."""

    input_name: str
    mask_name: str

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        inputs = [torch.as_tensor(example[self.input_name], dtype=torch.float32) for example in examples]
        batch = {"labels": torch.stack([torch.as_tensor(example["labels"]) for example in examples])}
        if len({len(rows) for rows in inputs}) == 1:
            return {self.input_name: torch.stack(inputs), **batch}  # (B, N, 3)
        padded = torch.nn.utils.rnn.pad_sequence(inputs, batch_first=True)  # (B, N_max, 3)
        mask = torch.zeros(padded.shape[:2], dtype=torch.long)  # (B, N_max)
        for row, rows in enumerate(inputs):
            mask[row, : len(rows)] = 1
        return {self.input_name: padded, self.mask_name: mask, **batch}


def make_compute_metrics(num_labels: int):
    """Top-1 (and top-5 with 10 or more labels) accuracy through `evaluate`, from the bundled metric."""
    metric = evaluate.load(TOP_K_ACCURACY)
    ks = (1, 5) if num_labels >= 10 else (1,)

    def compute_metrics(prediction) -> dict:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        results = {}
        for k in ks:
            score = metric.compute(predictions=logits, references=prediction.label_ids, k=k)[f"top_{k}_accuracy"]
            results[f"top{k}_accuracy"] = score
        return results

    return compute_metrics


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    """A checkpoint folder `Trainer` finished writing: its trainer state (written last) parses, and its weights were
    all written: `model.safetensors` opens, or, for a sharded FSDP checkpoint (`fsdp_state_dict_type:
    SHARDED_STATE_DICT`), each of its parts (`pytorch_model_fsdp_*/`, `optimizer_*/`) holds the index written after
    all its shards (`.metadata`)."""
    folder = Path(folder)
    try:
        json.loads((folder / "trainer_state.json").read_text())
        if sharded_parts(folder):
            return all((part / ".metadata").is_file() for part in sharded_parts(folder, "optimizer_"))
        with safe_open(folder / "model.safetensors", framework="pt") as weights:
            weights.keys()
    except Exception:  # a missing or truncated file: OSError, JSONDecodeError, or safetensors' own error type
        return False
    return True


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete `checkpoint-N` in `output_dir` (transformers' `get_last_checkpoint`, passed over while the
    newest is incomplete). Folders a killed run left half-written are moved aside (renamed `*.incomplete`) so that
    neither `Trainer` nor a later resume picks them up."""
    if not Path(output_dir).is_dir():
        return None
    while (newest := get_last_checkpoint(str(output_dir))) is not None:
        if is_complete_checkpoint(newest):
            return newest
        aside = Path(newest).with_name(Path(newest).name + ".incomplete")
        shutil.rmtree(aside, ignore_errors=True)
        Path(newest).rename(aside)
        logger.warning("%s was not completely written (the run stopped while saving): moved to %s", newest, aside)
    return None


def resolve_resume(training_args: TrainingArguments) -> str | None:
    """`--resume_from_checkpoint` as `Trainer` needs it: a folder, or `last`/`true` for the newest complete
    checkpoint in the output folder."""
    resume = training_args.resume_from_checkpoint
    if resume is None or str(resume).lower() in ("false", "no"):
        return None
    if str(resume).lower() in ("last", "true", "yes"):
        found = None
        if training_args.process_index == 0:
            found = last_complete_checkpoint(training_args.output_dir)
        if training_args.world_size > 1:
            found = _broadcast(found)
        if found is None:
            logger.warning("no complete checkpoint in %s: starting from scratch", training_args.output_dir)
        return found
    if not is_complete_checkpoint(resume):
        raise ValueError(
            f"--resume_from_checkpoint {resume!r} is not a complete checkpoint (it needs trainer_state.json and "
            "model.safetensors, or for a sharded FSDP checkpoint a .metadata in each pytorch_model_fsdp_* and "
            "optimizer_* folder); pass another, or 'last' for the newest complete one in --output_dir"
        )
    return str(resume)


def _broadcast(value):
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def load_run_data(data_args: DataArguments, training_args: TrainingArguments, cache_dir: str | None = None):
    """The run's data, read by the main process first (other ranks then find it in the cache)."""
    if data_args.streaming and training_args.max_steps <= 0:
        raise ValueError("--streaming needs --max_steps: a stream has no length to count epochs in")
    with training_args.main_process_first(desc="loading data"):
        return load_classification_data(data_args, seed=training_args.seed, cache_dir=cache_dir)


class NACTrainer(Trainer):
    """`Trainer` with soft targets, repeated augmentation and averaged weights.

    - `train_collator` batches the training examples (e.g. a `MixingCollator`, whose labels are soft targets
      `(B, num_labels)`); evaluation keeps `data_collator`. Soft targets are trained with their cross-entropy on the
      model's logits, plus its weighted graph regulariser; integer labels go to the model's own loss.
    - `repeated_augmentations` > 1 draws training examples with a `RepeatedAugmentationSampler`.
    - With an `EMACallback` among the callbacks, evaluation runs with the averaged weights.
    - `test_dataset`: the split `evaluate_test` evaluates once, at the end.
    - `warmup_epochs`: the warm-up asked for in epochs (`args.warmup_steps` holds it in steps), for the run's record.
    """

    def __init__(self, *args, train_collator=None, repeated_augmentations: int = 1, test_dataset=None, **kwargs):
        super().__init__(*args, **kwargs)
        # Label smoothing is folded into the training collator's soft targets (`MixingCollator`); `args` keeps the
        # factor for the run's record and card, as Trainer itself sets no smoother when the factor is 0.
        self.label_smoother = None
        self.train_collator = train_collator
        self.repeated_augmentations = repeated_augmentations
        self.test_dataset = test_dataset
        self.warmup_epochs = None

    def get_train_dataloader(self):
        if self.train_collator is None:
            return super().get_train_dataloader()
        evaluation_collator, self.data_collator = self.data_collator, self.train_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = evaluation_collator

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.repeated_augmentations > 1 and examples(dataset) is not None:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return RepeatedAugmentationSampler(len(dataset), self.repeated_augmentations, seed)
        return super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.get("labels")
        if labels is None or not labels.is_floating_point() or labels.dim() != 2:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(**{name: value for name, value in inputs.items() if name != "labels"})
        loss = soft_target_cross_entropy(outputs.logits, labels)
        regularizer = getattr(outputs, "graph_regularizer_loss", None)  # a NAC's (other models have none)
        if regularizer is not None:
            loss = loss + self.model.config.graph_regularizer_weight * regularizer
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            # Trainer takes the loss of a model with loss kwargs (a ViT, not a NAC) as already scaled for gradient
            # accumulation and leaves it; this one is a mean over its batch, so it is scaled here.
            loss = loss / self.current_gradient_accumulation_steps
        return (loss, outputs) if return_outputs else loss

    @property
    def ema(self) -> EMACallback | None:
        return next((cb for cb in self.callback_handler.callbacks if isinstance(cb, EMACallback)), None)

    def evaluate(self, *args, **kwargs):
        if self.ema is None:
            return super().evaluate(*args, **kwargs)
        with self.ema.averaged_weights(self.model):
            return super().evaluate(*args, **kwargs)


def make_trainer(
    model, processor, data: ClassificationData, data_args: DataArguments, training_args: TrainingArguments,
    compute_metrics=None,
) -> NACTrainer:
    """A `NACTrainer` for `model` on `data`: its transforms, collators, sampler, averaged weights and top-k metrics.
    `training_args` is not changed: the Trainer gets a copy that keeps the raw columns (the transforms make the model
    inputs from them), does not push checkpoints (a run is published once, at the end, with `nac_hf.hub.publish`),
    and counts `warmup_epochs` in steps."""
    train_collator = mixing_collator(model, data, data_args, training_args)
    changes = {"remove_unused_columns": False, "push_to_hub": False}
    if isinstance(data.dataset["train"], IterableDataset):
        # Each process reads its own part of the stream, rather than the first process reading for all.
        changes["accelerator_config"] = dataclasses.replace(training_args.accelerator_config, dispatch_batches=False)
    splits, collator = prepare_splits(data, processor, data_args, model.config)
    epochs = getattr(training_args, "warmup_epochs", None)
    if epochs:
        changes.update(warmup_steps=warmup_steps(training_args, examples(splits["train"])), warmup_epochs=None)
    args = dataclasses.replace(training_args, **changes)
    decay = getattr(training_args, "ema_decay", None)
    trainer = NACTrainer(
        model=model,
        args=args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        test_dataset=splits.get("test"),
        processing_class=processor,
        data_collator=collator,
        train_collator=None if train_collator is None else dataclasses.replace(train_collator, collator=collator),
        repeated_augmentations=data_args.repeated_augmentations,
        callbacks=[EMACallback(decay)] if decay else None,
        compute_metrics=compute_metrics or make_compute_metrics(len(data.label_names)),
    )
    trainer.warmup_epochs = epochs
    logger.info(
        "%s: %s train / %d evaluation%s examples, %d labels; model with %.2f M parameters",
        data.source, examples(splits["train"]) or "streamed", len(splits["validation"]),
        f" / {len(splits['test'])} test" if "test" in splits else "", len(data.label_names),
        model.num_parameters() / 1e6,
    )
    return trainer


def mixing_collator(model, data: ClassificationData, data_args: DataArguments, training_args) -> MixingCollator | None:
    """The training collator of soft targets that `data_args` (mixup, cutmix) and `label_smoothing_factor` ask for
    (its base collator still to be set), or None for integer labels. Refuses what soft targets cannot train."""
    smoothing = training_args.label_smoothing_factor
    collator = MixingCollator(
        collator=None, num_labels=len(data.label_names), mixup_alpha=data_args.mixup_alpha,
        cutmix_alpha=data_args.cutmix_alpha, label_smoothing=smoothing,
        input_name=MODALITIES[data.modality].main_input_name,
    )
    if not (collator.mixes or smoothing):
        return None
    if collator.mixes and data.modality != "image":
        raise ValueError(f"--mixup_alpha and --cutmix_alpha mix images; {data.source} holds {data.modality} data")
    config = model.config
    if getattr(config, "exit_training", False):
        raise ValueError(
            "soft targets (--mixup_alpha, --cutmix_alpha, --label_smoothing_factor) train the last read-out only, "
            "and exit_training=True trains every read-out: set those to 0, or exit_training=false"
        )
    if config.problem_type not in (None, "single_label_classification"):
        raise ValueError(
            f"soft targets are for single-label classification; this model's problem_type is "
            f"{config.problem_type!r}: set --mixup_alpha, --cutmix_alpha and --label_smoothing_factor to 0"
        )
    return collator


def warmup_steps(training_args, train_examples: int | None) -> int:
    """`warmup_epochs` in optimizer steps: epochs × the optimizer steps of an epoch on `train_examples` examples
    (per device batch × processes × accumulation)."""
    if train_examples is None:
        raise ValueError("--warmup_epochs counts epochs, which a stream has not; give --warmup_steps")
    batch = training_args.per_device_train_batch_size * training_args.world_size
    steps_per_epoch = max(1, math.ceil(train_examples / batch) // training_args.gradient_accumulation_steps)
    return max(1, round(training_args.warmup_epochs * steps_per_epoch))


def examples(dataset) -> int | None:
    """How many examples a dataset holds, or None for a stream."""
    return None if isinstance(dataset, IterableDataset) else len(dataset)


def train_model(trainer: Trainer, resume_from_checkpoint: str | None = None) -> dict:
    """Train, then save the model (whole under FSDP, `save_whole_model`; the averaged weights with EMA), its
    processor, the trainer state and `train_results.json`; the train metrics."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, EMACallback):
            callback.resume_from = resume_from_checkpoint  # the average and the training weights come back from it
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    save_whole_model(trainer)
    metrics = {**result.metrics}
    if examples(trainer.train_dataset) is not None:
        metrics["train_samples"] = examples(trainer.train_dataset)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    return metrics


def save_whole_model(trainer: Trainer) -> None:
    """`trainer.save_model()` as `from_pretrained` reads it. Under FSDP with sharded checkpoints `save_model` writes
    no weights, so for this save the shards are gathered into one state dict (a collective: every process calls
    this), which the main process writes as `model.safetensors`."""
    if not trainer.is_fsdp_enabled:
        trainer.save_model()
        return
    plugin = trainer.accelerator.state.fsdp_plugin
    kept = plugin.state_dict_type
    plugin.set_state_dict_type("FULL_STATE_DICT")
    try:
        trainer.save_model()
    finally:
        plugin.set_state_dict_type(kept)  # checkpoints of a later `train` stay as configured


def evaluate_model(trainer: Trainer) -> dict:
    """Evaluate on the evaluation split and save `eval_results.json`; the evaluation metrics."""
    metrics = {**trainer.evaluate(), "eval_samples": len(trainer.eval_dataset)}
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    return metrics


def evaluate_test(trainer: NACTrainer) -> dict:
    """Evaluate once on the test split, when the data has one, and save `test_results.json` (and add it to
    `all_results.json`); the test metrics (`test_top1_accuracy`, ...), or nothing without a test split."""
    if getattr(trainer, "test_dataset", None) is None:
        return {}
    metrics = {**trainer.evaluate(trainer.test_dataset, metric_key_prefix="test"),
               "test_samples": len(trainer.test_dataset)}
    trainer.log_metrics("test", metrics)
    trainer.save_metrics("test", metrics)
    return metrics


def record_run(trainer: Trainer, data: ClassificationData, model_args: ModelArguments, data_args: DataArguments,
               metrics: dict) -> None:
    """Write what the run was beside its model: transformers' model card and `training_details.json` (data,
    schedule, batch, hardware, time, versions), which `nac_hf.hub` renders into the published card."""
    card = {"finetuned_from": model_args.model_name_or_path, "tasks": MODALITIES[data.modality].pipeline_task}
    if data_args.dataset_name:
        card["dataset"] = data_args.dataset_name
    trainer.create_model_card(**card)
    details = training_details(trainer, data, model_args, data_args, metrics.get("train_runtime"))
    path = Path(trainer.args.output_dir) / TRAINING_DETAILS
    path.with_suffix(".json.partial").write_text(json.dumps(details, indent=2) + "\n")
    os.replace(path.with_suffix(".json.partial"), path)  # never a half-written file in place of a whole one


def training_details(trainer: Trainer, data: ClassificationData, model_args: ModelArguments, data_args, runtime):
    """What a model card says of the run: data, schedule, batch, hardware, time and versions."""
    args = trainer.args
    processes = args.world_size
    # What the run computed in: --bf16/--fp16, or the mixed precision of an accelerate config or launch flag.
    mixed = str(trainer.accelerator.mixed_precision)
    precision = "float32" if mixed == "no" else f"{mixed} mixed precision"
    if torch.cuda.is_available() and not args.use_cpu:
        device = torch.cuda.get_device_name(0)
    else:
        device = f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    return {
        "dataset": data.source,
        "dataset_id": data_args.dataset_name or (DIGITS_DATASET_ID if data.source == DIGITS_SOURCE else None),
        "modality": data.modality,
        "eval_split": data.eval_split,
        "test_split": data.test_split,
        "train_examples": examples(trainer.train_dataset),
        "shots_per_label": data_args.shots_per_label,
        "streamed": isinstance(trainer.train_dataset, IterableDataset),
        "eval_examples": len(trainer.eval_dataset),
        "test_examples": len(test) if (test := getattr(trainer, "test_dataset", None)) is not None else None,
        "labels": data.label_names,
        "start": model_args.model_name_or_path or f"a new model, preset {preset_of(model_args, data)!r}"
        + (f" with {model_args.config_overrides}" if model_args.config_overrides else ""),
        "base_model": model_args.model_name_or_path,
        "epochs": args.num_train_epochs,
        "steps": trainer.state.global_step,
        "per_device_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "processes": processes,
        "effective_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * processes,
        "learning_rate": args.learning_rate,
        "lr_scheduler": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup": args.warmup_steps,
        "weight_decay": args.weight_decay,
        "precision": precision,
        "hardware": f"{processes} × {device}",
        "train_runtime_s": runtime,
        "seed": args.seed,
        **recipe_details(trainer, data_args),
        "versions": {"nac_hf": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
    }


def recipe_details(trainer: Trainer, data_args: DataArguments) -> dict:
    """What a model card says of the recipe of a run: its name, warm-up in epochs, augmentation, weight averaging and
    how the kept checkpoint was chosen."""
    args = trainer.args
    mixing = getattr(trainer, "train_collator", None)
    augmentation = []
    if data_args.augment:
        augmentation.append("random-resized crop" if data_args.crop == "random-resized" else "padded random crop")
        if data_args.horizontal_flip:
            augmentation.append("horizontal flip")
    if mixing is not None:
        augmentation += [f"{name} {value:g}" for name, value in (
            ("mixup", mixing.mixup_alpha), ("cutmix", mixing.cutmix_alpha), ("label smoothing", mixing.label_smoothing)
        ) if value]
    if data_args.repeated_augmentations > 1:
        augmentation.append(f"repeated augmentation ×{data_args.repeated_augmentations}")
    selection = f"best {args.metric_for_best_model} on the evaluation split" if args.load_best_model_at_end else "last"
    return {
        "recipe": getattr(args, "recipe", None),
        "warmup_epochs": getattr(trainer, "warmup_epochs", None),
        "augmentation": ", ".join(augmentation) or None,
        "ema_decay": getattr(args, "ema_decay", None),
        "model_selection": selection,
    }


def training_arguments_defaults() -> dict:
    """The `TrainingArguments` defaults of `scripts/train.py`: the settings of its main job (the digits default)."""
    return dict(
        output_dir="outputs/nac-digits",
        do_train=True,
        do_eval=True,
        num_train_epochs=60,
        per_device_train_batch_size=64,
        per_device_eval_batch_size=256,
        learning_rate=2e-3,
        weight_decay=0.05,
        warmup_steps=0.05,
        lr_scheduler_type="cosine",
        do_predict=True,  # the test split, when the data has one, once at the end
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        logging_steps=10,
        report_to="none",
        ddp_find_unused_parameters=False,
        # Without an accelerator, say so: multi-process runs then use DDP over gloo (torchrun/accelerate on CPUs),
        # where otherwise every process would train its own copy.
        use_cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()),
        seed=42,
    )


__all__ = [
    "ModelArguments",
    "NACTrainingArguments",
    "DataArguments",
    "TOP_K_ACCURACY",
    "TRAINING_DETAILS",
    "build_model",
    "build_processor",
    "end_distributed",
    "evaluate_model",
    "evaluate_test",
    "mixing_collator",
    "NACTrainer",
    "prepare_splits",
    "recipe_details",
    "warmup_steps",
    "is_complete_checkpoint",
    "last_complete_checkpoint",
    "load_run_data",
    "make_compute_metrics",
    "make_trainer",
    "new_processor",
    "parse_config_overrides",
    "prepare_datasets",
    "record_run",
    "reinitialize",
    "resolve_resume",
    "save_whole_model",
    "keep_freed_memory",
    "set_cpu_threads",
    "train_model",
    "training_arguments_defaults",
    "training_details",
]
