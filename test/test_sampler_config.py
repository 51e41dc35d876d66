"""Sampler settings: bounds, the one request validation, and the settings file of a folder."""

import json
import math

import pytest

from showme_model.model import ShowMeModel
from showme_model.pipeline import ShowMePipeline, default_model_path
from showme_model.sampler_config import (
    MAX_GUIDANCE_SCALE,
    MAX_NUM_INFERENCE_STEPS,
    REFERENCE_SAMPLER_CONFIG,
    SAMPLER_CONFIG_NAME,
    SamplerConfig,
    SamplerSettingsError,
    validate_request,
)

GOOD = {"num_inference_steps": 50, "guidance_scale": 7.5, "eta": 1.0, "num_frames": 16}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"num_inference_steps": 0}, "num_inference_steps must be in 1..1000"),
        ({"num_inference_steps": MAX_NUM_INFERENCE_STEPS + 1}, "num_inference_steps"),
        ({"num_inference_steps": 2.5}, "num_inference_steps must be an integer"),
        ({"num_inference_steps": True}, "num_inference_steps must be an integer"),
        ({"guidance_scale": math.nan}, "guidance_scale"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"guidance_scale": 1e6}, "guidance_scale must be a finite number in 0..100"),
        ({"guidance_scale": 3.4028235e38}, "guidance_scale"),
        ({"guidance_scale": "7.5"}, "guidance_scale must be a number"),
        ({"image_guidance_scale": -0.5}, "image_guidance_scale"),
        ({"eta": math.inf}, "eta"),
        ({"eta": 1.5}, "eta must be a finite number in 0..1"),
        ({"num_frames": 17}, "exceeds the 16 frames"),
        ({"num_frames": 0}, "num_frames"),
        ({"frame_stride": 0}, "frame_stride"),
        ({"scheduler": "plms"}, "unknown scheduler 'plms'"),
        ({"num_inference_steps": 300, "max_num_inference_steps": 200}, "in 1..200"),
        ({"max_num_inference_steps": 10000}, "max_num_inference_steps"),
    ],
)
def test_requests_out_of_bounds_are_refused_with_the_setting_named(settings, message):
    validate_request(**GOOD, max_frames=16)  # the reference settings themselves pass
    with pytest.raises(SamplerSettingsError, match=message):
        validate_request(**{**GOOD, "max_frames": 16, **settings})


def test_the_bounds_are_inclusive_and_the_error_is_a_value_error():
    validate_request(MAX_NUM_INFERENCE_STEPS, MAX_GUIDANCE_SCALE, 1.0, 16, 16, frame_stride=3)
    validate_request(1, 0.0, 0.0, 1, 1, image_guidance_scale=0.0, scheduler="DDIM")
    assert issubclass(SamplerSettingsError, ValueError)


def test_reference_settings_are_dynamicrafters_sampler():
    reference = REFERENCE_SAMPLER_CONFIG
    assert (reference.num_inference_steps, reference.guidance_scale, reference.eta) == (50, 7.5, 1)
    assert (reference.scheduler, reference.num_frames, reference.frame_stride) == ("ddim", 16, None)


def test_resolve_applies_only_given_settings_and_validates_them():
    stored = SamplerConfig(num_inference_steps=10, guidance_scale=1.0, num_frames=8)
    resolved = stored.resolve(num_inference_steps=None, guidance_scale=2.0, eta=None)
    assert resolved == SamplerConfig(num_inference_steps=10, guidance_scale=2.0, num_frames=8)
    with pytest.raises(SamplerSettingsError, match="eta"):
        stored.resolve(eta=-1.0)
    with pytest.raises(TypeError, match="num_steps"):
        stored.resolve(num_steps=3)


def test_settings_file_round_trips_and_bad_files_are_refused(tmp_path):
    stored = SamplerConfig(10, 1.0, 0.5, "euler", 8, 2, "repeated")
    path = stored.save_pretrained(tmp_path)
    assert path == tmp_path / SAMPLER_CONFIG_NAME
    assert SamplerConfig.from_pretrained(tmp_path) == stored
    assert SamplerConfig.from_pretrained(tmp_path / "none") is None
    path.write_text(json.dumps({"num_inference_steps": 10, "steps": 3}))
    with pytest.raises(SamplerSettingsError, match=r"unknown key.*steps"):
        SamplerConfig.from_pretrained(tmp_path)
    path.write_text(json.dumps({"guidance_scale": 1e9}))
    with pytest.raises(SamplerSettingsError, match=f"{SAMPLER_CONFIG_NAME}: guidance_scale"):
        SamplerConfig.from_pretrained(tmp_path)
    path.write_text(json.dumps({"concat_layout": "last_frame"}))
    with pytest.raises(SamplerSettingsError, match="unknown concat_layout 'last_frame'"):
        SamplerConfig.from_pretrained(tmp_path)
    path.write_text("{")
    with pytest.raises(SamplerSettingsError, match="not valid JSON"):
        SamplerConfig.from_pretrained(tmp_path)
    path.write_text("[]")
    with pytest.raises(SamplerSettingsError, match="mapping"):
        SamplerConfig.from_pretrained(tmp_path)


def test_model_folder_keeps_its_settings(tmp_path):
    model = ShowMeModel.from_config_name("tiny")
    model.save_pretrained(tmp_path / "plain")
    assert not (tmp_path / "plain" / SAMPLER_CONFIG_NAME).exists()
    assert ShowMeModel.from_pretrained(tmp_path / "plain").sampler_config is None
    model.sampler_config = SamplerConfig(num_inference_steps=4, num_frames=2)
    model.save_pretrained(tmp_path / "tuned")
    loaded = ShowMeModel.from_pretrained(tmp_path / "tuned")
    assert loaded.sampler_config == model.sampler_config


def test_shipped_model_stores_the_settings_its_card_reports():
    folder = default_model_path()
    stored = json.loads((folder / SAMPLER_CONFIG_NAME).read_text())
    assert stored == {
        "num_inference_steps": 10,
        "guidance_scale": 2.0,
        "eta": 1.0,
        "scheduler": "ddim",
        "num_frames": 8,
        "frame_stride": 2,
        "keep_scene": True,
        "keep_scene_low": 0.03,
        "keep_scene_high": 0.09,
        "keep_scene_radius": 2,
    }
    card = " ".join((folder / "MODEL_CARD.md").read_text().split())
    assert "DDIM, 10 steps, guidance 2, eta 1, 8-frame rollouts at frame stride 2" in card
    assert "scene keeping on (`keep_scene`: thresholds 0.03 and 0.09, radius 2 pixels)" in card
    assert ShowMePipeline.from_pretrained(folder).sampler_config == SamplerConfig(**stored)
