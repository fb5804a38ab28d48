"""Training NACs with `Trainer`, step by step: the data of a run, the model and processor it starts from, the
`Trainer` with its transforms and offline top-k metrics, training (resuming from the last complete checkpoint),
evaluation, and the record a model card is made from. `scripts/train.py` calls these steps in order and publishes the
result with `nac_hf.hub`."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import json
import logging
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
from .configuration_nac import NACConfig, preset_fields
from .data import (
    DIGITS_DATASET_ID,
    DIGITS_SOURCE,
    ClassificationData,
    DataArguments,
    augment_images,
    load_classification_data,
)
from .modalities import MODALITIES, modality_of
from .modeling_nac import CheckpointMismatchError, NACForClassification


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

    def __post_init__(self):
        super().__post_init__()
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"--cpu_threads must be at least 1, got {self.cpu_threads}")


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


def end_distributed() -> None:
    """Leave the process group this process joined (under `torchrun` or `accelerate launch`), if any: a barrier, then
    `destroy_process_group`. Left to the interpreter's exit, the teardown of a gloo group sometimes aborted a process
    that had finished its run ("terminate called without an active exception"), and torchrun reported the run as
    failed; destroying the group without the barrier first could hang a rank."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
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
    """Train and evaluation datasets that yield model inputs and `labels`, and the collator that batches them.

    Inputs of one shape (images) are made from the raw column as they are read, augmented in training with
    `data_args.augment`; inputs whose length varies (texts) are encoded once, cut to `data_args.max_length`, and
    padded per batch."""
    reads = MODALITIES[data.modality]
    if reads.length_axis is None:
        return _transformed_datasets(data, processor, data_args, reads.main_input_name)
    longest = reads.longest(config)
    return _encoded_datasets(data, processor, min(data_args.max_length or longest, longest))


def _transformed_datasets(data: ClassificationData, processor, data_args: DataArguments, input_name: str):
    column, label = data.input_column, data.label_column

    def transform(augment: bool):
        def apply(batch):
            values = processor([example for example in batch[column]], return_tensors="pt")[input_name]
            if augment:
                values = torch.stack([augment_images(value, data_args.horizontal_flip) for value in values])
            return {input_name: list(values), "labels": batch[label]}

        return apply

    train = data.dataset["train"]
    if isinstance(train, IterableDataset):  # transformed as it is read, in the dataloader's workers
        train = train.map(transform(data_args.augment), batched=True, remove_columns=[column, label])
    else:
        train = train.with_transform(transform(data_args.augment))
    evaluation = data.dataset["validation"].with_transform(transform(False))
    return train, evaluation, DefaultDataCollator()


def _encoded_datasets(data: ClassificationData, processor, max_length: int):
    column, label = data.input_column, data.label_column

    def encode(batch):
        encoded = processor(batch[column], truncation=True, max_length=max_length)
        return {**encoded, "labels": batch[label]}

    encoded = {}
    for name, split in data.dataset.items():
        progress = {} if isinstance(split, IterableDataset) else {"desc": "bytes"}  # a stream maps as it is read
        encoded[name] = split.map(encode, batched=True, remove_columns=[column, label], **progress)
    return encoded["train"], encoded["validation"], DataCollatorWithPadding(processor)


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
    """A checkpoint folder `Trainer` finished writing: its trainer state (written last) parses and its weights open."""
    folder = Path(folder)
    try:
        json.loads((folder / "trainer_state.json").read_text())
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
            "model.safetensors); pass another, or 'last' for the newest complete one in --output_dir"
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


def make_trainer(
    model, processor, data: ClassificationData, data_args: DataArguments, training_args: TrainingArguments,
    compute_metrics=None,
) -> Trainer:
    """A `Trainer` for `model` on `data`: its transforms, collator and top-k metrics. `training_args` is not changed:
    the Trainer gets a copy that keeps the raw columns (the transforms make the model inputs from them) and does not
    push checkpoints (a run is published once, at the end, with `nac_hf.hub.publish`)."""
    changes = {"remove_unused_columns": False, "push_to_hub": False}
    if isinstance(data.dataset["train"], IterableDataset):
        # Each process reads its own part of the stream, rather than the first process reading for all.
        changes["accelerator_config"] = dataclasses.replace(training_args.accelerator_config, dispatch_batches=False)
    args = dataclasses.replace(training_args, **changes)
    train_dataset, eval_dataset, collator = prepare_datasets(data, processor, data_args, model.config)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        data_collator=collator,
        compute_metrics=compute_metrics or make_compute_metrics(len(data.label_names)),
    )
    logger.info(
        "%s: %s train / %d evaluation examples, %d labels; model with %.2f M parameters",
        data.source, examples(train_dataset) or "streamed", len(eval_dataset), len(data.label_names),
        model.num_parameters() / 1e6,
    )
    return trainer


def examples(dataset) -> int | None:
    """How many examples a dataset holds, or None for a stream."""
    return None if isinstance(dataset, IterableDataset) else len(dataset)


def train_model(trainer: Trainer, resume_from_checkpoint: str | None = None) -> dict:
    """Train, then save the model, its processor, the trainer state and `train_results.json`; the train metrics."""
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trainer.save_model()
    metrics = {**result.metrics}
    if examples(trainer.train_dataset) is not None:
        metrics["train_samples"] = examples(trainer.train_dataset)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    return metrics


def evaluate_model(trainer: Trainer) -> dict:
    """Evaluate on the evaluation split and save `eval_results.json`; the evaluation metrics."""
    metrics = {**trainer.evaluate(), "eval_samples": len(trainer.eval_dataset)}
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
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
    if args.bf16 or args.fp16:
        precision = "bf16 mixed precision" if args.bf16 else "fp16 mixed precision"
    else:
        precision = "float32"
    if torch.cuda.is_available() and not args.use_cpu:
        device = torch.cuda.get_device_name(0)
    else:
        device = f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    return {
        "dataset": data.source,
        "dataset_id": data_args.dataset_name or (DIGITS_DATASET_ID if data.source == DIGITS_SOURCE else None),
        "modality": data.modality,
        "eval_split": data.eval_split,
        "train_examples": examples(trainer.train_dataset),
        "streamed": isinstance(trainer.train_dataset, IterableDataset),
        "eval_examples": len(trainer.eval_dataset),
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
        "versions": {"nac_hf": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
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
    "keep_freed_memory",
    "set_cpu_threads",
    "train_model",
    "training_arguments_defaults",
    "training_details",
]
