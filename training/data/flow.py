"""Optical flow for the motion reward: OpenCV DIS, magnitudes cached next to each clip.

For a clip sampled to ``T`` frames at the training resolution, the cache holds the flow
magnitude between consecutive frames, averaged down to latent resolution and expressed in
latent cells (pixels divided by the latent factor): ``(T - 1, H / f, W / f)`` float16, in
``<clip>.flow-<T>f-<h>x<w>.npy`` beside the clip. RAFT is not included: it needs its own
network code and weights, and DIS needs neither.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np

from training.data.manifest import format_counts


def dis_flow(first: np.ndarray, second: np.ndarray, preset: int | None = None) -> np.ndarray:
    """Dense flow from ``first`` to ``second`` (RGB uint8 ``(H, W, 3)``) as ``(H, W, 2)`` (dx, dy).

    Args:
        first: frame at time t.
        second: frame at time t + 1.
        preset: an OpenCV ``DISOPTICAL_FLOW_PRESET_*``; MEDIUM by default.

    """
    if first.shape != second.shape or first.ndim != 3:
        raise ValueError(f"need two equal (H, W, 3) frames, got {first.shape}, {second.shape}")
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM if preset is None else preset)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (first, second)]
    return dis.calc(gray[0], gray[1], None)


def flow_magnitudes(frames: np.ndarray, latent_factor: int = 8) -> np.ndarray:
    """Flow magnitude between consecutive frames at latent resolution, in latent cells.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB, ``H`` and ``W`` multiples of ``latent_factor``.
        latent_factor: pixels per latent cell.

    Returns:
        ``(T - 1, H / latent_factor, W / latent_factor)`` float16.

    """
    t, h, w, _ = frames.shape
    if t < 2 or h % latent_factor or w % latent_factor:
        raise ValueError(f"need >= 2 frames, sides divisible by {latent_factor}: {frames.shape}")
    size = (w // latent_factor, h // latent_factor)
    out = []
    for a, b in pairwise(frames):
        magnitude = np.linalg.norm(dis_flow(a, b), axis=-1) / latent_factor
        out.append(cv2.resize(magnitude, size, interpolation=cv2.INTER_AREA))
    return np.stack(out).astype(np.float16)


def flow_cache_path(clip: Path, frames: int, latent_h: int, latent_w: int) -> Path:
    """Where the flow magnitudes of a clip sampled to ``frames`` frames are cached."""
    return clip.parent / f"{clip.name}.flow-{frames}f-{latent_h}x{latent_w}.npy"


@dataclass
class FlowReport:
    """Result of caching flow for a manifest."""

    written: int = 0
    existing: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        reasons = format_counts(self.skipped)
        return [
            f"flow caches written: {self.written}, already there: {self.existing}",
            f"clips skipped: {reasons}",
        ]


def cache_manifest_flow(
    manifest: Path, frames: int = 16, size: int = 64, latent_factor: int = 8
) -> FlowReport:
    """Compute and cache flow magnitudes once for every clip of a manifest."""
    from tqdm import tqdm

    from training.data.clips import ClipError, even_indices, read_clip, resize_center_crop
    from training.data.manifest import read_manifest

    report = FlowReport()
    latent = size // latent_factor
    for record in tqdm(read_manifest(manifest), desc="flow", unit="clip"):
        path = record.resolve(manifest.parent)
        target = flow_cache_path(path, frames, latent, latent)
        if target.exists():
            report.existing += 1
            continue
        try:
            pixels = read_clip(path, lambda n: even_indices(n, frames)[0], record.start, record.end)
        except ClipError as err:
            report.skipped[err.reason] += 1
            continue
        np.save(target, flow_magnitudes(resize_center_crop(pixels, size, size), latent_factor))
        report.written += 1
    return report
