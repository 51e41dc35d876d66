"""A small monocular depth network, the frozen depth prior of the shipped model's structure reward.

Large depth models (DPT, MiDaS) do not ship offline. This U-Net of a few hundred thousand
parameters is trained on simulator frames against the depth the renderer produces
(``training/train_depth.py``) and then used frozen: it is differentiable, so the structure
reward's gradient flows through it into the image that was fed in.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from showme_model.checkpoint_io import CheckpointError, load_checkpoint

_CONFIG_KEY = "small_depth_config"


def _conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    groups = 8 if out_channels % 8 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
        nn.GroupNorm(groups, out_channels),
        nn.SiLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.GroupNorm(groups, out_channels),
        nn.SiLU(),
    )


class SmallDepthNet(nn.Module):
    """U-Net from an RGB image in [-1, 1] to positive depth (in the training data's unit, metres).

    Args:
        channels: Feature widths per level, finest first; each further level halves the
            resolution. Any input size works (decoder features are resized to the skip's size).

    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 96)) -> None:
        super().__init__()
        if len(channels) < 2 or any(c <= 0 for c in channels):
            raise ValueError(f"channels must be at least two positive widths, got {channels}")
        self.channels = tuple(int(c) for c in channels)
        self.encoder = nn.ModuleList(
            [_conv_block(3, self.channels[0])]
            + [
                _conv_block(c_in, c_out, stride=2)
                for c_in, c_out in zip(self.channels[:-1], self.channels[1:], strict=True)
            ]
        )
        self.decoder = nn.ModuleList(
            [
                _conv_block(c_deep + c_skip, c_skip)
                for c_deep, c_skip in zip(self.channels[:0:-1], self.channels[-2::-1], strict=True)
            ]
        )
        self.head = nn.Conv2d(self.channels[0], 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Predict depth.

        Args:
            image: (B, 3, H, W) in [-1, 1].

        Returns:
            (B, 1, H, W) positive depth.

        """
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(image.shape)}")
        skips = []
        x = image
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in self.decoder:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return F.softplus(self.head(x))

    def save(self, path: str | Path) -> None:
        """Write the weights and the constructor arguments to one safetensors file."""
        state = {key: value.detach().cpu().contiguous() for key, value in self.state_dict().items()}
        metadata = {_CONFIG_KEY: json.dumps({"channels": list(self.channels)})}
        save_file(state, str(path), metadata=metadata)

    @classmethod
    def from_file(cls, path: str | Path) -> SmallDepthNet:
        """Load a network written by :meth:`save` (as data only), in eval mode.

        Raises:
            CheckpointError: The file is unreadable or is not a small depth network.

        """
        state = load_checkpoint(path)
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if _CONFIG_KEY not in metadata:
            raise CheckpointError(f"{path} has no {_CONFIG_KEY!r} metadata: not a SmallDepthNet")
        config = json.loads(metadata[_CONFIG_KEY])
        model = cls(channels=tuple(config["channels"]))
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise CheckpointError(f"{path} does not match its own config: {error}") from error
        return model.eval()
