"""Scene keeping: the input frame's own pixels wherever a prediction does not change the scene.

A diffusion model redraws every pixel of its output, so the parts of the scene an action does
not touch come back slightly changed: blurred, shifted in colour, small objects smeared. Scene
keeping composites each predicted frame over the input frame. A pixel whose predicted value
differs from the autoencoder's reconstruction of the input (the model's own rendering of the
unchanged scene) by less than ``low`` takes the input's pixel; above ``high`` the prediction's;
in between a linear mix. The mask is then dilated by ``radius`` pixels, so that a change keeps
its surroundings, and feathered with a Gaussian of about the same size, so that no seam shows.
Comparing with the reconstruction, not the input itself, keeps the autoencoder's own error from
counting as change.

Thresholds are fractions of the full intensity range (``1`` = black to white).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from showme_model.preprocessing import gaussian_blur


def change_mask(
    frames: torch.Tensor, reference: torch.Tensor, low: float, high: float, radius: int
) -> torch.Tensor:
    """Return the weight ``(B, 1, T, H, W)`` of each predicted pixel, 0 = keep the input's.

    Args:
        frames: Predicted frames ``(B, 3, T, H, W)`` in ``[-1, 1]``.
        reference: The autoencoder's reconstruction of the input ``(B, 3, H, W)`` in ``[-1, 1]``.
        low: Largest change (fraction of the intensity range) that keeps the input's pixel.
        high: Smallest change that keeps the prediction's pixel; above ``low``.
        radius: Dilation and feathering radius in pixels (0: neither).

    """
    if not 0 <= low < high:
        raise ValueError(f"need 0 <= low < high, got low={low}, high={high}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    change = (frames - reference.unsqueeze(2)).abs().amax(dim=1) / 2.0  # (B, T, H, W) in [0, 1]
    mask = ((change - low) / (high - low)).clamp(0.0, 1.0)
    batch, count, height, width = mask.shape
    planes = mask.reshape(batch * count, 1, height, width)
    if radius:
        planes = F.max_pool2d(planes, 2 * radius + 1, stride=1, padding=radius)
        sigma = 0.3 * (radius - 1) + 0.8  # OpenCV's sigma for a (2 radius + 1) kernel
        planes = gaussian_blur(planes, [sigma, sigma])
    return planes.reshape(batch, 1, count, height, width)


def keep_scene(
    frames: torch.Tensor,
    input_pixels: torch.Tensor,
    reference: torch.Tensor,
    low: float,
    high: float,
    radius: int,
) -> torch.Tensor:
    """Composite predicted frames over the input frame (see the module docstring).

    Args:
        frames: Predicted frames ``(B, 3, T, H, W)`` in ``[-1, 1]``.
        input_pixels: The input frame the model saw ``(B, 3, H, W)`` in ``[-1, 1]``.
        reference: The autoencoder's reconstruction of ``input_pixels``, same layout.
        low: See :func:`change_mask`.
        high: See :func:`change_mask`.
        radius: See :func:`change_mask`.

    Returns:
        The composited frames, same shape and dtype as ``frames``.

    """
    weight = change_mask(frames, reference, low, high, radius).to(frames.dtype)
    scene = input_pixels.to(frames.dtype).unsqueeze(2)
    return weight * frames + (1.0 - weight) * scene
