"""LPIPS (Zhang et al. 2018, VGG variant) in plain torch, from local weight files only.

Two files, both read as data: torchvision's VGG-16 ImageNet weights (``vgg16-397923af.pth``;
only the ``features.*`` entries are used) and the LPIPS linear heads (``vgg.pth`` of the
``lpips`` package, keys ``lin{k}.model.1.weight``). The VGG trunk is rebuilt here with the same
layer indices as torchvision's, so no torchvision import is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from showme_model.checkpoint_io import CheckpointError, load_checkpoint

_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Slices of the feature stack ending at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_TAPS = (4, 9, 16, 23, 30)
_WIDTHS = (64, 128, 256, 512, 512)
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def vgg16_features() -> nn.Sequential:
    """VGG-16's convolutional trunk with torchvision's module indices (``features.<i>``)."""
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=False)]
            channels = int(item)
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """Learned perceptual distance; 0 for identical images, larger is more different."""

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(w, 1, 1, bias=False) for w in _WIDTHS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_files(cls, vgg: str | Path, lin: str | Path) -> LPIPS:
        """Load torchvision VGG-16 weights and LPIPS linear heads (frozen, eval mode)."""
        model = cls()
        trunk = {k[len("features.") :]: v for k, v in load_checkpoint(vgg).items()}
        trunk = {k: v for k, v in trunk.items() if k.split(".")[0].isdigit()}
        heads = {
            f"{k}.weight": load_checkpoint(lin).get(f"lin{k}.model.1.weight")
            for k in range(len(_WIDTHS))
        }
        if any(v is None for v in heads.values()):
            raise CheckpointError(f"{lin} lacks the LPIPS heads lin0..lin4.model.1.weight")
        try:
            model.features.load_state_dict(trunk)
            model.lins.load_state_dict(heads)
        except RuntimeError as error:
            raise CheckpointError(f"LPIPS weights do not fit VGG-16: {error}") from error
        return model.eval().requires_grad_(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distance per pair of (B, 3, H, W) images in [-1, 1]; returns (B,)."""
        x, y = (a - self.shift) / self.scale, (b - self.shift) / self.scale
        total = torch.zeros(a.shape[0], device=a.device)
        start = 0
        for tap, lin in zip(_TAPS, self.lins, strict=True):
            for layer in self.features[start:tap]:
                x, y = layer(x), layer(y)
            start = tap
            fx = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fy = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((fx - fy) ** 2).mean(dim=(1, 2, 3))
        return total

    @torch.no_grad()
    def score(
        self, predictions: Sequence[np.ndarray], targets: Sequence[np.ndarray]
    ) -> list[float]:
        """LPIPS of uint8 HxWx3 prediction/target pairs (same size within a pair)."""

        def batch(images: Sequence[np.ndarray]) -> torch.Tensor:
            array = np.stack([np.asarray(i, np.float32) for i in images]) / 127.5 - 1.0
            return torch.from_numpy(array).permute(0, 3, 1, 2)

        return self(batch(predictions), batch(targets)).tolist()
