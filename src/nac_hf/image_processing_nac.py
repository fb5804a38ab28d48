"""Image processor of a Neural Attentive Circuit read through the `"patch"` or `"conv"` input tokenizer."""

from __future__ import annotations

import numpy as np
import PIL.Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature, get_size_dict
from transformers.image_transforms import normalize, rescale
from transformers.image_utils import (
    ChannelDimension,
    ImageInput,
    PILImageResampling,
    infer_channel_dimension_format,
    is_scaled_image,
    is_valid_image,
    to_numpy_array,
)
from transformers.processing_utils import ImagesKwargs
from transformers.utils import TensorType, logging

from .configuration_nac import NACConfig
from .modalities import modality_of
from .support_nac import HUB_ARGUMENTS


logger = logging.get_logger(__name__)


# Weights of ITU-R 601-2 luma, the ones PIL's "L" mode uses, so arrays and PIL images turn gray alike.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# Channel counts an array axis may have for it to be taken as the channel axis: gray, gray + alpha, RGB, RGBA.
CHANNEL_COUNTS = (1, 2, 3, 4)


class NACImageProcessorKwargs(ImagesKwargs, total=False):
    num_channels: int


class NACImageProcessor(BaseImageProcessor):
    r"""
    Construct an image processor for [`NACModel`] with `config.tokenizer_type` `"patch"` or `"conv"`: images become
    `pixel_values` of shape (batch, num_channels, height, width), float32, ready for the model's input tokenizer.

    It reads PIL images of any mode (`"L"`, `"LA"`, `"P"`, `"RGB"`, `"RGBA"`, ...), NumPy arrays and torch tensors in
    (height, width, channels), (channels, height, width) or (height, width) layout, uint8 or float, one image or a
    list (a 4-D array is a batch). The steps, each of which can be turned off, are: bring the image to
    `num_channels` channels, resize, rescale, normalize. It needs PIL and NumPy only.

    Args:
        do_resize (`bool`, *optional*, defaults to `True`):
            Resize every image to `size`. The resize works in 32-bit float, so float images of any value range keep
            their precision. Turn it off only when all images already have the same size.
        size (`dict[str, int]` or `int`, *optional*, defaults to `{"height": 64, "width": 64}`):
            Output size as `{"height": h, "width": w}`; an `int` means a square. The default is
            `NACConfig.image_size`.
        resample (`PILImageResampling`, *optional*, defaults to `PILImageResampling.BILINEAR`):
            Resampling filter of the resize.
        do_rescale (`bool`, *optional*, defaults to `True`):
            Multiply the pixel values by `rescale_factor`. Turn off for float images already in [0, 1].
        rescale_factor (`float`, *optional*, defaults to `1/255`):
            Factor of the rescale.
        do_normalize (`bool`, *optional*, defaults to `True`):
            Subtract `image_mean` and divide by `image_std`, channel by channel.
        image_mean (`float` or `list[float]`, *optional*, defaults to `[0.5] * num_channels`):
            Mean of each channel; a list must have `num_channels` entries.
        image_std (`float` or `list[float]`, *optional*, defaults to `[0.5] * num_channels`):
            Standard deviation of each channel; a list must have `num_channels` entries.
        do_convert_rgb (`bool`, *optional*, defaults to `True`):
            Bring images to the colour mode the model reads: RGB when `num_channels` is 3 (gray is repeated), gray
            (`"L"`, ITU-R 601-2 luma) when `num_channels` is 1. Transparency is composited onto white and palette
            images are expanded. When off, an image must already have `num_channels` channels.
        num_channels (`int`, *optional*, defaults to 3):
            Channels of `pixel_values`; must equal the model's `config.num_channels` (the default is
            `NACConfig.num_channels`). An image whose channels cannot be brought to this number raises a
            `ValueError`.

    Every argument but `num_channels` can also be given to a call to override the stored value for that call.

    The processor of a model is `NACImageProcessor.from_config(model.config)`: it resizes to the model's
    `config.image_size` and brings images to its `config.num_channels`. `NACImageProcessor()` is that of
    `NACConfig()` (64×64 RGB). `from_pretrained` of a folder that holds a NAC's `config.json` but no
    `preprocessor_config.json` gives the processor of that config.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = NACImageProcessorKwargs

    def __init__(
        self,
        do_resize: bool = True,
        size: dict[str, int] | int | None = None,
        resample: PILImageResampling | int = PILImageResampling.BILINEAR,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | list[float] | None = None,
        image_std: float | list[float] | None = None,
        do_convert_rgb: bool = True,
        num_channels: int = NACConfig.num_channels,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(num_channels, int) or isinstance(num_channels, bool) or num_channels <= 0:
            raise ValueError(f"num_channels must be a positive int, got {num_channels!r}")
        size = size if size is not None else {"height": NACConfig.image_size, "width": NACConfig.image_size}
        self.do_resize = do_resize
        self.size = _height_width(size)
        self.resample = resample
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        self.image_mean = _per_channel(image_mean, num_channels, "image_mean")
        self.image_std = _per_channel(image_std, num_channels, "image_std")
        self.do_convert_rgb = do_convert_rgb
        self.num_channels = num_channels

    @classmethod
    def from_config(cls, config: NACConfig, **kwargs) -> "NACImageProcessor":
        """The processor of a NAC with this config: images resized to `config.image_size`, with
        `config.num_channels` channels. Any other argument of `NACImageProcessor` by keyword."""
        reads = modality_of(config)
        if reads.processor_class != cls.__name__:
            processor = f"its processor is {reads.processor_class}" if reads.processor_class else "it needs none"
            raise ValueError(
                f"this NAC reads {reads.main_input_name} (config.tokenizer_type={config.tokenizer_type!r}), not "
                f"images: {processor}"
            )
        return cls(**{**reads.processor_settings(config), **kwargs})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> "NACImageProcessor":
        """The processor saved at `pretrained_model_name_or_path` (`preprocessor_config.json`); where there is none
        but a NAC's `config.json`, the processor of that model (`from_config`), with `kwargs` overriding its
        fields."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except OSError as missing:
            where = {key: kwargs.pop(key) for key in HUB_ARGUMENTS if key in kwargs}
            try:
                config = NACConfig.from_pretrained(pretrained_model_name_or_path, **where)
            except (OSError, ValueError):
                raise missing from None
        logger.info("%s has no image processor: using the one of its model config", pretrained_model_name_or_path)
        with_unused = kwargs.pop("return_unused_kwargs", False)
        fields = set(cls().to_dict())  # what the processor saves; loading options (trust_remote_code, ...) are not
        processor = cls.from_config(config, **{key: value for key, value in kwargs.items() if key in fields})
        return (processor, {}) if with_unused else processor

    def preprocess(
        self,
        images: ImageInput,
        do_resize: bool | None = None,
        size: dict[str, int] | int | None = None,
        resample: PILImageResampling | int | None = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_normalize: bool | None = None,
        image_mean: float | list[float] | None = None,
        image_std: float | list[float] | None = None,
        do_convert_rgb: bool | None = None,
        return_tensors: str | TensorType | None = None,
        input_data_format: str | ChannelDimension | None = None,
    ) -> BatchFeature:
        """
        Turn one image or a batch of images into `pixel_values`.

        Args:
            images (`ImageInput`):
                A PIL image, NumPy array or torch tensor, or a list of them; a 4-D array or tensor is a batch.
            do_resize, size, resample, do_rescale, rescale_factor, do_normalize, image_mean, image_std, do_convert_rgb:
                Override the processor's own values for this call (see the class docstring).
            return_tensors (`str` or [`~utils.TensorType`], *optional*):
                `"pt"` for a torch tensor; `None` or `"np"` for a NumPy array.
            input_data_format (`ChannelDimension` or `str`, *optional*):
                Layout of array inputs, `"channels_first"` or `"channels_last"`; inferred when unset (pass it for
                images so small that height or width could be a channel count).

        Returns:
            [`BatchFeature`] with `pixel_values` of shape (batch, num_channels, height, width), float32.
        """
        options = self._options(
            do_resize=do_resize, size=size, resample=resample, do_rescale=do_rescale, rescale_factor=rescale_factor,
            do_normalize=do_normalize, image_mean=image_mean, image_std=image_std, do_convert_rgb=do_convert_rgb,
        )
        if input_data_format is not None:
            input_data_format = ChannelDimension(input_data_format)
        processed = [self._process(image, input_data_format, **options) for image in _image_list(images)]
        shapes = {image.shape for image in processed}
        if len(shapes) > 1:
            raise ValueError(
                f"images of different sizes {sorted(shapes)} cannot be stacked into one batch; set do_resize=True"
            )
        pixel_values = np.stack(processed)  # (B, C, H, W)
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)

    def _options(self, **overrides) -> dict:
        """The settings of one call: each argument given, else the processor's own value."""
        options = {name: getattr(self, name) if value is None else value for name, value in overrides.items()}
        options["size"] = _height_width(options["size"])
        for name in ("image_mean", "image_std"):
            options[name] = _per_channel(options[name], self.num_channels, name)
        return options

    def _process(
        self,
        image,
        input_data_format: ChannelDimension | None,
        *,
        do_resize: bool,
        size: dict[str, int],
        resample: PILImageResampling | int,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: list[float],
        image_std: list[float],
        do_convert_rgb: bool,
    ) -> np.ndarray:
        """One image through the steps: channels, resize, rescale, normalize; a (num_channels, H, W) float32 array."""
        image = self._to_channels_first(image, do_convert_rgb, input_data_format)  # (C, H, W)
        if do_rescale and is_scaled_image(image):
            logger.warning_once(
                "An image already has its pixel values in [0, 1] and do_rescale=True scales them again; "
                "pass do_rescale=False for such images."
            )
        if do_resize:
            image = _resize(image, size["height"], size["width"], resample)
        if do_rescale:
            image = rescale(image, rescale_factor, input_data_format=ChannelDimension.FIRST)
        if do_normalize:
            image = normalize(image, image_mean, image_std, input_data_format=ChannelDimension.FIRST)
        return image.astype(np.float32)

    def _to_channels_first(
        self, image, do_convert_rgb: bool, input_data_format: ChannelDimension | None
    ) -> np.ndarray:
        """One image as a (num_channels, H, W) array, its channels brought to `num_channels` if allowed."""
        if isinstance(image, PIL.Image.Image):
            if do_convert_rgb and self.num_channels in (1, 3):
                image = _flatten_pil(image).convert("RGB" if self.num_channels == 3 else "L")
            array = np.array(image)
            array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)  # PIL arrays are (H, W[, C])
        else:
            array = to_numpy_array(image)
            if array.ndim == 2:
                array = array[None]
            elif array.ndim == 3:
                layout = input_data_format or _infer_layout(array, self.num_channels)
                if layout == ChannelDimension.LAST:
                    array = np.moveaxis(array, -1, 0)
            else:
                raise ValueError(f"expected an image of 2 or 3 dimensions, got shape {tuple(array.shape)}")
            if do_convert_rgb:
                array = _convert_channels(array, self.num_channels)

        if array.shape[0] != self.num_channels:
            hint = "" if do_convert_rgb else "; set do_convert_rgb=True to convert gray, RGB and alpha images"
            raise ValueError(
                f"expected images with {self.num_channels} channels (num_channels), got {array.shape[0]} "
                f"(image of shape {tuple(array.shape)} after moving channels first){hint}"
            )
        return array


def _height_width(size: dict[str, int] | int) -> dict[str, int]:
    size = dict(get_size_dict(size, default_to_square=True))
    if set(size) != {"height", "width"}:
        raise ValueError(f"size must be an int or a dict with 'height' and 'width', got {size}")
    return {"height": int(size["height"]), "width": int(size["width"])}


def _resize(image: np.ndarray, height: int, width: int, resample: PILImageResampling | int) -> np.ndarray:
    """Resize a (C, H, W) array channel by channel as 32-bit float PIL images: any value range, no rounding."""
    channels = [
        np.asarray(PIL.Image.fromarray(channel.astype(np.float32)).resize((width, height), resample=resample))
        for channel in image
    ]
    return np.stack(channels)  # (C, height, width)


def _per_channel(value: float | list[float] | None, num_channels: int, name: str) -> list[float]:
    if value is None:
        return [0.5] * num_channels
    if isinstance(value, (int, float)):
        return [float(value)] * num_channels
    value = [float(v) for v in value]
    if len(value) != num_channels:
        raise ValueError(f"{name} must have num_channels={num_channels} entries, got {len(value)}: {value}")
    return value


def _is_batch_array(images) -> bool:
    return not isinstance(images, (list, tuple, PIL.Image.Image)) and getattr(images, "ndim", 0) == 4


def _image_list(images) -> list:
    """One image, a list of them or a 4-D batch array as a non-empty list of valid images."""
    if _is_batch_array(images):
        images = list(images)
    elif not isinstance(images, (list, tuple)):
        images = [images]
    invalid = [image for image in images if not is_valid_image(image)]
    if not images or invalid:
        raise ValueError(
            "images must be a PIL image, a NumPy array or a torch tensor, or a non-empty list of them; "
            f"got {type(invalid[0]).__name__ if invalid else 'an empty list'}"
        )
    return list(images)


def _infer_layout(array: np.ndarray, num_channels: int) -> ChannelDimension:
    first, last = array.shape[0], array.shape[-1]
    # The axis that already has the wanted channel count settles most ambiguous small images.
    if first == num_channels and last != num_channels:
        return ChannelDimension.FIRST
    if last == num_channels and first != num_channels:
        return ChannelDimension.LAST
    try:
        return infer_channel_dimension_format(array, num_channels=tuple(sorted({num_channels, *CHANNEL_COUNTS})))
    except ValueError:
        raise ValueError(
            f"cannot tell the channel axis of an image of shape {tuple(array.shape)}: expected {num_channels} "
            "channels (num_channels) first or last; pass input_data_format='channels_first' or 'channels_last'"
        ) from None


def _flatten_pil(image: PIL.Image.Image) -> PIL.Image.Image:
    """Composite any transparency (alpha band or palette transparency) onto white; return an RGB or L image."""
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode in ("RGB", "L") else image.convert("RGB")


def _convert_channels(array: np.ndarray, num_channels: int) -> np.ndarray:
    """Bring a (C, H, W) array of gray, gray + alpha, RGB or RGBA to `num_channels` (1 or 3) channels."""
    channels = array.shape[0]
    if channels == num_channels or num_channels not in (1, 3) or channels not in CHANNEL_COUNTS:
        return array
    dtype = array.dtype
    if channels in (2, 4):
        white = 255.0 if np.issubdtype(dtype, np.integer) else 1.0
        if white == 1.0 and (array.min() < 0 or array.max() > 1):
            raise ValueError(
                "a float image with an alpha channel must have values in [0, 1] to be composited onto white, "
                f"got [{array.min()}, {array.max()}]"
            )
        alpha = array[-1:] / white
        array = array[:-1] * alpha + white * (1 - alpha)
    if array.shape[0] == 1 and num_channels == 3:
        array = np.repeat(array, 3, axis=0)
    elif array.shape[0] == 3 and num_channels == 1:
        array = np.tensordot(np.asarray(LUMA_WEIGHTS), array.astype(np.float64), axes=1)[None]
    if np.issubdtype(dtype, np.integer):
        return np.round(array).astype(dtype)
    return array.astype(dtype)


__all__ = ["NACImageProcessor"]
