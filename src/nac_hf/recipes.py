"""Training recipes: the preset a run trains and the settings of `scripts/train.py` it changes, by name.

`scripts/train.py --recipe NAME` makes a recipe's settings the defaults of its flags, so any flag given on the command
line still wins: `--recipe cifar --num_train_epochs 100` trains the recipe for 100 epochs.

Both recipes follow DeiT's (Touvron et al. 2021) for training attention models from scratch on small datasets, the
recipe the paper's Tiny-ImageNet setting names: AdamW at 5e-4 with weight decay 0.05, a cosine schedule after 5
epochs of linear warm-up, 300 epochs, bf16 mixed precision, an exponential moving average of the weights, mixup 0.8,
cutmix 1.0, label smoothing 0.1, random crops and flips, and repeated augmentation 3. RandAugment and random erasing,
also DeiT's, are left out. The batch is 256 per device.

They differ where the data does:

- `cifar` (CIFAR-10 and CIFAR-100, 32×32): the usual CIFAR crop (padded by 4 pixels) rather than a random-resized
  one, which at 32×32 keeps as few as 9×9 pixels of an image; and an average of decay 0.9999 rather than 0.99996:
  a run of 300 epochs of 176 steps (45,000 images, batch 256) takes 53,000 steps, and 0.9999 (a half-life of 6,900
  steps, 39 epochs) averages over about as many epochs as 0.99996 does over Tiny-ImageNet's 117,000 steps (half-life
  17,300 steps, 44 epochs). CIFAR has only train and test splits: 10 % of the training split is held out, stratified,
  as the validation split, evaluated every epoch to choose the checkpoint kept (`load_best_model_at_end`), and the
  test split is evaluated once, at the end.
- `paper-tiny-imagenet` (Tiny-ImageNet, 64×64, 200 labels): DeiT's random-resized crop (8 % to all of the area)
  and decay 0.99996. Tiny-ImageNet's test labels are not public, so its validation split is what results are given
  on: it is evaluated every epoch to follow the run but chooses nothing (the last epoch is kept), so that the figure
  it gives at the end is not one it was picked by.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Recipe:
    """A named recipe: the preset it trains, and defaults for `TrainingArguments` (and `NACTrainingArguments`) and
    `DataArguments` fields."""

    preset: str
    training: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)


# What both recipes share: DeiT's optimisation, schedule, regularisation and model selection.
_TRAINING = dict(
    do_train=True,
    do_eval=True,
    do_predict=True,
    num_train_epochs=300,
    per_device_train_batch_size=256,
    per_device_eval_batch_size=512,
    learning_rate=5e-4,
    weight_decay=0.05,
    lr_scheduler_type="cosine",
    warmup_steps=0,
    warmup_epochs=5,
    bf16=True,
    label_smoothing_factor=0.1,
    eval_strategy="epoch",
    save_strategy="epoch",
    save_total_limit=2,
    load_best_model_at_end=True,
    metric_for_best_model="top1_accuracy",
    greater_is_better=True,
    logging_steps=50,
    dataloader_num_workers=8,
)
_DATA = dict(
    augment=True,
    horizontal_flip=True,
    mixup_alpha=0.8,
    cutmix_alpha=1.0,
    repeated_augmentations=3,
    validation_split_percentage=10.0,
)

RECIPES: dict[str, Recipe] = {
    "cifar": Recipe(preset="cifar", training={**_TRAINING, "ema_decay": 0.9999}, data={**_DATA, "crop": "pad"}),
    "paper-tiny-imagenet": Recipe(
        preset="paper-tiny-imagenet",
        training={**_TRAINING, "ema_decay": 0.99996, "load_best_model_at_end": False},
        data={**_DATA, "crop": "random-resized", "crop_min_scale": 0.08},
    ),
}


def recipe_defaults(name: str, dataset_name: str | None = None) -> dict:
    """The flag defaults a recipe sets in `scripts/train.py`: its preset, training and data settings, and an output
    folder named after the dataset (`outputs/nac-cifar10` for `uoft-cs/cifar10`) or else the recipe."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    recipe = RECIPES[name]
    folder = dataset_name.rstrip("/").split("/")[-1] if dataset_name else name
    return {"preset": recipe.preset, "recipe": name, "output_dir": f"outputs/nac-{folder}", **recipe.training,
            **recipe.data}


__all__ = ["RECIPES", "Recipe", "recipe_defaults"]
