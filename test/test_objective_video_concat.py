"""Base mode's concat condition: the repeated first-frame latent (DynamiCrafter), video mode's
(first-frame latent at index 0, zeros elsewhere), or a per-sample mix of the two."""

import pytest
import torch

from showme_model.model import ShowMeModel
from showme_model.sampler_config import SamplerConfig
from training.config import (
    CfgDropoutConfig,
    MotionRewardConfig,
    StructureRewardConfig,
    config_from_dict,
)
from training.objectives import DiffusionObjective
from training.synthetic import MovingSquares

torch.set_num_threads(1)
FRAMES = 4


def concat_inputs(mode, video_concat, batch_size=2, concat_layout="first_frame"):
    """The concat channels the UNet receives for one batch, and the first frames' latents."""
    torch.manual_seed(0)
    model = ShowMeModel.from_config_name("tiny")
    model.sampler_config = SamplerConfig(concat_layout=concat_layout)
    objective = DiffusionObjective(
        model,
        mode,
        seed=0,
        cfg_dropout=CfgDropoutConfig(),
        structure=StructureRewardConfig(enabled=False),
        motion=MotionRewardConfig(enabled=False),
        video_concat=video_concat,
    )
    data = MovingSquares(batch_size, 32, FRAMES)
    video = torch.stack([data[i]["video"] for i in range(batch_size)])
    seen = {}
    unet_forward = model.unet.forward

    def record(sample, *args, **kwargs):
        seen["concat"] = sample[:, sample.shape[1] // 2 :].detach().clone()
        return unet_forward(sample, *args, **kwargs)

    model.unet.forward = record
    batch = {
        "video": video,
        "instruction": ["move the square"] * batch_size,
        "draw_id": torch.arange(batch_size),
    }
    objective(batch)
    with torch.no_grad():
        first = model.encode_latents(video)[:, :, 0]
    return seen["concat"], first


def test_video_concat_puts_the_first_latent_at_index_zero_and_zeros_elsewhere():
    concat, first = concat_inputs("base", 1.0)
    assert concat.shape[2] == FRAMES
    torch.testing.assert_close(concat[:, :, 0], first)
    assert torch.count_nonzero(concat[:, :, 1:]) == 0


def test_repeated_concat_is_the_default():
    concat, first = concat_inputs("base", 0.0)
    for frame in range(FRAMES):
        torch.testing.assert_close(concat[:, :, frame], first)


def test_a_mix_draws_the_condition_per_sample():
    concat, first = concat_inputs("base", 0.5, batch_size=16)
    video_mode = concat[:, :, 1:].flatten(1).abs().sum(1) == 0
    assert 0 < int(video_mode.sum()) < 16
    torch.testing.assert_close(concat[:, :, 0], first)
    again, _ = concat_inputs("base", 0.5, batch_size=16)
    torch.testing.assert_close(again, concat)  # seeded by (run seed, draw)


def test_stage2_keeps_video_mode_whatever_the_setting():
    concat, _ = concat_inputs("stage2", 0.0)
    assert torch.count_nonzero(concat[:, :, 1:]) == 0


def test_video_concat_outside_zero_one_is_rejected():
    with pytest.raises(ValueError, match="video_concat"):
        config_from_dict(
            {"mode": "base", "video_concat": 1.5, "data": {"synthetic": 2}, "model": {}}
        )


def test_metaworld64v_recipe_configs_train_a_video_base_model():
    from training.config import load_config

    base = load_config("training/configs/metaworld64v-base.yaml", "base")
    assert base.data.num_frames >= 8 and base.video_concat == 1.0
    stages = {
        m: load_config(f"training/configs/metaworld64v-{m}.yaml", m) for m in ("stage1", "stage2")
    }
    for stage in stages.values():
        assert stage.model.folder == f"{base.output_dir}/final/model"
        assert stage.data.manifest == base.data.manifest
    assert stages["stage2"].model.manipulation_adapter.startswith(stages["stage1"].output_dir)


def test_stage2_follows_a_model_trained_with_the_repeated_layout():
    concat, first = concat_inputs("stage2", 0.0, concat_layout="repeated")
    for frame in range(FRAMES):
        torch.testing.assert_close(concat[:, :, frame], first)


def test_base_video_share_takes_the_model_layout():
    concat, first = concat_inputs("base", 1.0, concat_layout="repeated")
    torch.testing.assert_close(concat[:, :, -1], first)
