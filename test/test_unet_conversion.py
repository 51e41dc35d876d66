from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from showme_model.presets import unet_config
from showme_model.unet import ShowMeUNet, lora_target_modules
from showme_model.unet_conversion import (
    UNET_PREFIX,
    convert_dynamicrafter_unet,
    convert_showme_lora_unet,
)

FIXTURE = Path(__file__).parent / "fixtures" / "dynamicrafter_parity"


@pytest.fixture(scope="module")
def original() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE / "unet.safetensors")


@pytest.fixture(scope="module")
def meta_256() -> ShowMeUNet:
    with torch.device("meta"):
        return ShowMeUNet(**unet_config("dynamicrafter-256"))


def test_prefix_is_optional_and_other_components_are_left_alone(original):
    config = unet_config("tiny")
    full = {**original, "first_stage_model.decoder.conv_out.weight": torch.zeros(1)}
    bare = {k.removeprefix(UNET_PREFIX): v for k, v in original.items()}
    from_full = convert_dynamicrafter_unet(full, config)
    from_bare = convert_dynamicrafter_unet(bare, config)
    assert from_full.unexpected == from_bare.unexpected == []
    assert from_full.state_dict.keys() == from_bare.state_dict.keys()
    expected = ShowMeUNet(**config).state_dict().keys()
    assert set(from_full.state_dict) == set(expected)


def test_frame_stride_embedding_is_found_under_both_names(original):
    renamed = {k.replace("framestride_embed", "fps_embedding"): v for k, v in original.items()}
    a = convert_dynamicrafter_unet(original, unet_config("tiny")).state_dict
    b = convert_dynamicrafter_unet(renamed, unet_config("tiny")).state_dict
    torch.testing.assert_close(a["fs_embedding.linear_2.weight"], b["fs_embedding.linear_2.weight"])


def test_missing_and_unexpected_keys_are_reported(original):
    dropped = f"{UNET_PREFIX}input_blocks.1.0.temopral_conv.conv4.3.weight"
    partial = {k: v for k, v in original.items() if k != dropped}
    partial[f"{UNET_PREFIX}input_blocks.1.0.not_a_layer.weight"] = torch.zeros(1)
    partial[f"{UNET_PREFIX}nonsense.weight"] = torch.zeros(1)
    result = convert_dynamicrafter_unet(partial, unet_config("tiny"))
    assert result.missing == ["down_blocks.0.temp_convs.0.conv4.3.weight"]
    assert sorted(result.unexpected) == [
        f"{UNET_PREFIX}input_blocks.1.0.not_a_layer.weight",
        f"{UNET_PREFIX}nonsense.weight",
    ]
    assert f"missing {dropped} -> down_blocks.0.temp_convs.0.conv4.3.weight" in result.unmatched()


def test_every_missing_key_is_named_as_the_checkpoint_spells_it(original):
    result = convert_dynamicrafter_unet({}, unet_config("tiny"))
    assert len(result.missing) == len(original)
    named = {result.counterparts[key] for key in result.missing}
    assert named == {key.removeprefix(UNET_PREFIX) for key in original}


def test_every_missing_lora_key_is_named_as_the_release_spells_it():
    for stage in (1, 2):
        release = load_file(FIXTURE / f"stage{stage}_lora.safetensors")
        used = set(convert_showme_lora_unet(release, stage, unet_config("tiny")).state_dict)
        result = convert_showme_lora_unet(
            {f"{UNET_PREFIX}x": torch.zeros(1)}, stage, {**unet_config("tiny")}
        )
        assert len(result.missing) == len(used)
        named = {result.counterparts[key] for key in result.missing}
        ignored = {k for k in release if "init_attn" in k or ".2.transformer_blocks" in k}
        expected = set(release) - (ignored if stage == 1 else set())
        assert named == expected


def test_a_duplicate_source_for_one_weight_is_unexpected(original):
    both = {**original}
    both.update({k.replace("framestride_embed", "fps_embedding"): v for k, v in original.items()})
    result = convert_dynamicrafter_unet(both, unet_config("tiny"))
    assert len(result.unexpected) == 4 and not result.missing
    assert all(result.counterparts[key].startswith("fs_embedding.") for key in result.unexpected)


def test_lora_shapes_and_ranks_are_checked():
    release = load_file(FIXTURE / "stage2_lora.safetensors")
    key = f"{UNET_PREFIX}input_blocks.1.1.transformer_blocks.0.attn2.stage2_lora_cross_attn_k"
    wrong_input = {**release, f"{key}.lora_A": torch.zeros(7, 4)}
    with pytest.raises(ValueError, match=rf"{key}.lora_A: shape \(4, 7\) does not fit .*attn2"):
        convert_showme_lora_unet(wrong_input, 2, unet_config("tiny"))
    wrong_rank = {**release, f"{key}.lora_B": release[f"{key}.lora_B"][:2]}
    with pytest.raises(ValueError, match=rf"{key}.lora_A has rank 4 but {key}.lora_B has rank 2"):
        convert_showme_lora_unet(wrong_rank, 2, unet_config("tiny"))


def test_wrong_config_raises_a_clear_error(original):
    wider = {**unet_config("tiny"), "block_out_channels": (64, 64)}
    with pytest.raises(ValueError, match="is the UNet config right"):
        convert_dynamicrafter_unet(original, wider)


def test_lora_roles_follow_the_release(meta_256):
    manipulation = lora_target_modules(meta_256, "manipulation")
    prediction = lora_target_modules(meta_256, "prediction")
    assert not any("to_out" in name for name in prediction)
    assert set(manipulation) < set(prediction)
    assert not any("temp_attentions" in n or "transformer_in" in n for n in manipulation)
    # 16 spatial transformers x (3 self + 5 cross + 2 feed-forward)
    assert len(manipulation) == 160
    # plus 17 temporal transformers (16 + transformer_in) x (3 + 3 + 2)
    assert len(prediction) == 160 + 17 * 8
    assert sum(n.endswith("attn2.to_k_ip") for n in manipulation) == 16
    with pytest.raises(ValueError, match="unknown LoRA role"):
        lora_target_modules(meta_256, "stage3")


def test_stage1_temporal_feed_forward_lora_is_ignored_not_lost():
    release = load_file(FIXTURE / "stage1_lora.safetensors")
    result = convert_showme_lora_unet(release, 1, unet_config("tiny"))
    assert result.ignored
    assert all("_lora_ff_" in k and "never runs in image mode" in k for k in result.ignored)
    assert len(result.state_dict) + len(result.ignored) == len(release)
    again = convert_showme_lora_unet(release, 2, unet_config("tiny"))
    assert len(again.unexpected) == len(release)


def test_lora_layout_and_orientation():
    release = load_file(FIXTURE / "stage2_lora.safetensors")
    config = unet_config("tiny")
    named = convert_showme_lora_unet(release, 2, config, adapter_name="prediction").state_dict
    key = f"{UNET_PREFIX}input_blocks.1.1.transformer_blocks.0.attn2.stage2_lora_cross_attn_ip_k"
    ours = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k_ip"
    torch.testing.assert_close(
        named[f"{ours}.lora_A.prediction.weight"], release[f"{key}.lora_A"].t()
    )
    torch.testing.assert_close(
        named[f"{ours}.lora_B.prediction.weight"], release[f"{key}.lora_B"].t()
    )
    without = {k: v for k, v in release.items() if not k.startswith(key)}
    result = convert_showme_lora_unet(without, 2, config)
    assert result.missing == [f"{ours}.lora_A.weight", f"{ours}.lora_B.weight"]
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        convert_showme_lora_unet(release, 3, config)
