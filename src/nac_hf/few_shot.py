"""Few-shot adaptation of a pretrained classifier to a new label set with `Trainer`.

From a checkpoint, each run samples `k` training examples per label of the new task (stratified, fixed by a seed),
swaps the head for one of the new labels, trains in one of three modes and evaluates top-1 on the full evaluation
split of the new task:

- `full`: every parameter trains;
- `head`: a linear probe; only the head (a NAC's `head_norm` and `classifier`) trains;
- `codes`: only the module codes (`nac.generator.codes`) and the head train. This is how a NAC adapts: the shared
  weights stay as they are and the modules change the functions they compute through their codes;
- `lora`: low-rank adapters (PEFT's LoRA) on the attention projections, and the head (needs `pip install peft`);
- `extend`: capacity extension (a NAC's `add_modules`): new processor modules join the learned graph, and only their
  codes and signatures and the head train; every other parameter stays as it was, bit for bit;
- `prototype`: nothing trains. Each new label's prototype is the mean of its shots' features (what the classifier
  reads: a NAC's normalised pooled output, a ViT's normalised [CLS] state), each L2-normalised, and an example takes
  the label of the prototype nearest by cosine (a nearest-class-mean classifier).

`scripts/few_shot.py` adapts a checkpoint once and saves the adapted model; `python -m benchmarks.few_shot` repeats
adaptations over modes, shot counts and seeds.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from datasets import DatasetDict
from transformers import (
    AutoConfig,
    PreTrainedModel,
    PrinterCallback,
    TrainingArguments,
    set_seed,
)

from .data import ClassificationData, DataArguments, load_classification_data, sample_shots
from .modalities import MODALITIES
from .modeling_nac import ADDED_MODULE_PARAMETERS
from .training import (
    ModelArguments,
    build_model,
    build_processor,
    make_compute_metrics,
    make_trainer,
    prepare_datasets,
    reinitialize,
)


MODES = ("full", "head", "codes", "lora", "extend", "prototype")
# What trains in each mode, as the card of an adapted model says it.
MODE_DESCRIPTIONS = {
    "full": "every parameter trained",
    "head": "only the head (the final norm and the classifier) trained, a linear probe",
    "codes": "only the module codes and the head trained; the weights the modules share stayed as they were",
    "lora": "LoRA adapters on the attention projections and the head trained, then merged into the weights",
    "extend": "new processor modules joined the learned graph, and only they and the head trained",
    "prototype": "nothing trained: each label is the mean of its shots' features",
}
# The modes that train, each with its learning rate (`prototype` trains nothing).
TRAINED_MODES = tuple(mode for mode in MODES if mode != "prototype")

# The module codes of a NAC: what `codes` mode trains besides the head.
CODES_PARAMETER = "nac.generator.codes"


@dataclass(frozen=True)
class Head:
    """Where a model type keeps its classification head.

    `trainable`: name prefixes of the parameters that train in `head` mode (the final norm and the classifier).
    `classifier`: the submodule that maps to the labels; it is re-initialised for a new label set.
    """

    trainable: tuple[str, ...]
    classifier: str
    lora_targets: tuple[str, ...] = ()


# One entry per supported model type (`config.model_type`); a model type missing here cannot be adapted in `head`
# or `codes` mode, and gets a ValueError that says so.
HEADS: dict[str, Head] = {
    # LoRA on the shared weights of every attention (read-in, propagators, read-out): one adapter changes the
    # projection of all modules at once, each still modulated by its own code.
    "nac": Head(
        trainable=("head_norm.", "classifier."),
        classifier="classifier",
        lora_targets=("query.linear", "key.linear", "value.linear", "output.linear"),
    ),
    "vit": Head(
        trainable=("vit.layernorm.", "classifier."),
        classifier="classifier",
        lora_targets=("attention.query", "attention.key", "attention.value", "attention.output.dense"),
    ),
    # transformers' Perceiver image classifiers: the head is the classification decoder (its query attending to the
    # latents, and the final layer).
    "perceiver": Head(trainable=("perceiver.decoder.",), classifier="perceiver.decoder.decoder.final_layer"),
}

# Learning rate of each mode when none is given (Adam, constant, 100 steps). `full`, `head` and `codes` were chosen
# for the digits demo on held-out *training* images of labels 5-9 (5-shot, 3 seeds; never the test split), for the
# NAC and the ViT baseline alike: `full` was best at 1e-3 for both (of 1e-4 ... 3e-3), `head` at 1e-2 to 3e-2 for the
# ViT and flat over 1e-3 ... 3e-2 for the NAC, `codes` best at 1e-1 (of 3e-3 ... 3e-1). Codes are drawn with
# standard deviation 1, so they take a larger step than weights do. `lora` takes the common LoRA rate of 1e-3, not
# tuned here.
DEFAULT_LEARNING_RATES = {"full": 1e-3, "head": 1e-2, "codes": 1e-1, "lora": 1e-3, "extend": 1e-1}
LORA_RANK = 8


@dataclass
class FewShotArguments:
    """What to adapt, to how many shots, in which modes, and how often."""

    model_name_or_path: str = field(
        metadata={"help": "The pretrained checkpoint (folder or Hub id) to adapt; its head is replaced."}
    )
    shots: str = field(
        default="1,5,10", metadata={"help": "Training examples per label, comma-separated (e.g. '1,5,10')."}
    )
    seeds: int = field(
        default=5,
        metadata={"help": "Runs per mode and shot count, with seeds --seed, --seed + 1, ...; reported as mean ± std."},
    )
    modes: str = field(
        default="full,head,codes",
        metadata={
            "help": "Adaptation modes, comma-separated: 'full' (all parameters), 'head' (linear probe: the final norm "
            "and the classifier), 'codes' (a NAC's module codes and the head), 'lora' (LoRA adapters of rank 8 on the "
            "attention projections, and the head; needs peft), 'extend' (--extend_modules new processor modules of a "
            "NAC, and the head), 'prototype' (no training: the nearest class mean of the shots' features)."
        },
    )
    extend_modules: int = field(
        default=8, metadata={"help": "With mode 'extend': how many processor modules to add."}
    )
    extend_init: str = field(
        default="mirror",
        metadata={"help": "With mode 'extend': 'mirror' (copies of existing modules) or 'random' new modules."},
    )
    full_learning_rate: float = field(
        default=DEFAULT_LEARNING_RATES["full"], metadata={"help": "Learning rate of 'full' mode."}
    )
    head_learning_rate: float = field(
        default=DEFAULT_LEARNING_RATES["head"], metadata={"help": "Learning rate of 'head' mode."}
    )
    codes_learning_rate: float = field(
        default=DEFAULT_LEARNING_RATES["codes"], metadata={"help": "Learning rate of 'codes' mode."}
    )
    lora_learning_rate: float = field(
        default=DEFAULT_LEARNING_RATES["lora"], metadata={"help": "Learning rate of 'lora' mode."}
    )
    extend_learning_rate: float = field(
        default=DEFAULT_LEARNING_RATES["extend"], metadata={"help": "Learning rate of 'extend' mode."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and datasets are kept."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Load a checkpoint's own code (for folders saved where nac_hf is absent)."}
    )

    def __post_init__(self):
        self.shot_counts = parse_int_list(self.shots, "--shots")
        if min(self.shot_counts) < 1:
            raise ValueError(f"--shots must be positive counts of examples per label, got {self.shots!r}")
        self.mode_list = [mode.strip() for mode in self.modes.split(",") if mode.strip()]
        unknown = [mode for mode in self.mode_list if mode not in MODES]
        if unknown or not self.mode_list:
            raise ValueError(f"--modes takes a comma-separated subset of {list(MODES)}, got {self.modes!r}")
        if self.extend_modules < 1:
            raise ValueError(f"--extend_modules must be at least 1, got {self.extend_modules}")
        if self.extend_init not in ("mirror", "random"):
            raise ValueError(f"--extend_init takes 'mirror' or 'random', got {self.extend_init!r}")
        if self.seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {self.seeds}")
        for mode in TRAINED_MODES:
            if self.learning_rate(mode) <= 0:
                raise ValueError(f"--{mode}_learning_rate must be positive, got {self.learning_rate(mode)}")

    def learning_rate(self, mode: str) -> float | None:
        """The mode's learning rate; None for `prototype`, which does not train."""
        return getattr(self, f"{mode}_learning_rate", None)


def parse_int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated integers (e.g. '1,5,10'), got {text!r}") from None


def few_shot_training_defaults() -> dict:
    """The `TrainingArguments` defaults of `scripts/few_shot.py`.

    Every run takes a fixed number of optimizer steps (100) whatever the number of shots, in batches of up to 32
    examples, at a constant learning rate (the mode's) without weight decay: with 5 to 50 training images, a schedule
    counted in epochs would give the 1-shot runs 10x fewer updates than the 10-shot ones. Nothing is saved or
    evaluated during training; each run is evaluated once at the end, on the full evaluation split.
    """
    return dict(
        output_dir="outputs/nac-few-shot",
        do_train=True,
        do_eval=True,
        max_steps=100,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=256,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()),
        seed=0,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Models: loading with a new head, freezing by mode
# ---------------------------------------------------------------------------------------------------------------------


def head_of(model: PreTrainedModel) -> Head:
    model_type = model.config.model_type
    if model_type not in HEADS:
        raise ValueError(
            f"nac_hf.few_shot does not know where a {model_type!r} model keeps its head; supported model types: "
            f"{sorted(HEADS)} (add an entry to nac_hf.few_shot.HEADS)"
        )
    return HEADS[model_type]


def trainable_parameter_names(model: PreTrainedModel, mode: str) -> list[str]:
    """Names of the parameters that train in `mode`."""
    names = [name for name, _ in model.named_parameters()]
    if mode == "full":
        return names
    if mode == "lora":
        if not hasattr(model, "peft_config"):
            raise ValueError("mode 'lora' trains LoRA adapters: wrap the model with nac_hf.few_shot.add_lora first")
        return [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    if mode not in MODES:
        raise ValueError(f"unknown adaptation mode {mode!r}; choose one of {list(MODES)}")
    head = head_of(model)
    selected = [name for name in names if name.startswith(head.trainable)]
    if not selected:
        raise ValueError(f"no parameter of this {model.config.model_type!r} model starts with {head.trainable}")
    if mode == "codes":
        if CODES_PARAMETER not in names:
            raise ValueError(
                f"mode 'codes' trains the module codes ({CODES_PARAMETER}) and this {model.config.model_type!r} "
                "model has none; use mode 'full' or 'head' for it"
            )
        selected.append(CODES_PARAMETER)
    if mode == "extend":
        added = [name for name in ADDED_MODULE_PARAMETERS if name in names]
        if not added:
            raise ValueError(
                f"mode 'extend' trains added modules ({', '.join(ADDED_MODULE_PARAMETERS)}) and this "
                f"{model.config.model_type!r} model has none; add them with model.add_modules(n) first"
            )
        selected.extend(added)
    return selected


def add_lora(model: PreTrainedModel, rank: int = LORA_RANK):
    """The model wrapped by PEFT with LoRA adapters on its attention projections; the adapters and the head train,
    everything else is frozen."""
    try:
        import peft
    except ImportError:
        raise ImportError('mode \'lora\' needs peft: pip install -e ".[peft]" (or pip install peft)') from None
    head = head_of(model)
    if not head.lora_targets:
        raise ValueError(f"no LoRA target modules are known for {model.config.model_type!r} models")
    adapter = peft.LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=list(head.lora_targets),
        modules_to_save=[prefix.rstrip(".") for prefix in head.trainable],
    )
    return peft.get_peft_model(model, adapter)


def freeze_for_mode(model: PreTrainedModel, mode: str) -> list[str]:
    """Let exactly the parameters of `mode` require gradients; returns their names. A `lora` model must be wrapped
    by `add_lora` first (PEFT has set what trains)."""
    trainable = set(trainable_parameter_names(model, mode))
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in trainable)
    return sorted(trainable)


def reset_classifier(model: PreTrainedModel) -> None:
    """Draw the classifier afresh with the model's own initialisation.

    `ignore_mismatched_sizes` re-initialises the classifier only when the number of labels changes; a new task with
    as many labels as the old one (digits 0-4 -> 5-9) would keep the old task's classifier, whose rows mean other
    labels. So the classifier is always re-drawn here.
    """
    reinitialize(model, model.get_submodule(head_of(model).classifier))


def load_for_labels(
    model_name_or_path: str,
    data: ClassificationData,
    cache_dir: str | None = None,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """The checkpoint with a freshly drawn classifier for the data's labels (draws from the global RNG: seed first)."""
    common = {"cache_dir": cache_dir, "trust_remote_code": trust_remote_code}
    config = AutoConfig.from_pretrained(model_name_or_path, **common)
    if config.model_type == "nac":
        model_args = ModelArguments(model_name_or_path=model_name_or_path, **common)
        model = build_model(model_args, data)
    else:
        auto = MODALITIES[data.modality].auto_model()
        model = auto.from_pretrained(
            model_name_or_path,
            num_labels=len(data.label_names),
            id2label=data.id2label,
            label2id=data.label2id,
            ignore_mismatched_sizes=True,
            **common,
        )
    reset_classifier(model)
    return model


# ---------------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------------


def adapt(
    args: FewShotArguments,
    data: ClassificationData,
    data_args: DataArguments,
    training_args: TrainingArguments,
    processor,
    mode: str,
    shots: int,
    seed: int,
    compute_metrics=None,
) -> tuple[PreTrainedModel, dict]:
    """One adaptation: sample the shots, load the model with a new classifier, freeze by mode, train, evaluate (or,
    for `prototype`, classify by the nearest class mean of the shots' features). Returns the adapted model (with
    LoRA, still wrapped by PEFT) and the run's record."""
    run_args = copy.copy(training_args)
    run_args.seed = seed
    run_args.data_seed = seed
    if mode != "prototype":
        run_args.learning_rate = args.learning_rate(mode)
    set_seed(seed)
    train_split = sample_shots(data.dataset["train"], data.label_column, shots, seed)
    run_data = dataclasses.replace(
        data, dataset=DatasetDict(train=train_split, validation=data.dataset["validation"])
    )
    model = load_for_labels(args.model_name_or_path, run_data, args.cache_dir, args.trust_remote_code)
    record = {"seed": seed, "train_examples": len(train_split)}
    if mode == "prototype":
        accuracy = prototype_accuracy(model, processor, run_data, data_args)
        return model, {**record, "top1_accuracy": accuracy, "eval_loss": None, "train_loss": None,
                       "trainable_parameters": 0}
    if mode == "lora":
        model = add_lora(model)
    if mode == "extend":
        model.add_modules(args.extend_modules, init=args.extend_init, seed=seed)
    trainable = freeze_for_mode(model, mode)
    trainer = make_trainer(model, processor, run_data, data_args, run_args, compute_metrics)
    if run_args.logging_strategy == "no":
        # Each run's result is logged once by its caller; without logging asked for, Trainer's end-of-run dicts
        # would only repeat it, run after run.
        trainer.remove_callback(PrinterCallback)
    result = trainer.train()
    metrics = trainer.evaluate()
    return model, {
        **record,
        "top1_accuracy": metrics["eval_top1_accuracy"],
        "eval_loss": metrics["eval_loss"],
        "train_loss": result.training_loss,
        "steps": trainer.state.global_step,
        "trainable_parameters": sum(model.get_parameter(name).numel() for name in trainable),
    }


def few_shot_run(*args, **kwargs) -> dict:
    """The record of one adaptation (`adapt`), without the model."""
    return adapt(*args, **kwargs)[1]


@torch.no_grad()
def classifier_inputs(model: PreTrainedModel, dataset, collator, batch_size: int = 256):
    """What the model's classifier reads for every example of a transformed split, L2-normalised `(N, D)`, and the
    labels `(N,)`."""
    model.eval()
    device = next(model.parameters()).device
    captured, labels = [], []
    classifier = model.get_submodule(head_of(model).classifier)
    handle = classifier.register_forward_pre_hook(lambda module, args: captured.append(args[0].flatten(1).float()))
    try:
        for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
            labels.append(batch.pop("labels"))
            model(**{name: value.to(device) for name, value in batch.items()})
    finally:
        handle.remove()
    return F.normalize(torch.cat(captured), dim=-1).cpu(), torch.cat(labels)


def prototype_accuracy(model: PreTrainedModel, processor, data: ClassificationData, data_args: DataArguments) -> float:
    """Top-1 on the evaluation split of a nearest-class-mean classifier built from the training split (the shots):
    each label's prototype is the normalised mean of its shots' normalised features, and an example takes the label of
    the prototype of highest cosine. The shots are read as evaluation examples are (no augmentation)."""
    shots_only = dataclasses.replace(data, dataset=DatasetDict(train=data.dataset["train"],
                                                               validation=data.dataset["train"]))
    _, shots, collator = prepare_datasets(shots_only, processor, data_args, model.config)
    _, evaluation, _ = prepare_datasets(data, processor, data_args, model.config)
    shot_features, shot_labels = classifier_inputs(model, shots, collator)
    features, labels = classifier_inputs(model, evaluation, collator)
    prototypes = torch.stack([shot_features[shot_labels == label].mean(0) for label in range(len(data.label_names))])
    predictions = (features @ F.normalize(prototypes, dim=-1).T).argmax(-1)
    return (predictions == labels).float().mean().item()


__all__ = [
    "CODES_PARAMETER",
    "DEFAULT_LEARNING_RATES",
    "FewShotArguments",
    "MODE_DESCRIPTIONS",
    "HEADS",
    "Head",
    "MODES",
    "TRAINED_MODES",
    "classifier_inputs",
    "prototype_accuracy",
    "LORA_RANK",
    "adapt",
    "few_shot_run",
    "few_shot_training_defaults",
    "add_lora",
    "freeze_for_mode",
    "load_for_labels",
    "reset_classifier",
    "sample_shots",
    "trainable_parameter_names",
]
