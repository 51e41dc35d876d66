"""Adapter folders carry the UNet settings their adapter was trained under."""

import json

import pytest
import torch
from torch import nn

from showme_model import adapters
from showme_model.presets import unet_config
from showme_model.unet import ShowMeUNet
from test.test_components_resampler import _projector


def _model(image_mode_temporal_convs: bool) -> nn.ModuleDict:
    torch.manual_seed(0)
    config = {**unet_config("tiny"), "image_mode_temporal_convs": image_mode_temporal_convs}
    return nn.ModuleDict({"unet": ShowMeUNet(**config), "image_projector": _projector()})


def _saved(tmp_path, role: str, image_mode_temporal_convs: bool):
    model = _model(image_mode_temporal_convs)
    adapters.add_adapter(model, role, rank=2)
    adapters.save_adapter(model, role, tmp_path / role)
    return tmp_path / role


def test_saved_adapter_records_the_unet_settings(tmp_path):
    folder = _saved(tmp_path, "manipulation", True)
    config = json.loads((folder / adapters.CONFIG_NAME).read_text())
    assert config["unet_settings"] == {"image_mode_temporal_convs": True}


def test_loading_applies_the_recorded_settings(tmp_path):
    model = _model(False)
    adapters.load_adapter(model, _saved(tmp_path, "manipulation", True))
    assert model.unet.config.image_mode_temporal_convs is True


def test_loading_refuses_settings_other_adapters_do_not_share(tmp_path):
    model = _model(False)
    adapters.load_adapter(model, _saved(tmp_path, "manipulation", False))
    with pytest.raises(adapters.AdapterError, match=r"image_mode_temporal_convs.*'manipulation'"):
        adapters.load_adapter(model, _saved(tmp_path, "prediction", True))
    assert model.unet.config.image_mode_temporal_convs is False
    assert adapters.adapter_roles(model) == ["manipulation"]


def test_folders_without_settings_load_as_before(tmp_path):
    folder = _saved(tmp_path, "manipulation", True)
    config = json.loads((folder / adapters.CONFIG_NAME).read_text())
    del config["unet_settings"]
    (folder / adapters.CONFIG_NAME).write_text(json.dumps(config))
    model = _model(False)
    adapters.load_adapter(model, folder)
    assert model.unet.config.image_mode_temporal_convs is False
