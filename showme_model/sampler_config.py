"""Sampler settings of a model folder, and the one validation of a sampling request.

A model folder stores the settings it was tuned for in ``sampler_config.json`` at its root
(as transformers stores ``generation_config.json``)::

    {"num_inference_steps": 10, "guidance_scale": 1.0, "eta": 1.0, "scheduler": "ddim",
     "num_frames": 8, "frame_stride": null, "concat_layout": "first_frame",
     "keep_scene": true, "keep_scene_low": 0.03, "keep_scene_high": 0.09,
     "keep_scene_radius": 2}

The pipeline, ``showme predict``, ``showme-eval`` and the ROS node leave every sampler argument
at ``None`` by default and take these values; a folder without the file gets
:data:`REFERENCE_SAMPLER_CONFIG`, DynamiCrafter's reference sampler. Every entry point checks a
request with :func:`validate_request`, against the bounds defined here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from showme_model.schedulers import SCHEDULERS

SAMPLER_CONFIG_NAME = "sampler_config.json"

MAX_NUM_INFERENCE_STEPS = 1000  # the training schedule's length: more steps repeat timesteps
MAX_GUIDANCE_SCALE = 100.0  # far above any useful scale; refuses float-max and typos like 1e6
MAX_ETA = 1.0  # DDIM: above 1 the deterministic direction's variance turns negative (NaN)
MAX_FRAME_STRIDE = 100
MAX_KEEP_SCENE_RADIUS = 16
CONCAT_LAYOUTS = ("first_frame", "repeated")
"""Video mode's concat condition: the input's latent at frame 0 and zeros elsewhere (ShowMe's
inference), or at every frame (DynamiCrafter's training and inference)."""


class SamplerSettingsError(ValueError):
    """Sampler settings that are out of bounds, malformed, or unreadable from a folder."""


@dataclass(frozen=True)
class SamplerConfig:
    """How to sample a model; the defaults are DynamiCrafter's reference sampler.

    Attributes:
        num_inference_steps: Denoising steps, 1..:data:`MAX_NUM_INFERENCE_STEPS`.
        guidance_scale: Classifier-free guidance scale, 0..:data:`MAX_GUIDANCE_SCALE`
            (1 disables guidance).
        eta: DDIM noise scale, 0..:data:`MAX_ETA` (other schedulers ignore it).
        scheduler: A name from :data:`showme_model.schedulers.SCHEDULERS`.
        num_frames: Default rollout length in video mode.
        frame_stride: Frame-stride condition in video mode; ``None`` takes the UNet's default.
        concat_layout: Video mode's concat condition, one of :data:`CONCAT_LAYOUTS`. Like the
            frame stride, a condition the model was trained with, not a free choice.
        keep_scene: Composite the predicted frames over the input frame where they do not
            change it (:mod:`showme_model.scene_keeping`).
        keep_scene_low: Largest change (fraction of the intensity range) that keeps the
            input's pixel.
        keep_scene_high: Smallest change that keeps the prediction's pixel; above
            ``keep_scene_low``, at most 1.
        keep_scene_radius: Dilation and feathering of the change mask in pixels,
            0..:data:`MAX_KEEP_SCENE_RADIUS`.

    """

    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    eta: float = 1.0
    scheduler: str = "ddim"
    num_frames: int = 16
    frame_stride: int | None = None
    concat_layout: str = "first_frame"
    keep_scene: bool = False
    keep_scene_low: float = 0.03
    keep_scene_high: float = 0.09
    keep_scene_radius: int = 2

    def __post_init__(self) -> None:
        if self.concat_layout not in CONCAT_LAYOUTS:
            raise SamplerSettingsError(
                f"unknown concat_layout {self.concat_layout!r}; choose one of {CONCAT_LAYOUTS}"
            )
        if not isinstance(self.keep_scene, bool):
            raise SamplerSettingsError(f"keep_scene must be true or false, got {self.keep_scene!r}")
        _check_float("keep_scene_low", self.keep_scene_low, 1.0)
        _check_float("keep_scene_high", self.keep_scene_high, 1.0)
        if self.keep_scene_high <= self.keep_scene_low:
            raise SamplerSettingsError(
                f"keep_scene_high must be above keep_scene_low, got {self.keep_scene_high} <= "
                f"{self.keep_scene_low}"
            )
        _check_int("keep_scene_radius", self.keep_scene_radius, 0, MAX_KEEP_SCENE_RADIUS)
        validate_request(
            self.num_inference_steps,
            self.guidance_scale,
            self.eta,
            self.num_frames,
            frame_stride=self.frame_stride,
            scheduler=self.scheduler,
        )

    def resolve(self, **overrides: Any) -> SamplerConfig:
        """Return these settings with every override that is not ``None`` applied (validated)."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"not a sampler setting: {', '.join(unknown)}")
        return dataclasses.replace(
            self, **{name: value for name, value in overrides.items() if value is not None}
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as plain data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "sampler settings") -> SamplerConfig:
        """Build from plain data; unknown keys and bad values raise :class:`SamplerSettingsError`.

        Missing keys take the reference value.
        """
        if not isinstance(values, dict):
            raise SamplerSettingsError(f"{source} must be a mapping, got {type(values).__name__}")
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise SamplerSettingsError(f"{source}: unknown key(s) {', '.join(unknown)}")
        try:
            return cls(**values)
        except SamplerSettingsError as error:
            raise SamplerSettingsError(f"{source}: {error}") from error

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``sampler_config.json`` into ``folder``; returns the file's path."""
        path = Path(folder) / SAMPLER_CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> SamplerConfig | None:
        """Read ``folder``'s ``sampler_config.json``; ``None`` when the folder has none.

        Raises:
            SamplerSettingsError: The file is not valid JSON or holds bad settings.

        """
        path = Path(folder) / SAMPLER_CONFIG_NAME
        if not path.is_file():
            return None
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise SamplerSettingsError(f"{path} is not valid JSON: {error}") from error
        return cls.from_dict(values, source=str(path))


def validate_request(
    num_inference_steps: int,
    guidance_scale: float,
    eta: float,
    num_frames: int,
    max_frames: int | None = None,
    *,
    image_guidance_scale: float | None = None,
    frame_stride: int | None = None,
    scheduler: str | None = None,
    max_num_inference_steps: int = MAX_NUM_INFERENCE_STEPS,
) -> None:
    """Check sampler settings against the bounds of this module.

    Args:
        num_inference_steps: Denoising steps.
        guidance_scale: Text (or joint) guidance scale.
        eta: DDIM noise scale.
        num_frames: Frames to make (1 in image mode).
        max_frames: The longest rollout the model makes; unchecked when ``None``.
        image_guidance_scale: Image scale of two-scale guidance, when used.
        frame_stride: Frame-stride condition, when given.
        scheduler: Scheduler name, when given.
        max_num_inference_steps: A stricter step limit (e.g. a server's), at most
            :data:`MAX_NUM_INFERENCE_STEPS`.

    Raises:
        SamplerSettingsError: Naming the setting, the value and what is allowed.

    """
    if not 1 <= max_num_inference_steps <= MAX_NUM_INFERENCE_STEPS:
        raise SamplerSettingsError(
            f"max_num_inference_steps must be in 1..{MAX_NUM_INFERENCE_STEPS}, "
            f"got {max_num_inference_steps!r}"
        )
    _check_int("num_inference_steps", num_inference_steps, 1, max_num_inference_steps)
    _check_float("guidance_scale", guidance_scale, MAX_GUIDANCE_SCALE)
    if image_guidance_scale is not None:
        _check_float("image_guidance_scale", image_guidance_scale, MAX_GUIDANCE_SCALE)
    _check_float("eta", eta, MAX_ETA)
    _check_int("num_frames", num_frames, 1, None)
    if max_frames is not None and num_frames > max_frames:
        raise SamplerSettingsError(
            f"num_frames={num_frames} exceeds the {max_frames} frames this model produces"
        )
    if frame_stride is not None:
        _check_int("frame_stride", frame_stride, 1, MAX_FRAME_STRIDE)
    if scheduler is not None and (
        not isinstance(scheduler, str) or scheduler.lower() not in SCHEDULERS
    ):
        raise SamplerSettingsError(
            f"unknown scheduler {scheduler!r}; choose one of {sorted(SCHEDULERS)}"
        )


def _check_int(name: str, value: Any, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SamplerSettingsError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        allowed = f"in {low}..{high}" if high is not None else f">= {low}"
        raise SamplerSettingsError(f"{name} must be {allowed}, got {value}")


def _check_float(name: str, value: Any, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SamplerSettingsError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or not 0 <= value <= high:
        raise SamplerSettingsError(f"{name} must be a finite number in 0..{high:g}, got {value}")


REFERENCE_SAMPLER_CONFIG = SamplerConfig()
"""DynamiCrafter's reference sampler: DDIM, 50 steps, guidance 7.5, eta 1, 16 frames."""
