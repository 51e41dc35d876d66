"""Input policy of the pipeline: pairing, resizing, channel orders (no model needed)."""

import numpy as np
import pytest
import torch

from showme_model.pipeline import default_model_path, pair_inputs
from showme_model.preprocessing import centre_region, prepare_image, restore_frames, to_rgb_uint8


def _ramp(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def test_grey_images_become_three_equal_channels():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for image in (grey, grey[:, :, None]):
        rgb = to_rgb_uint8(image)
        assert rgb.shape == (3, 4, 3)
        assert (rgb == grey[:, :, None]).all()


def test_rgba_drops_alpha_and_bgr_flag_swaps_channels():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 2], rgba[..., 3] = 10, 30, 77
    assert (to_rgb_uint8(rgba)[0, 0] == [10, 0, 30]).all()
    assert (to_rgb_uint8(rgba, channel_order="bgr")[0, 0] == [30, 0, 10]).all()


def test_float_images_are_read_in_unit_range():
    rgb = to_rgb_uint8(np.full((2, 2, 3), 0.5, np.float32))
    assert rgb.dtype == np.uint8 and (rgb == 128).all()


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.zeros((4, 4, 3), np.int32), "dtype"),
        (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_images_are_refused_with_a_reason(image, message):
    with pytest.raises(ValueError, match=message):
        to_rgb_uint8(image)


def test_crop_mode_cuts_the_centred_region_of_the_model_aspect():
    assert centre_region(100, 300, (64, 64), "crop") == (0, 100, 100, 100)
    assert centre_region(300, 100, (32, 64), "crop") == (125, 0, 50, 100)
    assert centre_region(100, 300, (64, 64), "stretch") == (0, 0, 100, 300)


def test_prepare_image_resizes_to_resolution_and_scales_to_unit_interval():
    image = _ramp(90, 160)
    tensor, geometry = prepare_image(image, (32, 48))
    assert tensor.shape == (3, 32, 48) and tensor.dtype == torch.float32
    assert tensor.min() >= -1.0 and tensor.max() <= 1.0
    assert geometry.input_size == (90, 160)
    # A crop-mode input of the right size and aspect passes through unchanged.
    exact, _ = prepare_image(image[:32, :48], (32, 48))
    assert torch.allclose(exact, torch.from_numpy(image[:32, :48]).permute(2, 0, 1) / 127.5 - 1)


def test_crop_keeps_the_centre_and_stretch_keeps_everything():
    image = np.zeros((40, 120, 3), np.uint8)
    image[:, :40] = 255  # white left third, outside the centre crop
    cropped, _ = prepare_image(image, (40, 40), resize_mode="crop")
    stretched, _ = prepare_image(image, (40, 40), resize_mode="stretch")
    assert cropped.max() == -1.0
    assert stretched[:, :, :10].min() == 1.0


def test_restore_returns_the_input_region_size():
    image = _ramp(90, 160)
    _, crop = prepare_image(image, (32, 32), resize_mode="crop")
    _, stretch = prepare_image(image, (32, 32), resize_mode="stretch")
    frames = np.zeros((2, 5, 32, 32, 3), np.uint8)
    assert restore_frames(frames, crop).shape == (2, 5, 90, 90, 3)
    assert restore_frames(frames, stretch).shape == (2, 5, 90, 160, 3)


def test_instructions_broadcast_over_one_image_and_pair_with_many():
    image = np.zeros((4, 4, 3), np.uint8)
    images, texts = pair_inputs(image, ["a", "b", "c"])
    assert len(images) == 3 and texts == ["a", "b", "c"]
    images, texts = pair_inputs([image, image], "a")
    assert len(images) == 2 and texts == ["a", "a"]
    with pytest.raises(ValueError, match="same number"):
        pair_inputs([image, image], ["a", "b", "c"])
    with pytest.raises(ValueError, match="no instruction"):
        pair_inputs(image, [])


def test_default_model_path_says_to_pass_a_model_when_none_ships(monkeypatch, tmp_path):
    monkeypatch.setattr("showme_model.pipeline.SHIPPED_MODEL", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="--model"):
        default_model_path()
    (tmp_path / "absent").mkdir()
    (tmp_path / "absent" / "model_index.json").write_text("{}")
    assert default_model_path() == tmp_path / "absent"
