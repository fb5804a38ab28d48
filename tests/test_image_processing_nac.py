import json
import os

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoConfig, AutoImageProcessor, ViTConfig, ViTForImageClassification, pipeline
from transformers.image_utils import PILImageResampling

from nac_hf.configuration_nac import NACConfig
from nac_hf.image_processing_nac import NACImageProcessor
from nac_test_utils import run_python


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """A (H, W, 3) uint8 image, not square so that a swapped height and width shows."""
    return np.random.RandomState(0).randint(0, 256, size=(20, 28, 3), dtype=np.uint8)


def normalized(values: np.ndarray, mean=0.5, std=0.5) -> np.ndarray:
    return (values.astype(np.float64) / 255 - mean) / std


def test_defaults_match_the_model_config():
    processor = NACImageProcessor()
    config = NACConfig()
    assert processor.size == {"height": config.image_size, "width": config.image_size} == {"height": 64, "width": 64}
    assert processor.num_channels == config.num_channels == 3
    assert processor.resample == PILImageResampling.BILINEAR
    assert processor.do_resize and processor.do_rescale and processor.do_normalize and processor.do_convert_rgb
    assert processor.rescale_factor == pytest.approx(1 / 255)
    assert processor.image_mean == [0.5, 0.5, 0.5] and processor.image_std == [0.5, 0.5, 0.5]
    assert processor.model_input_names == ["pixel_values"]
    assert NACImageProcessor(num_channels=1).image_mean == [0.5]


@pytest.mark.parametrize("image_size, num_channels", [(16, 3), (8, 1), (24, 1)])
def test_the_processor_of_a_config_resizes_to_its_image_size(rgb, image_size, num_channels):
    config = NACConfig.from_preset("tiny", image_size=image_size, num_channels=num_channels, patch_size=4)
    processor = NACImageProcessor.from_config(config)
    assert processor(rgb)["pixel_values"].shape == (1, num_channels, image_size, image_size)
    assert processor.to_dict() == NACImageProcessor(size=image_size, num_channels=num_channels).to_dict()
    # what it saves is what loads, with nothing of the model needed any more
    assert NACImageProcessor.from_dict(processor.to_dict()).size == {"height": image_size, "width": image_size}
    with pytest.raises(ValueError, match="reads points .* it needs none"):
        NACImageProcessor.from_config(NACConfig.from_preset("tiny", tokenizer_type="point"))


def test_every_kind_of_input_gives_the_same_pixel_values(rgb):
    processor = NACImageProcessor(size={"height": 16, "width": 12})
    reference = processor(PIL.Image.fromarray(rgb), return_tensors="pt")["pixel_values"]
    assert reference.shape == (1, 3, 16, 12) and reference.dtype == torch.float32

    chw = np.ascontiguousarray(rgb.transpose(2, 0, 1))
    same_image = {
        "numpy HWC": processor(rgb),
        "numpy CHW": processor(chw),
        "torch CHW": processor(torch.from_numpy(chw)),
        "torch HWC float": processor(torch.from_numpy(rgb).float()),
        "numpy HWC in [0, 1]": processor(rgb / 255.0, do_rescale=False),
        "numpy CHW explicit layout": processor(chw, input_data_format="channels_first"),
    }
    for name, features in same_image.items():
        pixel_values = features["pixel_values"]
        assert isinstance(pixel_values, np.ndarray) and pixel_values.dtype == np.float32, name
        np.testing.assert_allclose(pixel_values, reference.numpy(), atol=1e-5, err_msg=name)


def test_lists_and_batched_arrays_stack_into_one_batch(rgb):
    processor = NACImageProcessor(size=8)
    small = rgb[:10, :14]
    listed = processor([rgb, PIL.Image.fromarray(small), small[..., 0]], return_tensors="pt")["pixel_values"]
    assert listed.shape == (3, 3, 8, 8)
    batched = processor(torch.from_numpy(np.stack([rgb, rgb])).permute(0, 3, 1, 2), return_tensors="pt")
    assert batched["pixel_values"].shape == (2, 3, 8, 8)
    torch.testing.assert_close(batched["pixel_values"][1], listed[0])
    assert processor(np.stack([rgb, rgb]), return_tensors="np")["pixel_values"].shape == (2, 3, 8, 8)


def test_rescale_and_normalize_match_a_hand_computation(rgb):
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    processor = NACImageProcessor(do_resize=False, image_mean=mean, image_std=std)
    pixel_values = processor(rgb)["pixel_values"][0]
    assert pixel_values.shape == (3, 20, 28)
    for channel in range(3):
        expected = (rgb[:, :, channel] / 255.0 - mean[channel]) / std[channel]
        np.testing.assert_allclose(pixel_values[channel], expected, rtol=1e-6, atol=1e-6)

    raw = processor(rgb, do_rescale=False, do_normalize=False)["pixel_values"][0]
    np.testing.assert_array_equal(raw, rgb.transpose(2, 0, 1).astype(np.float32))
    halved = processor(rgb, rescale_factor=0.5, do_normalize=False)["pixel_values"][0]
    np.testing.assert_allclose(halved, rgb.transpose(2, 0, 1) * 0.5)


def test_resize_matches_pil_bilinear(rgb):
    processor = NACImageProcessor(size={"height": 16, "width": 24})
    pixel_values = processor(rgb)["pixel_values"][0]
    assert pixel_values.shape == (3, 16, 24)
    expected = np.asarray(PIL.Image.fromarray(rgb).resize((24, 16), PIL.Image.Resampling.BILINEAR))
    # PIL resizes uint8 in fixed point and rounds; the processor resizes in float: under one grey level apart.
    one_grey_level = 1 / 255 / 0.5
    np.testing.assert_allclose(pixel_values, normalized(expected).transpose(2, 0, 1), atol=1.01 * one_grey_level)

    nearest = NACImageProcessor(size=10, resample=PILImageResampling.NEAREST)(rgb)["pixel_values"][0]
    expected = np.asarray(PIL.Image.fromarray(rgb).resize((10, 10), PIL.Image.Resampling.NEAREST))
    np.testing.assert_allclose(nearest, normalized(expected).transpose(2, 0, 1), atol=1e-6)


def test_resize_keeps_float_images_of_any_range():
    image = np.full((8, 8), -3.25, dtype=np.float32)
    image[:, 4:] = 700.5
    processor = NACImageProcessor(num_channels=1, size=4, do_rescale=False, do_normalize=False)
    pixel_values = processor(image)["pixel_values"][0, 0]  # (4, 4)
    # The outer columns only see their own half of the image; the inner ones mix both.
    np.testing.assert_allclose(pixel_values[:, 0], -3.25, rtol=1e-5)
    np.testing.assert_allclose(pixel_values[:, 3], 700.5, rtol=1e-5)
    assert ((pixel_values[:, 1:3] > -3.25) & (pixel_values[:, 1:3] < 700.5)).all()


def test_gray_images_become_rgb_with_three_equal_channels(rgb):
    gray = rgb[:, :, 0]
    processor = NACImageProcessor(do_resize=False)
    expected = normalized(gray)
    for image in (PIL.Image.fromarray(gray), gray, gray[:, :, None], gray[None]):
        pixel_values = processor(image)["pixel_values"][0]
        assert pixel_values.shape == (3, 20, 28)
        for channel in range(3):
            np.testing.assert_allclose(pixel_values[channel], expected, atol=1e-6)


def test_rgb_images_become_gray_when_the_model_reads_one_channel(rgb):
    processor = NACImageProcessor(num_channels=1, do_resize=False, image_mean=[0.25], image_std=[0.5])
    luma = np.asarray(PIL.Image.fromarray(rgb).convert("L"))
    expected = normalized(luma, mean=0.25)
    from_pil = processor(PIL.Image.fromarray(rgb))["pixel_values"][0]
    assert from_pil.shape == (1, 20, 28)
    np.testing.assert_allclose(from_pil[0], expected, atol=1e-6)
    from_array = processor(rgb)["pixel_values"][0]
    np.testing.assert_allclose(from_array[0], expected, atol=1.01 / 255 / 0.5)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGB", "RGBA", "CMYK", "1"])
def test_pil_images_of_any_mode_are_read(rgb, mode):
    image = PIL.Image.fromarray(rgb).convert(mode)
    for num_channels in (1, 3):
        processor = NACImageProcessor(num_channels=num_channels, size=8)
        pixel_values = processor(image, return_tensors="pt")["pixel_values"]
        assert pixel_values.shape == (1, num_channels, 8, 8)
        assert pixel_values.min() >= -1 and pixel_values.max() <= 1


def test_transparency_is_composited_onto_white(rgb):
    processor = NACImageProcessor(do_resize=False)
    clear = np.concatenate([rgb, np.zeros_like(rgb[:, :, :1])], axis=-1)  # alpha 0 everywhere
    for image in (PIL.Image.fromarray(clear, mode="RGBA"), clear, PIL.Image.fromarray(clear).convert("LA")):
        np.testing.assert_allclose(processor(image)["pixel_values"], 1.0)
    opaque = clear.copy()
    opaque[..., 3] = 255
    np.testing.assert_allclose(processor(opaque)["pixel_values"], processor(rgb)["pixel_values"])
    half = clear.copy()
    half[..., 3] = 51  # 20 % opaque
    expected = normalized(0.2 * rgb.astype(np.float64) + 0.8 * 255).transpose(2, 0, 1)
    np.testing.assert_allclose(processor(half)["pixel_values"][0], expected, atol=1.01 / 255 / 0.5)


def test_palette_images_read_as_their_colours(rgb):
    palette = PIL.Image.fromarray(rgb).convert("P")
    processor = NACImageProcessor(do_resize=False)
    np.testing.assert_allclose(
        processor(palette)["pixel_values"], processor(palette.convert("RGB"))["pixel_values"], atol=1e-6
    )


def test_images_whose_channels_cannot_be_matched_raise(rgb):
    with pytest.raises(ValueError, match="expected images with 3 channels .*got 1.*do_convert_rgb=True"):
        NACImageProcessor(do_convert_rgb=False)(rgb[:, :, 0])
    with pytest.raises(ValueError, match="expected images with 3 channels .*got 4"):
        NACImageProcessor(do_convert_rgb=False)(PIL.Image.fromarray(rgb).convert("RGBA"))
    with pytest.raises(ValueError, match="expected images with 4 channels .*got 3"):
        NACImageProcessor(num_channels=4, image_mean=0.5, image_std=0.5)(rgb)
    with pytest.raises(ValueError, match="expected 3 channels .*input_data_format"):
        NACImageProcessor()(np.zeros((8, 9, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="expected images with 3 channels .*got 5"):
        NACImageProcessor()(np.zeros((8, 9, 5), dtype=np.uint8), input_data_format="channels_last")


def test_bad_arguments_and_inputs_raise():
    with pytest.raises(ValueError, match="image_mean must have num_channels=1 entries"):
        NACImageProcessor(num_channels=1, image_mean=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="image_std must have num_channels=3 entries"):
        NACImageProcessor()(np.zeros((8, 8, 3), np.uint8), image_std=[1.0])
    with pytest.raises(ValueError, match="num_channels must be a positive int"):
        NACImageProcessor(num_channels=0)
    with pytest.raises(ValueError, match="'height' and 'width'"):
        NACImageProcessor(size={"shortest_edge": 32})
    with pytest.raises(ValueError, match="got str"):
        NACImageProcessor()([np.zeros((8, 8, 3), np.uint8), "not an image"])
    with pytest.raises(ValueError, match="empty list"):
        NACImageProcessor()([])
    with pytest.raises(ValueError, match="different sizes.*do_resize=True"):
        NACImageProcessor(do_resize=False)([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)])


def test_save_and_load_gives_the_same_processor(tmp_path, rgb):
    processor = NACImageProcessor(
        size={"height": 12, "width": 20},
        resample=PILImageResampling.NEAREST,
        num_channels=1,
        image_mean=[0.2],
        image_std=[0.3],
        rescale_factor=1 / 127.5,
    )
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "NACImageProcessor"
    assert saved["size"] == {"height": 12, "width": 20} and saved["num_channels"] == 1 and saved["image_mean"] == [0.2]

    loaded = NACImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    np.testing.assert_array_equal(loaded(rgb)["pixel_values"], processor(rgb)["pixel_values"])
    assert NACImageProcessor.from_pretrained(tmp_path, size=6)(rgb)["pixel_values"].shape == (1, 1, 6, 6)


def test_auto_image_processor_loads_it_once_registered(tmp_path, rgb):
    AutoConfig.register(NACConfig.model_type, NACConfig, exist_ok=True)
    AutoImageProcessor.register(NACConfig, slow_image_processor_class=NACImageProcessor, exist_ok=True)
    NACConfig().save_pretrained(tmp_path)
    processor = NACImageProcessor(size=32)
    processor.save_pretrained(tmp_path)

    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, NACImageProcessor)
    np.testing.assert_array_equal(loaded(rgb)["pixel_values"], processor(rgb)["pixel_values"])


def test_trust_remote_code_loads_the_saved_processor_without_the_package(tmp_path, monkeypatch, rgb):
    monkeypatch.setattr(NACImageProcessor, "_auto_class", None)
    NACImageProcessor.register_for_auto_class("AutoImageProcessor")
    folder = tmp_path / "processor"
    processor = NACImageProcessor(size=16, num_channels=1)
    processor.save_pretrained(folder)
    assert {"image_processing_nac.py", "configuration_nac.py"} <= set(os.listdir(folder))
    np.save(tmp_path / "image.npy", rgb)

    script = (
        "import json, sys\n"
        "import numpy as np\n"
        "from transformers import AutoImageProcessor\n"
        f"processor = AutoImageProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)\n"
        "pixel_values = processor(np.load('image.npy'), return_tensors='pt')['pixel_values']\n"
        "print(json.dumps({'module': type(processor).__module__, 'pixel_values': pixel_values.tolist(),"
        " 'package_imported': 'nac_hf' in sys.modules}))\n"
    )
    report = run_python(script, cwd=tmp_path)
    assert report["module"].startswith("transformers_modules.")
    assert not report["package_imported"]
    np.testing.assert_allclose(np.array(report["pixel_values"]), processor(rgb)["pixel_values"], atol=1e-6)


def test_image_classification_pipeline_uses_the_processor(rgb):
    torch.manual_seed(0)
    vit = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    model = ViTForImageClassification(vit).eval()
    processor = NACImageProcessor(size=32)
    classify = pipeline("image-classification", model=model, image_processor=processor)

    image = PIL.Image.fromarray(rgb).convert("LA")
    predictions = classify(image, top_k=3)
    with torch.no_grad():
        probabilities = model(**processor(image, return_tensors="pt")).logits.softmax(-1)[0]
    scores, order = probabilities.sort(descending=True)
    assert [p["label"] for p in predictions] == [model.config.id2label[i] for i in order.tolist()]
    assert [p["score"] for p in predictions] == pytest.approx(scores.tolist(), abs=1e-6)
