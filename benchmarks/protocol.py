"""The fair protocol every comparison of `benchmarks.paper_claims` follows.

- **Model families** (`FAMILIES`): the NAC (`digits` preset), a transformers ViT and a transformers Perceiver (the
  paper's own baseline, with the convolutional input of the Perceiver's ImageNet models), each of about 1.1 M
  parameters reading the same 16×16 images.
- **Tuning**: every family gets the same trials (`trials`): the same learning rates and regularisation strengths,
  drawn once by a seeded random search. Strength `s` scales each family's own regularisers from their usual values:
  the NAC's drop-path (0.1 s), module dropout (0.2 s) and code noise (0.05 s); the ViT's hidden and attention dropout
  (0.1 s each); the Perceiver's attention dropout (0.1 s). Each trial trains on the training split and is scored on
  the validation split carved from the training data; the family keeps its best trial. The test split is not read.
- **Seeds**: the chosen setting is trained from several pre-training seeds (the tuning's own seed among them, whose
  model is reused); each pre-trained model is adapted from several adaptation seeds, the same shots for every family.
- **Selection on validation**: adaptation modes (`MODES` per family) are chosen per shot count on a validation split
  of the new classes, from the first pre-trained model and `SELECTION_SEEDS`; operating points (dropping, early
  exit) on the pre-training task's validation split. Only then are the test splits read, once.
- **Statistics** (`paired_interval`): differences NAC − baseline paired by pre-training seed (and, within it, by
  adaptation seed and shots), averaged within each pre-training seed, with a Student-t 95 % interval over the
  pre-training seeds: the pre-training's variance is in the interval, and the adaptation seeds are not counted as
  independent runs. A claim holds only where the interval's lower end is at least the claimed margin (`verdict`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from datasets import DatasetDict
from scipy import stats
from transformers import (
    PerceiverConfig,
    PerceiverForImageClassificationConvProcessing,
    PreTrainedModel,
    TrainingArguments,
    set_seed,
)

from nac_hf import NACConfig, NACImageProcessor
from nac_hf.data import ClassificationData, DataArguments, load_classification_data
from nac_hf.few_shot import FewShotArguments, adapt, few_shot_training_defaults
from nac_hf.training import ModelArguments, build_model, new_processor, training_arguments_defaults

from .few_shot import pretrain, vit_baseline


IMAGE_SIZE = 16
# Regularisers of each family at strength 1: the NAC's are its `digits` preset's own.
NAC_REGULARISERS = {name: getattr(NACConfig.from_preset("digits"), name)
                    for name in ("drop_path_rate", "module_dropout", "code_noise")}
BASELINE_DROPOUT = 0.1
# The conv-input Perceiver's tokens: the stem's 64 channels and the Fourier features of their 2-D positions (64
# bands of sines and cosines per axis, and the positions themselves).
PERCEIVER_CONV_CHANNELS = 64 + 2 * (2 * 64) + 2
# The learning-rate range and regularisation strengths the random search draws from (log-uniform, uniform).
LEARNING_RATES = (5e-4, 5e-3)
STRENGTHS = (0.0, 2.0)
SEARCH_SEED = 0
# Adaptation seeds used to choose a mode (never the ones reported).
SELECTION_SEEDS = (100, 101)


@dataclass(frozen=True)
class Trial:
    learning_rate: float
    strength: float

    @property
    def name(self) -> str:
        return f"lr{self.learning_rate:.2g}-s{self.strength:.2f}"


def trials(count: int, seed: int = SEARCH_SEED) -> list[Trial]:
    """`count` settings of the random search, the same for every family: learning rates log-uniform in
    `LEARNING_RATES`, strengths uniform in `STRENGTHS`."""
    rng = np.random.default_rng(seed)
    low, high = np.log(LEARNING_RATES)
    return [Trial(float(f"{np.exp(rng.uniform(low, high)):.2g}"), round(float(rng.uniform(*STRENGTHS)), 2))
            for _ in range(count)]


def build_nac(data: ClassificationData, strength: float) -> PreTrainedModel:
    overrides = ",".join(f"{name}={value * strength:g}" for name, value in NAC_REGULARISERS.items())
    return build_model(ModelArguments(preset="digits", config_overrides=overrides), data)


def build_vit(data: ClassificationData, strength: float) -> PreTrainedModel:
    """`benchmarks.few_shot.vit_baseline`: patches of 4, hidden size 128, 6 layers of 4 heads, MLP 448 (1.10 M)."""
    return vit_baseline(len(data.label_names), data.id2label, data.label2id, dropout=BASELINE_DROPOUT * strength)


def build_perceiver(data: ClassificationData, strength: float) -> PreTrainedModel:
    """transformers' Perceiver with its convolutional input (`PerceiverForImageClassificationConvProcessing`: a 7×7
    convolution of stride 2 and a max-pool of stride 2, so a 4×4 grid of 64 channels with their Fourier features,
    as the NAC and the ViT read 4×4 patches; it reads 3 channels: the gray image repeated): 32 latents of 120, one
    cross-attention, 6 self-attention layers of 4 heads, 1.15 M parameters."""
    config = PerceiverConfig(
        num_latents=32, d_latents=120, d_model=PERCEIVER_CONV_CHANNELS, num_blocks=1, num_self_attends_per_block=6,
        num_self_attention_heads=4, num_cross_attention_heads=1, self_attention_widening_factor=2,
        cross_attention_widening_factor=2, attention_probs_dropout_prob=BASELINE_DROPOUT * strength,
        image_size=IMAGE_SIZE, num_labels=len(data.label_names), id2label=data.id2label, label2id=data.label2id,
    )
    return PerceiverForImageClassificationConvProcessing(config)


@dataclass(frozen=True)
class Family:
    name: str
    display: str
    build: Callable[[ClassificationData, float], PreTrainedModel]
    channels: int
    modes: tuple[str, ...]


FAMILIES = {
    "nac": Family("nac", "NAC", build_nac, 1, ("full", "head", "codes", "extend", "prototype")),
    "vit": Family("vit", "ViT", build_vit, 1, ("full", "head", "prototype")),
    "perceiver": Family("perceiver", "Perceiver", build_perceiver, 3, ("full", "head", "prototype")),
}


def processor_for(family: Family, model: PreTrainedModel):
    """The images at 16×16 and the family's channels, as the NAC's own processor reads them."""
    if family.name == "nac":
        return new_processor(model.config)
    return NACImageProcessor(size=IMAGE_SIZE, num_channels=family.channels)


def write_task(dataset: DatasetDict, folder: Path) -> DataArguments:
    """A task's splits as Parquet files in `folder` (train / validation / test), read back by name as a user's data
    is (`--dataset_name FOLDER`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, data in dataset.items():
        data.to_parquet(str(folder / f"{split}.parquet"))
    return DataArguments(dataset_name=str(folder))


def cached(path: Path, compute: Callable[[], dict]) -> dict:
    """`compute()`'s result, kept in `path` as json: a rerun into the same folder skips what is done."""
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return result


def train_family(family: Family, trial: Trial, data_args: DataArguments, epochs: float, seed: int,
                 folder: Path) -> dict:
    """One model of `family` trained with `trial`'s setting (scripts/train.py's recipe otherwise) and saved to
    `folder` with its processor; its validation top-1 and parameters. Kept across reruns (`cached`)."""

    def compute() -> dict:
        data = load_classification_data(data_args, seed=seed)
        set_seed(seed)
        model = family.build(data, trial.strength)
        settings = {
            **training_arguments_defaults(), "output_dir": str(folder), "num_train_epochs": epochs,
            "learning_rate": trial.learning_rate, "eval_strategy": "no", "save_strategy": "no",
            "logging_strategy": "no", "disable_tqdm": True, "do_predict": False, "seed": seed,
        }
        metrics = pretrain(model, processor_for(family, model), data_args, TrainingArguments(**settings))
        print(f"    {family.display} {trial.name} seed {seed}: validation top-1 "
              f"{100 * metrics['eval_top1_accuracy']:.2f} %", flush=True)
        return {"validation": metrics["eval_top1_accuracy"], "parameters": model.num_parameters(),
                "trial": dataclasses.asdict(trial), "seed": seed, "folder": str(folder)}

    return cached(folder / "protocol_training.json", compute)


def tune(family: Family, trial_list: list[Trial], data_args: DataArguments, epochs: float, seed: int,
         folder: Path) -> dict:
    """Every trial trained at `seed` and scored on validation; the best one (its model is the first pre-training
    seed's) and all the scores."""
    runs = [train_family(family, trial, data_args, epochs, seed, folder / f"{family.name}-{trial.name}-seed{seed}")
            for trial in trial_list]
    best = max(range(len(runs)), key=lambda index: runs[index]["validation"])
    return {"best": runs[best], "trial": trial_list[best], "runs": runs}


def adaptation_data(task_args: DataArguments, evaluate_on: str) -> ClassificationData:
    """The new classes' task, with `evaluate_on` ("validation" or "test") as the split each adaptation is scored
    on; the shots are drawn from its training split."""
    data = load_classification_data(task_args, seed=0)
    evaluation = data.dataset[evaluate_on]
    return dataclasses.replace(data, dataset=DatasetDict(train=data.dataset["train"], validation=evaluation))


def adapt_once(checkpoint: str, family: Family, data: ClassificationData, task_args: DataArguments, mode: str,
               shots: int, seed: int, steps: int, path: Path) -> float:
    """Top-1 of one adaptation (scripts/few_shot.py's settings for `steps` steps); kept across reruns."""

    def compute() -> dict:
        args = FewShotArguments(model_name_or_path=checkpoint, shots=str(shots), modes=mode)
        settings = {**few_shot_training_defaults(), "output_dir": str(path.parent / "adapt-scratch"),
                    "max_steps": steps, "disable_tqdm": True}
        processor = NACImageProcessor.from_pretrained(checkpoint)
        _, record = adapt(args, data, task_args, TrainingArguments(**settings), processor, mode, shots, seed)
        return {"top1_accuracy": record["top1_accuracy"]}

    return cached(path, compute)["top1_accuracy"]


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval of independent values (0 width for one value)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return mean, mean - float(half), mean + float(half)


def paired_interval(nac: dict, baseline: dict) -> dict:
    """NAC − baseline from results keyed by pre-training seed, each a list of values paired by position (adaptation
    seeds, or one value): the mean difference and a 95 % interval over the pre-training seeds of the within-seed mean
    differences; also both models' means. Values are fractions; results are in points."""
    seeds = sorted(nac)
    if sorted(baseline) != seeds or any(len(nac[s]) != len(baseline[s]) for s in seeds):
        raise ValueError("paired results need the same pre-training seeds and as many values per seed")
    per_seed = [100 * float(np.mean(np.subtract(nac[s], baseline[s]))) for s in seeds]
    diff, low, high = t_interval(per_seed)
    return {"nac": 100 * float(np.mean([np.mean(nac[s]) for s in seeds])),
            "baseline": 100 * float(np.mean([np.mean(baseline[s]) for s in seeds])),
            "diff": diff, "ci_low": low, "ci_high": high, "per_seed_diff": per_seed}


def verdict(ci_low: float, margin: float) -> str:
    """"holds" only where the whole 95 % interval is at or above the claimed margin."""
    return "holds" if ci_low >= margin else "not reproduced"


__all__ = [
    "FAMILIES",
    "Family",
    "SELECTION_SEEDS",
    "Trial",
    "adapt_once",
    "adaptation_data",
    "cached",
    "paired_interval",
    "processor_for",
    "t_interval",
    "train_family",
    "trials",
    "tune",
    "verdict",
    "write_task",
]
