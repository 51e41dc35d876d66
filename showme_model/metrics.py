"""Image metrics for predicted frames: PSNR, SSIM (scikit-image) and an edge-structure F1.

All functions take a prediction and a reference of the same shape, HxW or HxWxC numpy arrays
(uint8 frames as the pipeline returns them, or floats with an explicit ``data_range``), and
return one float. They serve evaluation, the node and planners alike.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

# Wang et al. (2004): an 11x11 gaussian window of sigma 1.5 and K = (0.01, 0.03).
SSIM_SIGMA = 1.5
SSIM_MIN_SIDE = 11
# Canny hysteresis thresholds on 8-bit grey levels, and the edge-matching tolerance in pixels.
EDGE_CANNY_THRESHOLDS = (50, 150)
EDGE_TOLERANCE_PX = 1.5


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
    if mean_squared_error(target, prediction) == 0.0:
        return math.inf
    return float(peak_signal_noise_ratio(target, prediction, data_range=data_range))


def ssim(prediction: np.ndarray, target: np.ndarray, data_range: float = 255.0) -> float:
    """Structural similarity of Wang et al. (2004), as their reference implementation computes it.

    Gaussian 11x11 window (sigma 1.5), population statistics, K = (0.01, 0.03); the SSIM map is
    averaged over the window positions that fit inside the image and over channels.

    Args:
        prediction: Image, HxW or HxWxC, at least 11 pixels on each side.
        target: Reference image of the same shape.
        data_range: The value range (255 for uint8 images).

    Returns:
        SSIM in [-1, 1]; 1.0 for identical images.

    """
    _check_pair(prediction, target)
    if min(prediction.shape[:2]) < SSIM_MIN_SIDE:
        raise ValueError(f"SSIM needs images of at least {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE} pixels")
    return float(
        structural_similarity(
            target.astype(np.float64),
            prediction.astype(np.float64),
            data_range=data_range,
            gaussian_weights=True,
            sigma=SSIM_SIGMA,
            use_sample_covariance=False,
            channel_axis=-1 if prediction.ndim == 3 else None,
        )
    )


def canny_edges(image: np.ndarray) -> np.ndarray:
    """Binary Canny edge map (bool HxW) of a uint8 grey or RGB image."""
    if image.dtype != np.uint8:
        raise ValueError(f"edge maps need uint8 images, got {image.dtype}")
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    low, high = EDGE_CANNY_THRESHOLDS
    return cv2.Canny(np.ascontiguousarray(grey), low, high) > 0


def _matched_fraction(edges: np.ndarray, reference: np.ndarray, tolerance: float) -> float:
    """Share of ``edges`` pixels that lie within ``tolerance`` pixels of a ``reference`` pixel."""
    not_reference = (~reference).astype(np.uint8)
    distance = cv2.distanceTransform(not_reference, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return float(np.mean(distance[edges] <= tolerance))


def edge_map_f1(
    predicted_edges: np.ndarray, target_edges: np.ndarray, tolerance: float = EDGE_TOLERANCE_PX
) -> float:
    """Boundary F1 of two binary edge maps with a distance tolerance.

    Precision is the share of predicted edge pixels within ``tolerance`` pixels (Euclidean) of a
    target edge pixel; recall is the share of target edge pixels within ``tolerance`` of a
    predicted one; the score is their harmonic mean. Unlike the BSDS benchmark there is no
    one-to-one pixel assignment, so a thicker edge is not counted as false positives. Two maps
    without edges score 1.0; exactly one empty map scores 0.0.

    Raises:
        ValueError: The maps are not 2-D boolean arrays of the same shape, or tolerance < 0.

    """
    if predicted_edges.shape != target_edges.shape or predicted_edges.ndim != 2:
        raise ValueError(
            f"expected two HxW edge maps, got {predicted_edges.shape} and {target_edges.shape}"
        )
    if predicted_edges.dtype != bool or target_edges.dtype != bool:
        raise ValueError("edge maps must be boolean arrays")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if not predicted_edges.any() and not target_edges.any():
        return 1.0
    if not predicted_edges.any() or not target_edges.any():
        return 0.0
    precision = _matched_fraction(predicted_edges, target_edges, tolerance)
    recall = _matched_fraction(target_edges, predicted_edges, tolerance)
    if precision + recall == 0.0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def edge_f1(
    prediction: np.ndarray, target: np.ndarray, tolerance: float = EDGE_TOLERANCE_PX
) -> float:
    """Edge-structure score: :func:`edge_map_f1` of the two images' Canny edge maps.

    Canny runs on the grey image with hysteresis thresholds ``EDGE_CANNY_THRESHOLDS`` (3x3
    Sobel, L1 gradient), so the score asks whether object outlines sit where they should, which
    PSNR and SSIM weigh only indirectly.

    Args:
        prediction: uint8 image, HxW or HxWxC (RGB).
        target: Reference image of the same shape and dtype.
        tolerance: Largest distance in pixels at which two edge pixels still match.

    Returns:
        F1 in [0, 1]; 1.0 for identical images.

    """
    _check_pair(prediction, target)
    return edge_map_f1(canny_edges(prediction), canny_edges(target), tolerance)
