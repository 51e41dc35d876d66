"""Input policy of the pipeline: what images it accepts and how they reach the model's size.

Accepted images are arrays (numpy, or anything `numpy.asarray` reads, e.g. a PIL image) of shape
``(H, W)`` (grey), ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (the alpha channel is dropped),
``uint8`` in [0, 255] or floating point in [0, 1]. ``channel_order="bgr"`` reads OpenCV-style
images.

Resize rule (``resize_mode``):
- ``"crop"`` (default, as DynamiCrafter's loaders do): the largest centred region with the
  model's aspect ratio is cut out, then resized to the model's resolution (area interpolation when
  shrinking, bicubic when enlarging).
- ``"stretch"``: the whole image is resized to the model's resolution, aspect ratio ignored.

Restoring (``restore_frames``) resizes generated frames back to the size the model's input came
from: the centre-crop region's size under ``"crop"``, the full input size under ``"stretch"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ResizeMode = Literal["crop", "stretch"]
ChannelOrder = Literal["rgb", "bgr"]


@dataclass(frozen=True)
class InputGeometry:
    """Where the model's input came from in the original image (rows, columns in pixels)."""

    input_size: tuple[int, int]
    region: tuple[int, int, int, int]  # top, left, height, width


def to_rgb_uint8(image: Any, channel_order: ChannelOrder = "rgb") -> np.ndarray:
    """Convert an accepted image to a contiguous ``(H, W, 3)`` uint8 RGB array.

    Raises:
        ValueError: for an empty image, an unsupported shape, dtype or channel order, or
            non-finite values.

    """
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    array = np.asarray(image)
    if array.size == 0:
        raise ValueError(f"image is empty (shape {array.shape})")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        array = array[:, :, :3]
        if channel_order == "bgr":
            array = array[:, :, ::-1]
    else:
        raise ValueError(
            f"image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}"
        )
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("image contains NaN or infinite values")
        return np.ascontiguousarray(np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8))
    raise ValueError(f"image dtype must be uint8 or floating point in [0, 1], got {array.dtype}")


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    shrinking = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(image, (width, height), interpolation=interpolation)


def centre_region(
    height: int, width: int, target: tuple[int, int], resize_mode: ResizeMode
) -> tuple[int, int, int, int]:
    """Return ``(top, left, height, width)`` of the region the model sees."""
    if resize_mode == "stretch":
        return 0, 0, height, width
    if resize_mode != "crop":
        raise ValueError(f"resize_mode must be 'crop' or 'stretch', got {resize_mode!r}")
    target_h, target_w = target
    scale = min(height / target_h, width / target_w)
    crop_h = min(height, max(1, math.floor(target_h * scale + 0.5)))
    crop_w = min(width, max(1, math.floor(target_w * scale + 0.5)))
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def prepare_image(
    image: Any,
    resolution: tuple[int, int],
    channel_order: ChannelOrder = "rgb",
    resize_mode: ResizeMode = "crop",
) -> tuple[torch.Tensor, InputGeometry]:
    """Bring one image to the model's resolution by the module's rule.

    Returns:
        A ``(3, H, W)`` float32 tensor in [-1, 1] and the geometry needed to restore outputs.

    """
    rgb = to_rgb_uint8(image, channel_order)
    top, left, crop_h, crop_w = centre_region(rgb.shape[0], rgb.shape[1], resolution, resize_mode)
    region = rgb[top : top + crop_h, left : left + crop_w]
    resized = _resize(region, *resolution)
    tensor = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float()
    geometry = InputGeometry((rgb.shape[0], rgb.shape[1]), (top, left, crop_h, crop_w))
    return tensor / 127.5 - 1.0, geometry


def restore_frames(frames: np.ndarray, geometry: InputGeometry) -> np.ndarray:
    """Resize ``(..., h, w, 3)`` uint8 frames to the size of the region the input came from."""
    _, _, height, width = geometry.region
    flat = frames.reshape(-1, *frames.shape[-3:])
    restored = np.stack([_resize(frame, height, width) for frame in flat])
    return restored.reshape(*frames.shape[:-3], height, width, 3)


def gaussian_blur(images: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """Blur ``(B, C, H, W)`` with a separable Gaussian of ``sigmas`` (height, width).

    Reflect padding; the kernel spans about four sigma, odd, at least 3.
    """
    for axis, sigma in zip((2, 3), sigmas, strict=True):
        size = max(int(4.0 * sigma), 3)
        size += 1 - size % 2
        offsets = torch.arange(size, dtype=images.dtype, device=images.device) - size // 2
        kernel = torch.exp(-(offsets**2) / (2.0 * sigma**2))
        kernel = (kernel / kernel.sum()).repeat(images.shape[1], 1, 1, 1)
        shape = (size, 1) if axis == 2 else (1, size)
        padding = (0, 0, size // 2, size // 2) if axis == 2 else (size // 2, size // 2, 0, 0)
        padded = F.pad(images, padding, mode="reflect")
        images = F.conv2d(padded, kernel.view(-1, 1, *shape), groups=images.shape[1])
    return images
