"""Full-reference image metrics on uint8 frames: PSNR and gaussian-window SSIM."""

from __future__ import annotations

import math

import cv2
import numpy as np

_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _check_pair(prediction: np.ndarray, target: np.ndarray) -> None:
    if prediction.shape != target.shape:
        raise ValueError(f"shape mismatch: prediction {prediction.shape} vs target {target.shape}")
    if prediction.ndim not in (2, 3) or prediction.size == 0:
        raise ValueError(f"expected a non-empty HxW or HxWxC image, got shape {prediction.shape}")


def psnr(prediction: np.ndarray, target: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(R^2 / MSE)`` over all pixels and channels.

    Args:
        prediction: Image, HxW or HxWxC.
        target: Reference image of the same shape.
        data_range: The value range R (255 for uint8 images).

    Returns:
        PSNR in dB; ``math.inf`` for identical images.

    """
    _check_pair(prediction, target)
    mse = float(np.mean((prediction.astype(np.float64) - target.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def ssim(prediction: np.ndarray, target: np.ndarray, data_range: float = 255.0) -> float:
    """Structural similarity (Wang et al. 2004): 11x11 gaussian window, sigma 1.5, K=(0.01, 0.03).

    Statistics are taken over the window positions that fit inside the image (the reference
    implementation's "valid" filtering), per channel, and the SSIM map is averaged over positions
    and channels.

    Args:
        prediction: Image, HxW or HxWxC, at least 11 pixels on each side.
        target: Reference image of the same shape.
        data_range: The value range (255 for uint8 images).

    Returns:
        SSIM in [-1, 1]; 1.0 for identical images.

    """
    _check_pair(prediction, target)
    if min(prediction.shape[:2]) < _SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels")
    x = prediction.astype(np.float64)
    y = target.astype(np.float64)
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    pad = _SSIM_WINDOW // 2

    def blur(image: np.ndarray) -> np.ndarray:
        out = cv2.GaussianBlur(image, (_SSIM_WINDOW, _SSIM_WINDOW), _SSIM_SIGMA)
        return out[pad:-pad, pad:-pad]

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return float(ssim_map.mean())
