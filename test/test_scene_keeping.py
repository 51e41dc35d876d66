"""Scene keeping: the change mask, the composite, its stored settings and the pipeline's use."""

import numpy as np
import pytest
import torch

from showme_model.model import ShowMeModel
from showme_model.pipeline import ShowMePipeline
from showme_model.preprocessing import prepare_image
from showme_model.sampler_config import SamplerConfig, SamplerSettingsError
from showme_model.scene_keeping import change_mask, keep_scene

LOW, HIGH = 0.03, 0.09


def scene(height=16, width=16, seed=0):
    """A random input frame, its 'reconstruction' (off by 0.02 of the range) and two frames."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(1, 3, height, width, generator=generator) * 2 - 1
    reference = pixels + 0.04 * (torch.rand(1, 3, height, width, generator=generator) - 0.5)
    return pixels, reference


def test_unchanged_pixels_take_the_input_even_where_the_reconstruction_is_off():
    pixels, reference = scene()
    frames = reference.unsqueeze(2).repeat(1, 1, 2, 1, 1)  # the model redraws the input as is
    kept = keep_scene(frames, pixels, reference, LOW, HIGH, radius=2)
    assert torch.equal(kept, pixels.unsqueeze(2).expand_as(frames))


def test_a_changed_region_keeps_the_prediction_inside_and_a_feathered_border():
    pixels, reference = scene()
    frames = reference.unsqueeze(2).clone()
    frames[:, :, 0, 4:10, 4:10] = 1.0 - frames[:, :, 0, 4:10, 4:10].clamp(-1, 1)
    changed = (frames - reference.unsqueeze(2)).abs().amax(1)[0, 0] / 2 >= HIGH
    exact = change_mask(frames, reference, LOW, HIGH, radius=0)[0, 0, 0]
    assert torch.equal(exact > 0.99, changed)
    mask = change_mask(frames, reference, LOW, HIGH, radius=2)[0, 0, 0]
    assert mask[5:9, 5:9].min() > 0.99  # the inside of the change
    assert 0 < mask[4, 2] < 1  # feathered two pixels out
    assert mask[15, 15] == 0 and mask[0, 15] == 0  # far from it
    kept = keep_scene(frames, pixels, reference, LOW, HIGH, radius=2)
    assert torch.allclose(kept[..., 6:8, 6:8], frames[..., 6:8, 6:8], atol=1e-2)
    assert torch.equal(kept[..., 15, 15], pixels[..., 15, 15].unsqueeze(2))


def test_the_mask_ramps_linearly_between_the_thresholds():
    reference = torch.zeros(1, 3, 1, 3)
    change = torch.tensor([LOW / 2, (LOW + HIGH) / 2, 2 * HIGH]) * 2  # in [-1, 1] units
    frames = change.view(1, 1, 1, 1, 3).repeat(1, 3, 1, 1, 1)
    mask = change_mask(frames, reference, LOW, HIGH, radius=0).flatten()
    assert torch.allclose(mask, torch.tensor([0.0, 0.5, 1.0]), atol=1e-5)


@pytest.mark.parametrize("low, high, radius", [(0.1, 0.1, 1), (0.2, 0.1, 1), (0.0, 0.1, -1)])
def test_bad_thresholds_are_refused(low, high, radius):
    pixels, reference = scene()
    with pytest.raises(ValueError):
        change_mask(pixels.unsqueeze(2), reference, low, high, radius)


def test_settings_round_trip_and_are_validated(tmp_path):
    settings = SamplerConfig(keep_scene=True, keep_scene_low=0.02, keep_scene_radius=1)
    settings.save_pretrained(tmp_path)
    assert SamplerConfig.from_pretrained(tmp_path) == settings
    assert SamplerConfig().keep_scene is False  # the reference sampler leaves frames as decoded
    for bad in (
        {"keep_scene": "yes"},
        {"keep_scene_low": 0.1, "keep_scene_high": 0.05},
        {"keep_scene_high": 1.5},
        {"keep_scene_radius": 17},
        {"keep_scene_radius": 1.5},
    ):
        with pytest.raises(SamplerSettingsError, match="keep_scene"):
            SamplerConfig.from_dict(bad)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def test_pipeline_composites_over_the_input_with_its_stored_thresholds(image):
    torch.manual_seed(0)
    model = ShowMeModel.from_config_name("tiny")
    stored = SamplerConfig(
        num_inference_steps=1,
        keep_scene=True,
        keep_scene_low=0.2,
        keep_scene_high=0.4,
        keep_scene_radius=1,
    )
    pipeline = ShowMePipeline(model, sampler_config=stored)
    pixels = prepare_image(image, pipeline.resolution)[0].unsqueeze(0)
    with torch.no_grad():
        reference = model.decode_latents(model.encode_latents(pixels).unsqueeze(2))[:, :, 0]
    for mode in ("image", "video"):
        call = {"mode": mode, "num_frames": 2, "seed": 0, "output_type": "float"}
        kept = pipeline(image, "a", **call)
        raw = pipeline(image, "a", keep_scene=False, **call)
        assert (kept.metadata["keep_scene"], raw.metadata["keep_scene"]) == (True, False)
        frames = torch.from_numpy(raw.frames).permute(0, 4, 1, 2, 3) * 2 - 1
        expected = keep_scene(frames, pixels, reference.clamp(-1, 1), 0.2, 0.4, 1)
        expected = ((expected + 1) / 2).permute(0, 2, 3, 4, 1).numpy()
        assert np.abs(kept.frames - expected).max() < 1e-5
        kept_share = np.mean(np.abs(kept.frames - raw.frames).max(-1) > 1e-3)
        assert 0.05 < kept_share < 0.95  # the input shows through in part of the frame
