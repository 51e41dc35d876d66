"""The motion score of VBench (dynamic degree, motion smoothness, their harmonic mean) on DIS flow.

VBench computes dynamic degree from RAFT flow and motion smoothness with the AMT
frame-interpolation network. Neither network ships here, so both use OpenCV's DIS optical flow:

- Dynamic degree follows VBench's rule exactly, with DIS in place of RAFT: per consecutive frame
  pair, the mean of the largest 5% of flow magnitudes; a video is dynamic when at least
  ``round(4 * T / 16)`` pairs exceed ``6 * min(H, W) / 256`` pixels (scaled by ``max(1, 8 / fps)``).
  The dataset score is the fraction of dynamic videos.
- Motion smoothness keeps VBench's protocol (drop the odd frames, rebuild each from its two even
  neighbours, score ``(255 - mean |rebuilt - real|) / 255``) but rebuilds frames by warping both
  neighbours half-way along DIS flow and averaging them. This interpolator is weaker than AMT on
  large or occluding motion, so absolute values are lower than VBench's and must not be compared
  with published VBench numbers; they compare models evaluated here.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

TOP_FRACTION = 0.05


SMOOTHNESS_MIN_FRAMES = 3  # each frame is predicted from its two neighbours


def _check_video(frames: np.ndarray, min_frames: int) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"expected a uint8 video of shape (T, H, W, 3), got {frames.dtype} {frames.shape}"
        )
    if frames.shape[0] < min_frames:
        raise ValueError(f"need at least {min_frames} frames, got {frames.shape[0]}")


def dis_flow(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Dense optical flow from ``first`` to ``second`` (uint8 RGB HxWx3) with OpenCV DIS.

    Returns:
        Flow of shape (H, W, 2) in pixels (x, y): ``second(p + flow(p)) ~ first(p)``.

    """
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    gray_a = cv2.cvtColor(first, cv2.COLOR_RGB2GRAY)
    gray_b = cv2.cvtColor(second, cv2.COLOR_RGB2GRAY)
    return dis.calc(gray_a, gray_b, None)


def top_flow_magnitude(flow: np.ndarray) -> float:
    """Mean of the largest 5% of flow magnitudes (VBench's per-pair motion statistic)."""
    magnitude = np.linalg.norm(flow, axis=-1).ravel()
    count = max(1, int(magnitude.size * TOP_FRACTION))
    return float(np.mean(np.sort(magnitude)[-count:]))


def pair_magnitudes(frames: np.ndarray) -> np.ndarray:
    """Top-5% flow magnitude of each consecutive frame pair of a uint8 video (T, H, W, 3)."""
    _check_video(frames, 2)
    return np.array([top_flow_magnitude(dis_flow(a, b)) for a, b in itertools.pairwise(frames)])


def is_dynamic(magnitudes: np.ndarray, frame_size: tuple[int, int], fps: float = 8.0) -> bool:
    """VBench's dynamic-degree decision for one video from its :func:`pair_magnitudes`.

    Args:
        magnitudes: Per-pair top-5% flow magnitudes (T - 1 values).
        frame_size: (H, W) of the frames; the threshold scales with the shorter side.
        fps: Frame rate; below 8 fps the threshold rises by ``8 / fps``.

    """
    threshold = max(1.0, 8.0 / fps) * 6.0 * min(frame_size) / 256.0
    needed = max(1, round(4 * (len(magnitudes) + 1) / 16.0))
    return int(np.sum(magnitudes > threshold)) >= needed


def _warp(image: np.ndarray, flow: np.ndarray, fraction: float) -> np.ndarray:
    """Sample ``image`` at ``p - fraction * flow(p)``: a frame ``fraction`` of the way along."""
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x = grid_x - fraction * flow[..., 0]
    map_y = grid_y - fraction * flow[..., 1]
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def interpolate_middle(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Estimate the frame half-way between two: both warped half-way along DIS flow, averaged."""
    from_first = _warp(first, dis_flow(first, last), 0.5).astype(np.float32)
    from_last = _warp(last, dis_flow(last, first), 0.5).astype(np.float32)
    return np.clip(np.rint((from_first + from_last) / 2.0), 0, 255).astype(np.uint8)


def motion_smoothness(frames: np.ndarray) -> float:
    """VBench's smoothness protocol with a DIS-flow interpolator; 1.0 is perfectly predictable.

    Args:
        frames: uint8 video (T, H, W, 3) with T >= 3.

    Returns:
        ``(255 - mean |interpolated - real|) / 255`` over the odd frames that have two neighbours.

    """
    _check_video(frames, SMOOTHNESS_MIN_FRAMES)
    errors = [
        float(np.mean(cv2.absdiff(interpolate_middle(frames[i - 1], frames[i + 1]), frames[i])))
        for i in range(1, frames.shape[0] - 1, 2)
    ]
    return (255.0 - float(np.mean(errors))) / 255.0


def harmonic_mean(a: float, b: float) -> float:
    """Harmonic mean of two non-negative scores (0 when either is 0)."""
    return 0.0 if a <= 0.0 or b <= 0.0 else 2.0 * a * b / (a + b)


@dataclass(frozen=True)
class MotionScore:
    """Dataset-level motion score: VBench's two dimensions and their harmonic mean."""

    dynamic_degree: float
    motion_smoothness: float
    motion_score: float
    mean_top_flow: float


def motion_score(videos: Sequence[np.ndarray], fps: float = 8.0) -> MotionScore:
    """Motion score over a set of videos as the paper reports it (VBench dimensions, harmonic mean).

    Args:
        videos: uint8 videos (T, H, W, 3), T >= 3 each.
        fps: Frame rate of the videos (VBench raises the threshold below 8 fps).

    Returns:
        Fraction of dynamic videos, mean smoothness, their harmonic mean, and the mean top-5% flow
        magnitude in pixels (a continuous companion to the binary dynamic decision).

    """
    if not videos:
        raise ValueError("motion_score needs at least one video")
    magnitudes = [pair_magnitudes(video) for video in videos]
    decisions = [
        is_dynamic(m, video.shape[1:3], fps) for m, video in zip(magnitudes, videos, strict=True)
    ]
    dynamic = float(np.mean(decisions))
    smooth = float(np.mean([motion_smoothness(video) for video in videos]))
    top_flow = float(np.mean(np.concatenate(magnitudes)))
    return MotionScore(dynamic, smooth, harmonic_mean(dynamic, smooth), top_flow)
