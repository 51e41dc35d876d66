"""ShowMeUNet against outputs of the original DynamiCrafter and ShowMe code (fixture data only).

The fixture holds a tiny UNet of the original implementation with every parameter random, in
the original checkpoint layout (``model.diffusion_model.*``, ``framestride_embed``), random
ShowMe LoRA weights in the release's layout, the inputs and the original outputs.
"""

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import load_file

from showme_model.unet import ShowMeUNet, lora_target_modules
from showme_model.unet_conversion import convert_dynamicrafter_unet, convert_showme_lora_unet

FIXTURE = Path(__file__).parent / "fixtures" / "dynamicrafter_parity"
TOLERANCE = 1e-4
LORA_RANK = 4


def _load(name: str) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in load_file(FIXTURE / name).items()}


@pytest.fixture(scope="module")
def config() -> dict:
    return json.loads((FIXTURE / "unet_config.json").read_text())


@pytest.fixture(scope="module")
def cases() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE / "cases.safetensors")


@pytest.fixture(scope="module")
def converted(config) -> dict[str, torch.Tensor]:
    result = convert_dynamicrafter_unet(_load("unet.safetensors"), config)
    assert result.missing == []
    assert result.unexpected == []
    return result.state_dict


def _unet(config: dict, weights: dict, **overrides) -> ShowMeUNet:
    model = ShowMeUNet(**{**config, **overrides})
    model.load_state_dict(weights)
    return model.eval()


def _with_lora(model: ShowMeUNet, config: dict, stage: int, role: str) -> ShowMeUNet:
    lora = convert_showme_lora_unet(_load(f"stage{stage}_lora.safetensors"), stage, config)
    assert lora.missing == []
    assert lora.unexpected == []
    targets = lora_target_modules(model, role)
    peft_config = LoraConfig(
        r=LORA_RANK, lora_alpha=LORA_RANK, lora_dropout=0.1, target_modules=targets
    )
    inject_adapter_in_model(peft_config, model, adapter_name=role)
    result = set_peft_model_state_dict(model, lora.state_dict, adapter_name=role)
    assert not result.unexpected_keys
    return model.eval()


def _assert_matches(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("case", ["video_a", "video_b"])
def test_video_mode_matches_dynamicrafter(config, converted, cases, case):
    model = _unet(config, converted)
    stride = cases.get(f"{case}.frame_stride")
    with torch.no_grad():
        out = model(
            cases[f"{case}.sample"],
            cases[f"{case}.timestep"],
            cases[f"{case}.context"],
            frame_stride=stride,
        )
    _assert_matches(out, cases[f"{case}.output"])


def test_release_image_mode_needs_the_temporal_convs(config, converted, cases):
    inputs = (cases["image.sample"], cases["image.timestep"], cases["image.context"])
    with torch.no_grad():
        release = _unet(config, converted, image_mode_temporal_convs=True)(*inputs, temporal=False)
        paper = _unet(config, converted)(*inputs, temporal=False)
    _assert_matches(release, cases["image_base.output"])
    assert (paper - cases["image_base.output"]).abs().max().item() > 1e-2


def test_stage1_lora_in_image_mode_matches_showme(config, converted, cases):
    model = _with_lora(
        _unet(config, converted, image_mode_temporal_convs=True), config, 1, "manipulation"
    )
    with torch.no_grad():
        out = model(
            cases["image.sample"], cases["image.timestep"], cases["image.context"], temporal=False
        )
    _assert_matches(out, cases["image.output"])
    assert (out - cases["image_base.output"]).abs().max().item() > 1e-2


def test_stage2_lora_in_video_mode_matches_showme(config, converted, cases):
    model = _with_lora(_unet(config, converted), config, 2, "prediction")
    with torch.no_grad():
        out = model(
            cases["video_a.sample"],
            cases["video_a.timestep"],
            cases["video_a.context"],
            frame_stride=cases["video_a.frame_stride"],
        )
    _assert_matches(out, cases["video_lora.output"])
