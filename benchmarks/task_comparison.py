"""python -m benchmarks.task_comparison --task {reviews,listops,shapes} --output_dir DIR
    [--results docs/results/TASK.json] [--seeds 3] [--tuning_trials 3] [--epochs E] [--seed 42] [--data_seed 0]
    [the task's flags]

A NAC (the task's preset: `reviews`, `listops` or `shapes`) against a baseline of the same size (parameters within
10 %, checked before anything trains) on one of the tasks of `benchmarks.tasks`, under the fair protocol of
`benchmarks.protocol`:

- **Data**: the task built with --data_seed and its flags (as `python -m benchmarks.tasks` builds it), written to
  DIR/data with `save_to_disk` and read back as any `--dataset_name` folder is; its validation and test splits are
  the task's own. Every text must fit the preset's positions (the check names the flag that shortens them).
- **Baselines**: for the texts, a byte-level BERT (transformers' `BertForSequenceClassification`) with the NAC's
  vocabulary, padding id and positions, reading the same `input_ids` and `attention_mask` from the same tokenizer
  (`NACByteTokenizer`); for the shapes, a PointNet (`PointNetForClassification`: a shared MLP on every point,
  max-pooled over the cloud, an MLP head) reading the same `points`.
- **Tuning**: both families get the same --tuning_trials trials of the random search (`protocol.trials`: a learning
  rate and a regularisation strength s), trained from --seed and scored on the validation split; each keeps its
  best. s scales the NAC preset's drop-path (0.1 s), module dropout (the preset's, 0) and code noise (0.05 s), BERT's
  hidden and attention dropout (0.1 s each) and PointNet's head dropout (0.1 s).
- **Seeds**: the best trial trained from --seeds seeds (--seed, whose model is the tuning's own, and the next ones),
  each as scripts/train.py trains (`nac_hf.training`: `make_trainer`, its defaults for --epochs epochs, the texts
  batched by length for both families). Only when every model is trained is each evaluated once on the test split.
- **Statistics**: test top-1 of each seed, their mean and standard deviation, and the NAC − baseline differences
  paired by seed with a Student-t 95 % interval over the seeds (`protocol.t_interval`), all as fractions.

Writes --results (default docs/results/TASK.json) and the NAC of the best validation top-1 as a repository folder,
DIR/nac-TASK (weights, config and code, tokenizer, results and a model card; checked to load without nac_hf:
`nac_hf.hub.publish` with `dry_run`). Publish it with `python scripts/push_to_hub.py --checkpoint CHECKPOINT
--repo_id org/name`, CHECKPOINT being its training folder (`published_from` in the results). Every training is kept
in DIR: a rerun into DIR goes on where it stopped (more --seeds add trainings), and refuses a kept model whose config is
not what the task's preset now builds.

The default epochs (reviews 5, listops 2, shapes 6) aim at a whole comparison, ten trainings of two families, within
about an hour per task on two CPU cores. The baselines take most of it: BERT reads every byte in every layer where
the NAC's input modules read them once, and PointNet's shared MLP runs on every point.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from datasets import DatasetDict, load_from_disk
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    TrainingArguments,
    set_seed,
)
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput

from nac_hf import NACConfig, NACForClassification
from nac_hf.data import DataArguments, load_classification_data
from nac_hf.hub import publish
from nac_hf.training import (
    TRAINING_DETAILS,
    ModelArguments,
    evaluate_model,
    evaluate_test,
    make_trainer,
    new_processor,
    record_run,
    train_model,
    training_arguments_defaults,
)

from . import protocol
from .common import argument_parser, mean_std, quiet_libraries, write_json
from .tasks import listops, reviews, shapes


MAX_SIZE_GAP = 0.10  # a baseline's parameters differ from the NAC's by at most this fraction of them
NAC_REGULARISERS = ("drop_path_rate", "module_dropout", "code_noise")  # at strength 1, the preset's values


# ------------------------------------------------------------------------------------------------------------------
# The point-cloud baseline


class PointNetConfig(PretrainedConfig):
    r"""
    Configuration of a [`PointNetForClassification`]: PointNet (Qi et al., CVPR 2017) without its input and feature
    transforms.

    Args:
        point_widths (`list[int]`, defaults to `[64, 128, 512]`): widths of the MLP shared by every point (each layer
            a linear map, a layer norm and a ReLU); the last is the width of the pooled cloud feature.
        head_widths (`list[int]`, defaults to `[720, 256]`): widths of the head's hidden layers (linear, layer norm,
            ReLU, dropout), before the linear map to the labels.
        dropout (`float`, defaults to 0.1): dropout after each hidden layer of the head (training only).
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every layer norm.

    Any other keyword (`num_labels`, `id2label`, ...) goes to [`PretrainedConfig`].
    """

    model_type = "pointnet"

    def __init__(self, point_widths=(64, 128, 512), head_widths=(720, 256), dropout: float = 0.1,
                 layer_norm_eps: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.point_widths = list(point_widths)
        self.head_widths = list(head_widths)
        self.dropout = dropout
        self.layer_norm_eps = layer_norm_eps


def mlp(widths: list[int], eps: float, dropout: float = 0.0) -> nn.Sequential:
    """Linear → LayerNorm → ReLU (→ Dropout) from each width to the next."""
    layers = []
    for width_in, width_out in zip(widths, widths[1:]):
        layers += [nn.Linear(width_in, width_out), nn.LayerNorm(width_out, eps=eps), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class PointNetForClassification(PreTrainedModel):
    """A point-cloud classifier: a shared MLP on every point `(B, N, 3)`, max-pooled over the real points
    (`points_mask`), then an MLP head. The order of the points does not matter."""

    config_class = PointNetConfig
    base_model_prefix = "pointnet"
    main_input_name = "points"

    def __init__(self, config: PointNetConfig):
        super().__init__(config)
        eps = config.layer_norm_eps
        self.point_mlp = mlp([3, *config.point_widths], eps)
        self.head = mlp([config.point_widths[-1], *config.head_widths], eps, config.dropout)
        self.classifier = nn.Linear(config.head_widths[-1], config.num_labels)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # PyTorch's own initialisation of each layer, through transformers' functions, which leave loaded weights be.
        if isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(module.in_features)
            init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    def forward(self, points: torch.Tensor, points_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> SequenceClassifierOutput:
        """`points` `(B, N, 3)`; `points_mask` `(B, N)`, 1 for a real point and 0 for padding; `labels` `(B,)`."""
        if points.dim() != 3 or points.shape[-1] != 3:
            raise ValueError(f"expected points of shape (batch, points, 3), got {tuple(points.shape)}")
        features = self.point_mlp(points)  # (B, N, F)
        if points_mask is not None:
            features = features.masked_fill(~points_mask.bool().unsqueeze(-1), float("-inf"))
        logits = self.classifier(self.head(features.amax(dim=1)))  # (B, num_labels)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


# ------------------------------------------------------------------------------------------------------------------
# The families and the tasks


@dataclass(frozen=True)
class Family:
    name: str
    display: str
    model_class: type[PreTrainedModel]
    # (task, label names, strength) -> the config of a model of the task's size for these labels
    config: Callable[["Task", list[str], float], PretrainedConfig]

    def build(self, task: "Task", labels: list[str], strength: float) -> PreTrainedModel:
        """A new model of `config(task, labels, strength)`."""
        return self.model_class(self.config(task, labels, strength))


@dataclass(frozen=True)
class Task:
    name: str  # also the NAC preset's
    build: Callable[..., DatasetDict]  # `build(seed, **settings)` of its benchmarks.tasks module
    arguments: type  # the dataclass of those settings
    labels: tuple[str, ...]
    baseline: Family
    baseline_size: dict  # the baseline's config fields that set its size (`Family.build` adds the rest)
    epochs: float  # of each training, by default
    # Trainer's order of the training examples: texts of similar lengths batched together ("group_by_length"), so
    # that little of a batch is padding; clouds, all of one size, in random order.
    train_sampling_strategy: str
    # Changes to the NAC preset's fields (none in a comparison; `benchmarks.preset_search` tries some).
    nac_overrides: dict = field(default_factory=dict)


def labelled(labels: list[str]) -> dict:
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {name: index for index, name in enumerate(labels)}}


def nac_regularisers(task: Task, strength: float) -> dict[str, float]:
    """The task preset's drop-path, module dropout and code noise, scaled by `strength`."""
    preset = NACConfig.from_preset(task.name)
    return {name: getattr(preset, name) * strength for name in NAC_REGULARISERS}


def nac_arguments(task: Task, strength: float) -> ModelArguments:
    """The NAC of `nac_config` as `scripts/train.py --preset --config_overrides` names it (its run's record)."""
    overrides = ",".join([*(f"{name}={value}" for name, value in task.nac_overrides.items()),
                          *(f"{name}={value:g}" for name, value in nac_regularisers(task, strength).items())])
    return ModelArguments(preset=task.name, config_overrides=overrides)


def nac_config(task: Task, labels: list[str], strength: float) -> NACConfig:
    return NACConfig.from_preset(task.name, **task.nac_overrides, **nac_regularisers(task, strength),
                                 **labelled(labels))


def bert_config(task: Task, labels: list[str], strength: float) -> BertConfig:
    """BERT over the NAC preset's byte ids: its vocabulary, padding id and positions; one token type."""
    preset = NACConfig.from_preset(task.name)
    dropout = protocol.BASELINE_DROPOUT * strength
    return BertConfig(
        vocab_size=preset.vocab_size, pad_token_id=preset.pad_token_id,
        max_position_embeddings=preset.max_position_embeddings, type_vocab_size=1, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, **task.baseline_size, **labelled(labels),
    )


def pointnet_config(task: Task, labels: list[str], strength: float) -> PointNetConfig:
    return PointNetConfig(dropout=protocol.BASELINE_DROPOUT * strength, **task.baseline_size, **labelled(labels))


NAC = Family("nac", "NAC", NACForClassification, nac_config)
BERT = Family("bert", "BERT", BertForSequenceClassification, bert_config)
POINTNET = Family("pointnet", "PointNet", PointNetForClassification, pointnet_config)

# BERT of 4 layers of width 128 (4 heads), MLP 304: 0.67 M parameters, as the `reviews` and `listops` NACs.
BERT_SIZE = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=304)

TASKS = {
    "reviews": Task("reviews", reviews.build, reviews.ReviewsArguments, tuple(reviews.LABELS), BERT, BERT_SIZE,
                    epochs=5, train_sampling_strategy="group_by_length"),
    "listops": Task("listops", listops.build, listops.ListOpsArguments, tuple(listops.LABELS), BERT, BERT_SIZE,
                    epochs=2, train_sampling_strategy="group_by_length"),
    # PointNet of widths 64, 128, 512 per point and a head of 720 and 256: 0.64 M parameters, as the `shapes` NAC.
    "shapes": Task("shapes", shapes.build, shapes.ShapesArguments, tuple(shapes.SHAPES), POINTNET,
                   dict(point_widths=[64, 128, 512], head_widths=[720, 256]), epochs=6,
                   train_sampling_strategy="random"),
}


# ------------------------------------------------------------------------------------------------------------------
# The comparison


@dataclass
class ComparisonArguments:
    task: str = field(metadata={"help": "The task to compare on.", "choices": list(TASKS)})
    output_dir: str = field(metadata={"help": "Its data, every trained model and the NAC folder (a rerun resumes)."})
    results: str | None = field(default=None, metadata={"help": "The results' json (unset: docs/results/TASK.json)."})
    seeds: int = field(default=3, metadata={"help": "Training seeds of each family's chosen setting (2 or more)."})
    tuning_trials: int = field(default=3, metadata={"help": "Random-search trials per family (the same for both)."})
    epochs: float | None = field(
        default=None,
        metadata={"help": "Epochs of each training (unset: the task's, " + ", ".join(
            f"{name} {task.epochs:g}" for name, task in TASKS.items()) + ")."},
    )
    seed: int = field(default=42, metadata={"help": "The first training seed, which the tuning trains from."})
    data_seed: int = field(default=0, metadata={"help": "Fixes the task's data and its splits."})

    def __post_init__(self):
        if self.seeds < 2:
            raise ValueError(f"--seeds must be at least 2 for an interval over seeds, got {self.seeds}")
        if self.tuning_trials < 1:
            raise ValueError(f"--tuning_trials must be at least 1, got {self.tuning_trials}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"--epochs must be positive, got {self.epochs}")


# Settings of a task that say where its sources are, not what it is.
WHERE_FROM = ("archive", "cache_dir")


def processor_of(task: Task):
    """The inputs both families read: the NAC preset's byte tokenizer, or None for point clouds (read as they are)."""
    return new_processor(NACConfig.from_preset(task.name))


def check_lengths(task: Task, dataset: DatasetDict) -> None:
    """Refuse a text task whose longest text (with the tokenizer's <cls> and <sep>) has more bytes than the preset
    reads: it would be cut short."""
    tokenizer = processor_of(task)
    if tokenizer is None:
        return
    longest = max(len(text.encode("utf-8")) for split in dataset.values() for text in split["text"])
    longest += tokenizer.num_special_tokens_to_add()
    if longest > tokenizer.model_max_length:
        raise ValueError(
            f"the longest {task.name} text is {longest} tokens with its <cls> and <sep>, and the `{task.name}` preset "
            f"reads {tokenizer.model_max_length}: shorten the texts (for ListOps, a lower --max_length) so that none "
            "is cut"
        )


def write_data(task: Task, settings: dict, data_seed: int, folder: Path) -> dict:
    """The task built with `data_seed` and `settings` and written to `folder / "data"` (once: a rerun reads it back);
    its record. Refuses a folder that holds the task built otherwise."""
    asked = {"task": task.name, "data_seed": data_seed,
             "settings": {name: value for name, value in settings.items() if name not in WHERE_FROM}}

    def compute() -> dict:
        dataset = task.build(data_seed, **settings)
        check_lengths(task, dataset)
        dataset.save_to_disk(str(folder / "data"))
        return {**asked, "sizes": {name: len(split) for name, split in dataset.items()},
                "description": dataset["train"].info.description}

    record = protocol.cached(folder / "data.json", compute)
    held = {name: record[name] for name in asked}
    if held != asked:
        raise ValueError(
            f"{folder / 'data'} holds the task built as {held}, and these flags ask for {asked}: give another "
            "--output_dir, or the flags it was built with"
        )
    return record


def majority_answer(folder: Path) -> dict:
    """What always answering the test split's most common label scores: the label and its test top-1 (the floor a
    model that learned nothing reaches)."""
    test = load_from_disk(str(folder / "data"))["test"]
    counts = Counter(test["label"])
    label, count = counts.most_common(1)[0]
    return {"label": test.features["label"].int2str(label), "test_top1": count / len(test)}


def training_arguments(task: Task, folder: Path, seed: int, **changes) -> TrainingArguments:
    """scripts/train.py's defaults, the task's batching, nothing saved or evaluated while training."""
    settings = {
        **training_arguments_defaults(), "output_dir": str(folder), "eval_strategy": "no", "save_strategy": "no",
        "logging_strategy": "no", "disable_tqdm": True, "do_predict": False, "seed": seed,
        "train_sampling_strategy": task.train_sampling_strategy, **changes,
    }
    return TrainingArguments(**settings)


def name_the_data(folder: Path, name: str) -> None:
    """Name the data in the run's record in `folder` (what its model card says it was trained on) by `name` rather
    than by the folder it was read from, which means nothing where the model is published."""
    path = folder / TRAINING_DETAILS
    details = json.loads(path.read_text())
    path.write_text(json.dumps({**details, "dataset": name, "dataset_id": None}, indent=2) + "\n")


def train(family: Family, task: Task, trial: protocol.Trial, seed: int, epochs: float, data_args: DataArguments,
          data_name: str, folder: Path) -> dict:
    """One model of `family` trained with `trial`'s setting from `seed` and saved to `folder` with its processor (a
    NAC with its run's record, which its model card is made from, the data called `data_name`): its validation
    top-1, parameters and time per step. Kept across reruns (`protocol.cached`)."""

    def compute() -> dict:
        data = load_classification_data(data_args, seed=seed)
        set_seed(seed)  # the initialisation draws from the global generator
        model = family.build(task, data.label_names, trial.strength)
        args = training_arguments(task, folder, seed, num_train_epochs=epochs, learning_rate=trial.learning_rate)
        trainer = make_trainer(model, processor_of(task), data, data_args, args)
        metrics = {**train_model(trainer), **evaluate_model(trainer)}
        if isinstance(model, NACForClassification):
            record_run(trainer, data, nac_arguments(task, trial.strength), data_args, metrics)
            name_the_data(folder, data_name)
        steps = trainer.state.global_step
        print(f"    {family.display} {trial.name} seed {seed}: validation top-1 "
              f"{100 * metrics['eval_top1_accuracy']:.2f} %, {steps} steps in {metrics['train_runtime']:.0f} s",
              flush=True)
        return {"validation": metrics["eval_top1_accuracy"], "parameters": model.num_parameters(),
                "trial": dataclasses.asdict(trial), "seed": seed, "folder": str(folder), "steps": steps,
                "train_seconds": round(metrics["train_runtime"], 1),
                "seconds_per_step": round(metrics["train_runtime"] / max(steps, 1), 3)}

    record = protocol.cached(folder / "protocol_training.json", compute)
    check_kept_model(folder, family.config(task, list(task.labels), trial.strength))
    return record


# Config entries that say how a model was saved, trained or first called, not what it is (Trainer gives a text model
# its tokenizer's special tokens and turns the cache off).
UNCOMPARED_CONFIG_KEYS = frozenset({"transformers_version", "architectures", "auto_map", "_name_or_path",
                                    "problem_type", "dtype", "torch_dtype", "bos_token_id", "eos_token_id",
                                    "use_cache"})


def check_kept_model(folder: Path, config: PretrainedConfig) -> None:
    """Refuse a training kept in `folder` whose model was built otherwise than `config` (say, the preset changed
    since): its results would be another model's."""
    kept = json.loads(type(config).from_pretrained(folder).to_json_string(use_diff=False))
    asked = json.loads(config.to_json_string(use_diff=False))
    changed = sorted(key for key in kept.keys() | asked.keys()
                     if key not in UNCOMPARED_CONFIG_KEYS and kept.get(key) != asked.get(key))
    if changed:
        raise ValueError(
            f"{folder} holds a model trained with another config than this comparison builds ("
            + ", ".join(f"{key}: {kept.get(key)!r} there, {asked.get(key)!r} now" for key in changed[:5])
            + "): give another --output_dir, or remove that folder to train it again"
        )


def train_family(family: Family, task: Task, args: ComparisonArguments, data_args: DataArguments) -> dict:
    """`family` tuned on validation at the first seed, then its best trial trained from every seed (the first seed's
    model is the tuning's own): the chosen trial, the tuning's runs and the run of each seed."""
    epochs = args.epochs or task.epochs
    seeds = [args.seed + index for index in range(args.seeds)]
    runs_dir = Path(args.output_dir) / "runs"
    data_name = f"{task.name} (nac-hf's benchmarks.tasks, data seed {args.data_seed})"
    trial_list = protocol.trials(args.tuning_trials)
    print(f"  tuning the {family.display}: {len(trial_list)} trials", flush=True)

    def run(trial: protocol.Trial, seed: int) -> dict:
        folder = runs_dir / f"{family.name}-{trial.name}-seed{seed}"
        return train(family, task, trial, seed, epochs, data_args, data_name, folder)

    tuning = [run(trial, seeds[0]) for trial in trial_list]
    best = max(range(len(tuning)), key=lambda index: tuning[index]["validation"])
    trial = trial_list[best]
    runs = [tuning[best]] + [run(trial, seed) for seed in seeds[1:]]
    return {"trial": dataclasses.asdict(trial), "tuning": tuning, "runs": runs}


def score_on_test(family: Family, task: Task, run: dict, data_args: DataArguments) -> float:
    """Test top-1 of a trained model, evaluated once (kept in its folder, with `test_results.json`)."""

    def compute() -> dict:
        model = family.model_class.from_pretrained(run["folder"])
        data = load_classification_data(data_args, seed=run["seed"])
        trainer = make_trainer(model, processor_of(task), data, data_args,
                               training_arguments(task, Path(run["folder"]), run["seed"]))
        return evaluate_test(trainer)

    return protocol.cached(Path(run["folder"]) / "protocol_test.json", compute)["test_top1_accuracy"]


def parameter_counts(task: Task) -> dict[str, int]:
    """The parameters of the task's NAC and of its baseline, by family (the strength changes none)."""
    return {family.name: family.build(task, list(task.labels), 1.0).num_parameters() for family in (NAC, task.baseline)}


def check_sizes(task: Task) -> dict[str, int]:
    """`parameter_counts`, printed; refused when the baseline is more than `MAX_SIZE_GAP` away from the NAC."""
    counts = parameter_counts(task)
    nac, baseline = counts[NAC.name], counts[task.baseline.name]
    gap = baseline / nac - 1
    print(f"  parameters: NAC {nac:,}, {task.baseline.display} {baseline:,} ({100 * gap:+.1f} %)", flush=True)
    if abs(gap) > MAX_SIZE_GAP:
        raise ValueError(
            f"the {task.baseline.display} baseline has {baseline:,} parameters and the `{task.name}` NAC {nac:,} "
            f"({100 * gap:+.1f} %), more than {100 * MAX_SIZE_GAP:.0f} % apart: resize the baseline "
            f"(TASKS[{task.name!r}].baseline_size) to the preset"
        )
    return counts


def publish_best(task: Task, runs: list[dict], folder: Path) -> dict:
    """The NAC of the best validation top-1 among `runs` as a repository folder, `folder / "nac-TASK"`, written by
    `nac_hf.hub.publish` (model, tokenizer, results and model card, checked to load without nac_hf)."""
    best = max(runs, key=lambda run: run["validation"])
    where = publish(best["folder"], f"nac-{task.name}", dry_run=folder / f"nac-{task.name}")
    print(f"  the NAC of seed {best['seed']} (validation top-1 {100 * best['validation']:.2f} %) written to {where}",
          flush=True)
    return {"folder": where, "published_from": best["folder"], "seed": best["seed"], "validation": best["validation"]}


def family_results(family: Family, trained: dict, tests: list[float]) -> dict:
    mean, std = mean_std(tests)
    return {"name": family.display, "params": trained["runs"][0]["parameters"], "runs": tests, "mean": mean,
            "std": std, "seeds": [run["seed"] for run in trained["runs"]], "trial": trained["trial"],
            "tuning": trained["tuning"], "details": trained["runs"]}


def protocol_record(task: Task, args: ComparisonArguments) -> dict:
    """How the comparison was run, for the results."""
    defaults = training_arguments_defaults()
    return {
        "tuning_trials": args.tuning_trials,
        "trials": [dataclasses.asdict(trial) for trial in protocol.trials(args.tuning_trials)],
        "seeds": [args.seed + index for index in range(args.seeds)], "epochs": args.epochs or task.epochs,
        "selection": "each family's best trial by validation top-1 at the first seed",
        "test": "each seed's model evaluated once on the test split, after every training",
        "interval": "Student-t 95 % over seeds of the NAC − baseline test top-1 differences paired by seed",
        "regularisers_at_strength_1": {"nac": nac_regularisers(task, 1.0),
                                       task.baseline.name: {"dropout": protocol.BASELINE_DROPOUT}},
        "training": {name: defaults[name] for name in ("per_device_train_batch_size", "lr_scheduler_type",
                                                        "warmup_steps", "weight_decay")}
        | {"train_sampling_strategy": task.train_sampling_strategy},
    }


def compare(args: ComparisonArguments, settings: dict, command: str) -> dict:
    """The whole comparison on `args.task` built with `settings`: its results, as written to `args.results`."""
    task, folder, start = TASKS[args.task], Path(args.output_dir), time.perf_counter()
    print(f"{task.name}: data in {folder / 'data'}", flush=True)
    data = write_data(task, settings, args.data_seed, folder)
    check_sizes(task)
    data_args = DataArguments(dataset_name=str(folder / "data"))
    families = (NAC, task.baseline)
    trained = {family.name: train_family(family, task, args, data_args) for family in families}
    print("  testing each seed's models", flush=True)
    tests = {family.name: [score_on_test(family, task, run, data_args) for run in trained[family.name]["runs"]]
             for family in families}
    differences = [nac - baseline for nac, baseline in zip(tests[NAC.name], tests[task.baseline.name])]
    mean, low, high = protocol.t_interval(differences)
    published = publish_best(task, trained[NAC.name]["runs"], folder)
    return {
        "task": task.name, "command": command,
        "nac": {**family_results(NAC, trained[NAC.name], tests[NAC.name]), "preset": task.name},
        "baseline": family_results(task.baseline, trained[task.baseline.name], tests[task.baseline.name]),
        "paired_diff": {"mean": mean, "ci_low": low, "ci_high": high, "per_seed": differences},
        "protocol": protocol_record(task, args), "data": data, "majority_answer": majority_answer(folder),
        "published": published,
        # Every training of both families, however many invocations it took (a rerun resumes from the kept ones).
        "train_seconds": round(sum(run["train_seconds"] for family in trained.values()
                                   for run in family["tuning"] + family["runs"][1:]), 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser(__doc__, ComparisonArguments, *(task.arguments for task in TASKS.values()))
    args, *all_settings = parser.parse_args_into_dataclasses(argv)
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.WARNING, stream=sys.stdout)
    quiet_libraries()
    task = TASKS[args.task]
    settings = dataclasses.asdict(next(s for s in all_settings if isinstance(s, task.arguments)))
    command = " ".join(["python", "-m", "benchmarks.task_comparison", *(sys.argv[1:] if argv is None else argv)])
    results = compare(args, settings, command)
    path = write_json(args.results or f"docs/results/{task.name}.json", results)
    nac, baseline, diff = results["nac"], results["baseline"], results["paired_diff"]
    print(f"\n{task.name}, test top-1 over {len(nac['runs'])} seeds: NAC {100 * nac['mean']:.2f} ± "
          f"{100 * nac['std']:.2f} %, {baseline['name']} {100 * baseline['mean']:.2f} ± "
          f"{100 * baseline['std']:.2f} %; NAC − {baseline['name']} {100 * diff['mean']:+.2f} points (95 % interval "
          f"{100 * diff['ci_low']:+.2f} … {100 * diff['ci_high']:+.2f}); wall time "
          f"{results['wall_seconds'] / 60:.1f} min; wrote {path}")
    return results


if __name__ == "__main__":
    main()
