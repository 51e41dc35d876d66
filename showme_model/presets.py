"""Named UNet and noise-schedule configurations.

``dynamicrafter-256`` is DynamiCrafter's 256x256 image-to-video model (eps-prediction).
``dynamicrafter-512`` / ``-1024`` share its UNet layout but use a fixed image-attention weight and
a different default frame stride (the 512/1024 models are conditioned on fps); their schedules
use v-prediction with zero-terminal-SNR rescaling. ``tiny`` is for tests.
"""

from __future__ import annotations

from typing import Any

_DYNAMICRAFTER_UNET: dict[str, Any] = {
    "in_channels": 8,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "attention_levels": (True, True, True, False),
    "attention_head_dim": 64,
    "transformer_in_heads": 8,
    "cross_attention_dim": 1024,
    "text_length": 77,
    "image_tokens_per_frame": 16,
    "learnable_image_weight": True,
    "default_frame_stride": 3,
    "dropout": 0.1,
    "image_mode_temporal_convs": False,
}

_UNET_CONFIGS: dict[str, dict[str, Any]] = {
    "dynamicrafter-256": _DYNAMICRAFTER_UNET,
    "dynamicrafter-512": {
        **_DYNAMICRAFTER_UNET,
        "learnable_image_weight": False,
        "default_frame_stride": 24,
    },
    "dynamicrafter-1024": {
        **_DYNAMICRAFTER_UNET,
        "learnable_image_weight": False,
        "default_frame_stride": 10,
    },
    "tiny": {
        **_DYNAMICRAFTER_UNET,
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "attention_levels": (True, False),
        "attention_head_dim": 8,
        "cross_attention_dim": 32,
    },
}

_EPS_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "rescale_betas_zero_snr": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "set_alpha_to_one": False,
    "clip_sample": False,
}

_V_SCHEDULE: dict[str, Any] = {
    **_EPS_SCHEDULE,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
}

_SCHEDULER_CONFIGS: dict[str, dict[str, Any]] = {
    "dynamicrafter-256": _EPS_SCHEDULE,
    "dynamicrafter-512": _V_SCHEDULE,
    "dynamicrafter-1024": _V_SCHEDULE,
    "tiny": _EPS_SCHEDULE,
}

PRESETS: tuple[str, ...] = tuple(_UNET_CONFIGS)


def _lookup(table: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    if name not in table:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dict(table[name])


def unet_config(name: str) -> dict[str, Any]:
    """Keyword arguments of :class:`~showme_model.unet.ShowMeUNet` for preset ``name``."""
    return _lookup(_UNET_CONFIGS, name)


def scheduler_config(name: str) -> dict[str, Any]:
    """Keyword arguments of diffusers' ``DDIMScheduler`` for preset ``name``."""
    return _lookup(_SCHEDULER_CONFIGS, name)
