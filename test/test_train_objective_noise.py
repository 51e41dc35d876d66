"""The objective noises latents with diffusers' DDPMScheduler.add_noise / get_velocity, which equal
the forward process written out: x_t = sqrt(a) x0 + sqrt(1 - a) eps, v = sqrt(a) eps - sqrt(1 - a)
x0, with a = alphas_cumprod[t]."""

import pytest
import torch

from showme_model import presets
from showme_model.model import ShowMeModel
from training.config import CfgDropoutConfig, MotionRewardConfig, StructureRewardConfig
from training.data_order import sample_generator
from training.objectives import DiffusionObjective

torch.set_num_threads(1)


def _objective(schedule: str, mode: str = "base") -> DiffusionObjective:
    torch.manual_seed(0)
    model = ShowMeModel.from_config_name("tiny")
    model.scheduler_config = presets.scheduler_config(schedule)
    off = StructureRewardConfig(enabled=False)
    return DiffusionObjective(
        model, mode, 5, CfgDropoutConfig(), off, MotionRewardConfig(enabled=False)
    )


def _written_out(alphas_cumprod, latents, noise, t):
    a = alphas_cumprod[t].view(-1, 1, 1, 1, 1).to(latents.dtype)
    return a.sqrt() * latents + (1 - a).sqrt() * noise, a.sqrt() * noise - (1 - a).sqrt() * latents


@pytest.mark.parametrize("schedule", ["dynamicrafter-256", "dynamicrafter-512"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scheduler_forward_process_equals_the_formula(schedule, dtype):
    objective = _objective(schedule)
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(6, 4, 3, 8, 8, generator=generator).to(dtype)
    noise = torch.randn(6, 4, 3, 8, 8, generator=generator).to(dtype)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    noisy, velocity = _written_out(objective.alphas_cumprod, latents, noise, t)
    assert torch.equal(objective.noise_scheduler.add_noise(latents, noise, t), noisy)
    assert torch.equal(objective.noise_scheduler.get_velocity(latents, noise, t), velocity)


@pytest.mark.parametrize("schedule", ["dynamicrafter-256", "dynamicrafter-512"])
def test_the_unet_sees_the_noised_latents_and_learns_the_schedules_target(schedule, monkeypatch):
    objective = _objective(schedule)
    model = objective.model
    video = torch.rand(2, 3, 3, 64, 64) * 2 - 1
    batch = {"video": video, "instruction": ["a", "b"], "draw_id": torch.tensor([3, 4])}
    seen = {}

    def capture(module, args, kwargs, output):
        seen["input"], seen["t"], seen["output"] = args[0], args[1], output

    handle = model.unet.register_forward_hook(capture, with_kwargs=True)
    try:
        losses = objective(batch)
    finally:
        handle.remove()
    generators = [sample_generator(5, d) for d in (3, 4)]
    t = torch.cat([torch.randint(1000, (1,), generator=g) for g in generators])
    with torch.no_grad():
        latents = model.encode_latents(video)
    noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in generators])
    noisy, velocity = _written_out(objective.alphas_cumprod, latents, noise, t)
    assert torch.equal(seen["t"], t)
    assert torch.allclose(seen["input"][:, :4], noisy, atol=1e-6)
    target = noise if objective.prediction_type == "epsilon" else velocity
    mse = (seen["output"].float() - target).pow(2).mean()
    assert losses["mse"].item() == pytest.approx(mse.item(), rel=1e-5)
