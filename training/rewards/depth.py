"""Frozen, differentiable depth critics for the structure reward.

:class:`DepthModel` wraps any network from a normalised RGB batch to depth behind one interface:
RGB images in ``[-1, 1]`` of shape ``(B, 3, H, W)`` in, depth maps ``(B, 1, H, W)`` out, with
gradients flowing back into the images while the network's own weights stay frozen. Two kinds of
network load from local files only (nothing is downloaded):

- ``"dpt"``: any DPT / MiDaS checkpoint folder that transformers reads with
  ``AutoModelForDepthEstimation`` (its ``preprocessor_config.json``, when present, gives the
  normalisation and input size);
- ``"small"``: :class:`training.rewards.small_depth.SmallDepthNet` (one safetensors file).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

DEPTH_KINDS = ("dpt", "small")
# DPT's convolutional neck halves the resolution five times.
_DPT_MULTIPLE = 32


class DepthModel(nn.Module):
    """A frozen depth network with its preprocessing, differentiable with respect to its input.

    Args:
        net: Maps the preprocessed ``(B, 3, h, w)`` batch to depth, as a tensor ``(B, h', w')`` or
            ``(B, 1, h', w')`` or an output object with a ``predicted_depth`` field.
        mean: Per-channel mean subtracted from images in ``[0, 1]``.
        std: Per-channel standard deviation the centred images are divided by.
        input_size: ``(h, w)`` the images are resized to (bicubic) before ``net``; ``None`` keeps
            their size.
        normalize: Min-max normalise each predicted map to ``[0, 1]``. Use it for relative
            (affine-invariant) depth such as MiDaS, whose scale and shift are arbitrary.

    """

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        input_size: tuple[int, int] | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 entries and std > 0, got {mean}, {std}")
        self.net = net.eval().requires_grad_(False)
        self.input_size = tuple(input_size) if input_size is not None else None
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> DepthModel:
        """Keep the network in eval mode: a critic's dropout and norms must not change."""
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Depth ``(B, 1, H, W)`` of RGB ``images`` ``(B, 3, H, W)`` in ``[-1, 1]``."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images (B, 3, H, W), got shape {tuple(images.shape)}")
        size = images.shape[-2:]
        x = (images + 1.0) * 0.5
        if self.input_size is not None and tuple(size) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bicubic", align_corners=False)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        depth = self.net(x)
        depth = getattr(depth, "predicted_depth", depth)
        if depth.dim() == 3:
            depth = depth.unsqueeze(1)
        if depth.shape[-2:] != size:
            depth = F.interpolate(depth, size=size, mode="bicubic", align_corners=False)
        if self.normalize:
            flat = depth.flatten(1)
            low = flat.min(1).values.view(-1, 1, 1, 1)
            high = flat.max(1).values.view(-1, 1, 1, 1)
            depth = (depth - low) / (high - low + 1e-8)
        return depth


def load_dpt(path: str | Path, input_size: int | tuple[int, int] | None = None) -> DepthModel:
    """Load a DPT / MiDaS checkpoint folder through transformers, from local files only.

    Args:
        path: A folder with ``config.json`` and the weights (as ``save_pretrained`` writes it).
        input_size: Size the images are resized to; by default the preprocessor's size, else the
            images' own size (which must then be a multiple of 32).

    Raises:
        FileNotFoundError: The folder or its ``config.json`` does not exist.

    """
    from transformers import AutoModelForDepthEstimation

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no depth model folder (config.json) at {path}")
    net = AutoModelForDepthEstimation.from_pretrained(path, local_files_only=True)
    mean, std, size = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), None
    processor_file = path / "preprocessor_config.json"
    if processor_file.is_file():
        processor = json.loads(processor_file.read_text())
        mean = tuple(processor.get("image_mean", mean))
        std = tuple(processor.get("image_std", std))
        if "height" in processor.get("size", {}):
            size = (processor["size"]["height"], processor["size"]["width"])
    if input_size is not None:
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if size is not None and (size[0] % _DPT_MULTIPLE or size[1] % _DPT_MULTIPLE):
        raise ValueError(f"DPT input size must be a multiple of {_DPT_MULTIPLE}, got {size}")
    return DepthModel(net, mean=mean, std=std, input_size=size, normalize=True)


def load_small_depth(path: str | Path, normalize: bool = False) -> DepthModel:
    """Load the small depth network (:mod:`training.rewards.small_depth`, images in [-1, 1])."""
    from training.rewards.small_depth import SmallDepthNet

    return DepthModel(SmallDepthNet.from_file(path), normalize=normalize)


def load_depth_model(
    kind: str, path: str | Path, input_size: int | tuple[int, int] | None = None
) -> DepthModel:
    """Load a frozen depth critic of ``kind`` (``"dpt"`` or ``"small"``) from a local ``path``."""
    if kind == "dpt":
        return load_dpt(path, input_size)
    if kind == "small":
        return load_small_depth(path)
    raise ValueError(f"unknown depth model kind {kind!r}; use one of {', '.join(DEPTH_KINDS)}")
