"""Structure and motion reward losses: values, gradients and the one-step x0 estimate."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from training.rewards.edges import SobelEdges
from training.rewards.losses import StructureReward, motion_reward, predict_x0


def _schedule():
    return DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_predict_x0_inverts_the_forward_process(prediction_type):
    scheduler = _schedule()
    x0 = torch.randn(3, 4, 2, 8, 8)
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 480, 999])
    noisy = scheduler.add_noise(x0, noise, t)
    target = noise if prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
    estimate = predict_x0(noisy, target, t, scheduler.alphas_cumprod, prediction_type)
    torch.testing.assert_close(estimate, x0, atol=2e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="prediction_type"):
        predict_x0(noisy, target, t, scheduler.alphas_cumprod, "sample")


def test_structure_reward_zero_on_target_and_gradient_otherwise():
    reward = StructureReward(edge_model=SobelEdges(), depth_model=SobelEdges(), edge_weight=2.0)
    target = torch.rand(2, 3, 16, 16) * 2 - 1
    same = reward(target.clone(), target)
    assert same["total"].shape == (2,) and same["total"].abs().max().item() < 1e-10
    images = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    losses = reward(images, target)
    torch.testing.assert_close(losses["total"], 2.0 * losses["edge"] + losses["depth"])
    alone = reward(images[1:], target[1:])["total"]
    torch.testing.assert_close(losses["total"][1:], alone)  # per sample
    losses["total"].sum().backward()
    assert images.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs a depth model"):
        StructureReward()


def test_motion_reward_matches_hand_computed_kl():
    # Two frame differences; the flow puts all motion in the second one, the latent splits it.
    x0 = torch.zeros(1, 1, 3, 1, 1)
    x0[0, 0, :, 0, 0] = torch.tensor([0.0, 1.0, 2.0])  # latent motion 1, 1
    flow = torch.tensor([0.0, 4.0]).view(1, 2, 1, 1)
    eps = 1e-6
    p = torch.tensor([eps, 4.0 + eps])
    p = p / p.sum()
    q = torch.tensor([0.5, 0.5])
    expected = float((p * (p.log() - q.log())).sum())
    assert motion_reward(x0, flow).item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(math.log(2), rel=1e-4)


def test_motion_reward_pools_flow_and_is_per_sample():
    x0 = torch.randn(2, 4, 5, 4, 4, requires_grad=True)
    flow = torch.rand(2, 4, 32, 32)
    per_sample = motion_reward(x0, flow)
    assert per_sample.shape == (2,) and (per_sample >= 0).all()
    alone = motion_reward(x0[1:], flow[1:])
    torch.testing.assert_close(per_sample[1:], alone)
    per_sample.sum().backward()
    assert x0.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="T-1"):
        motion_reward(x0, flow[:, :3])
