"""change_weight: latent cells whose pixels change between the source and the frame weigh more."""

import pytest
import torch
import torch.nn.functional as F

from showme_model.model import ShowMeModel
from training.config import (
    CfgDropoutConfig,
    MotionRewardConfig,
    StructureRewardConfig,
    config_from_dict,
)
from training.objectives import DiffusionObjective, changed_cells
from training.synthetic import MovingSquares

torch.set_num_threads(1)


def test_a_cell_changes_when_one_of_its_pixels_does():
    frames = torch.full((1, 3, 2, 16, 16), -1.0)
    source = torch.full((1, 3, 16, 16), -1.0)
    frames[0, 1, 1, 5, 9] = 1.0  # one pixel of one channel, second frame
    frames[0, :, 1, 12, 0] = -1.0 + 0.05  # below the threshold: not a change
    cells = changed_cells(frames, source, (4, 4))
    assert cells.shape == (1, 2, 4, 4)
    assert cells[0, 0].sum() == 0
    assert cells[0, 1].nonzero().tolist() == [[1, 2]]


def _objective(change_weight):
    torch.manual_seed(0)
    model = ShowMeModel.from_config_name("tiny")
    objective = DiffusionObjective(
        model,
        "base",
        seed=0,
        cfg_dropout=CfgDropoutConfig(),
        structure=StructureRewardConfig(enabled=False),
        motion=MotionRewardConfig(enabled=False),
        change_weight=change_weight,
    )
    return objective.eval()


def test_the_loss_weighs_changed_cells_and_is_the_plain_mean_at_zero(monkeypatch):
    data = MovingSquares(2, 32, 4)
    video = torch.stack([data[i]["video"] for i in range(2)])
    batch = {"video": video, "instruction": ["move"] * 2, "draw_id": torch.arange(2)}
    errors = []
    mse_loss = F.mse_loss

    def record(*args, **kwargs):
        errors.append(mse_loss(*args, **kwargs))
        return errors[-1]

    monkeypatch.setattr("training.objectives.F.mse_loss", record)
    plain, weighted = _objective(0.0), _objective(4.0)
    with torch.no_grad():
        plain_mse = plain(batch, use_rewards=False)["mse"]
        weighted_mse = weighted(batch, use_rewards=False)["mse"]
        latents = plain.model.encode_latents(video)
    # Same model, seeds and draws: both objectives see the same per-element error.
    torch.testing.assert_close(errors[0], errors[1])
    torch.testing.assert_close(plain_mse, errors[0].mean())
    cells = changed_cells(video, video[:, :, 0], latents.shape[-2:])
    assert 0 < cells.mean() < 1  # the moving square changes some cells only
    expected = (errors[1] * (1 + 4.0 * cells.unsqueeze(1))).flatten(1).mean(1).mean()
    torch.testing.assert_close(weighted_mse, expected)
    assert weighted_mse > plain_mse


def test_a_negative_weight_is_refused():
    with pytest.raises(ValueError, match="change_weight"):
        _objective(-1.0)
    with pytest.raises(ValueError, match="change_weight"):
        config_from_dict({"mode": "base", "change_weight": -0.5, "model": {"preset": "tiny"}})
