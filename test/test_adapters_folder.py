"""Adapter folders: peft adapters of the whole model, with the role and the UNet settings their
adapter was trained under."""

import json

import pytest
import torch
from peft import LoraConfig, PeftConfig, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import load_file
from torch import nn

from showme_model import adapters
from showme_model.presets import unet_config
from showme_model.unet import ShowMeUNet
from test.test_components_resampler import _projector


def _model(image_mode_temporal_convs: bool) -> nn.ModuleDict:
    torch.manual_seed(0)
    config = {**unet_config("tiny"), "image_mode_temporal_convs": image_mode_temporal_convs}
    return nn.ModuleDict({"unet": ShowMeUNet(**config), "image_projector": _projector()})


def _randomise(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


def _saved(tmp_path, role: str, image_mode_temporal_convs: bool):
    model = _model(image_mode_temporal_convs)
    adapters.add_adapter(model, role, rank=2)
    adapters.save_adapter(model, role, tmp_path / role)
    return tmp_path / role


def _forward(model: nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(1, 8, 1, 8, 8, generator=generator)
    tokens = torch.randn(1, 8, 48, generator=generator)
    context = torch.cat(
        [torch.randn(1, 77, 32, generator=generator), model.image_projector(tokens)], 1
    )
    return model.unet(sample, torch.tensor([300]), context, temporal=False)


def test_a_folder_loads_with_peft_alone(tmp_path):
    """peft's own API, without this package, rebuilds the adapter (mixed ranks included)."""
    model = _model(False).eval()
    mixed = {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": 3}
    adapters.add_adapter(model, "manipulation", rank=2, rank_pattern=mixed)
    _randomise(model, 0)
    adapters.save_adapter(model, "manipulation", tmp_path / "m")

    config = PeftConfig.from_pretrained(tmp_path / "m")
    assert isinstance(config, LoraConfig)
    assert (config.r, config.lora_alpha, config.lora_dropout) == (2, 2, 0.1)
    plain = _model(False).eval()
    inject_adapter_in_model(config, plain, adapter_name="default")
    plain.eval()  # peft's new dropout layers start in training mode
    weights = load_file(tmp_path / "m" / adapters.WEIGHTS_NAME)
    result = set_peft_model_state_dict(plain, weights, adapter_name="default")
    assert not result.unexpected_keys
    assert not [key for key in result.missing_keys if ".lora_" in key]
    layer = plain.unet.get_submodule(next(iter(mixed)).removeprefix("unet."))
    assert layer.lora_A["default"].weight.shape[0] == 3
    with torch.no_grad(), adapters.active_adapters(model, ["manipulation"]):
        expected = _forward(model)
    with torch.no_grad():
        assert torch.equal(_forward(plain), expected)
        assert not torch.equal(_forward(_model(False).eval()), expected)


def test_saved_adapter_records_its_role_and_unet_settings(tmp_path):
    folder = _saved(tmp_path, "manipulation", True)
    extras = json.loads((folder / adapters.EXTRAS_NAME).read_text())
    assert extras == {"role": "manipulation", "unet_settings": {"image_mode_temporal_convs": True}}


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
    (folder / adapters.EXTRAS_NAME).write_text(json.dumps({"role": "manipulation"}))
    model = _model(False)
    adapters.load_adapter(model, folder)
    assert model.unet.config.image_mode_temporal_convs is False


def test_folders_of_the_earlier_layout_still_load(tmp_path):
    """Role, ranks and per-component targets in adapter_config.json, as first written."""
    model = _model(False).eval()
    adapters.add_adapter(model, "manipulation", rank=2)
    _randomise(model, 0)
    adapters.save_adapter(model, "manipulation", tmp_path / "m")
    targets = adapters.target_modules(model, "manipulation")
    legacy = {"role": "manipulation", "r": 2, "lora_alpha": 2, "rank_pattern": {}}
    (tmp_path / "m" / adapters.CONFIG_NAME).write_text(
        json.dumps({**legacy, "target_modules": targets})
    )
    (tmp_path / "m" / adapters.EXTRAS_NAME).unlink()
    fresh = _model(False).eval()
    assert adapters.load_adapter(fresh, tmp_path / "m") == "manipulation"
    with torch.no_grad(), adapters.active_adapters(model, ["manipulation"]):
        expected = _forward(model)
    with torch.no_grad():
        assert torch.equal(_forward(fresh), expected)


def test_a_loaded_adapter_acts_once(tmp_path):
    model = _model(False).eval()
    adapters.add_adapter(model, "manipulation", rank=2)
    _randomise(model, 0)
    adapters.save_adapter(model, "manipulation", tmp_path / "m")
    fresh = _model(False).eval()
    adapters.load_adapter(fresh, tmp_path / "m")
    with torch.no_grad():
        as_loaded = _forward(fresh)
        with adapters.active_adapters(fresh, ["manipulation"]):
            assert torch.equal(_forward(fresh), as_loaded)
        assert torch.equal(_forward(model), as_loaded)
