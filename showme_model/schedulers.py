"""Diffusers schedulers selected by name, all built from the model's noise schedule.

``"ddim"`` is the reference sampler (DynamiCrafter: 50 steps, eta 1.0, timesteps 1, 21, ..., 981,
alpha_prev of the last step = alphas_cumprod[0]); the others trade a little fidelity for fewer
steps.
"""

from __future__ import annotations

from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

# Settings that make diffusers' DDIM walk exactly the reference timesteps.
REFERENCE_DDIM = {
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "set_alpha_to_one": False,
    "clip_sample": False,
}

SCHEDULERS: dict[str, tuple[type[SchedulerMixin], dict[str, Any]]] = {
    "ddim": (DDIMScheduler, REFERENCE_DDIM),
    "dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "dpmsolver++-sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
    "unipc": (UniPCMultistepScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-ancestral": (EulerAncestralDiscreteScheduler, {}),
}


def make_scheduler(name: str, noise_schedule: dict[str, Any]) -> SchedulerMixin:
    """Build the scheduler called ``name`` over the model's noise schedule.

    Args:
        name: one of ``SCHEDULERS`` (case-insensitive).
        noise_schedule: a scheduler config (``num_train_timesteps``, ``beta_schedule``,
            ``beta_start``, ``beta_end``, ``prediction_type``, ...), e.g. the model folder's
            ``scheduler/scheduler_config.json``.

    """
    key = name.lower()
    if key not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}")
    cls, overrides = SCHEDULERS[key]
    return cls.from_config(dict(noise_schedule), **overrides)
