"""Writers for the pipeline's outputs: PNG goal images, GIF/MP4 rollouts, and strips for people.

All frames are ``uint8`` RGB arrays of shape ``(H, W, 3)``; a rollout is ``(T, H, W, 3)``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(
            f"frames must be uint8 (H, W, 3) or (T, H, W, 3), got {frames.dtype} {frames.shape}"
        )
    return frames


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write one ``(H, W, 3)`` RGB image as PNG."""
    frames = _check_frames(image)
    if len(frames) != 1:
        raise ValueError(f"a PNG holds one image, got {len(frames)} frames")
    path = Path(path)
    if not cv2.imwrite(str(path), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 8.0) -> Path:
    """Write a rollout as a looping GIF."""
    frames = _check_frames(frames)
    path = Path(path)
    iio.imwrite(path, frames, extension=".gif", duration=1000.0 / fps, loop=0)
    return path


def write_mp4(path: str | Path, frames: np.ndarray, fps: float = 8.0) -> Path:
    """Write a rollout as an MP4 (MPEG-4 part 2) with OpenCV."""
    frames = _check_frames(frames)
    path = Path(path)
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV could not open {path} for writing")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def make_strip(
    input_image: np.ndarray,
    goal: np.ndarray | None = None,
    rollout: np.ndarray | None = None,
    gap: int = 4,
) -> np.ndarray:
    """Place input | goal | rollout frames side by side on a white background.

    Images of different heights are resized to the input's height, keeping their aspect ratio.
    """
    panels = [_check_frames(input_image)[0]]
    if goal is not None:
        panels.append(_check_frames(goal)[0])
    if rollout is not None:
        panels.extend(_check_frames(rollout))
    height = panels[0].shape[0]
    resized = [
        p
        if p.shape[0] == height
        else cv2.resize(p, (round(p.shape[1] * height / p.shape[0]), height))
        for p in panels
    ]
    width = sum(p.shape[1] for p in resized) + gap * (len(resized) - 1)
    strip = np.full((height, width, 3), 255, dtype=np.uint8)
    x = 0
    for panel in resized:
        strip[:, x : x + panel.shape[1]] = panel
        x += panel.shape[1] + gap
    return strip


def write_frames(path: str | Path, frames: np.ndarray, fps: float = 8.0) -> list[Path]:
    """Write frames by the file's suffix.

    ``.png`` writes one image, or ``name_000.png``, ``name_001.png``, ... for several frames;
    ``.gif`` and ``.mp4`` write a rollout.

    Returns:
        The paths written.

    """
    path = Path(path)
    suffix = path.suffix.lower()
    frames = _check_frames(frames)
    if suffix == ".gif":
        return [write_gif(path, frames, fps)]
    if suffix == ".mp4":
        return [write_mp4(path, frames, fps)]
    if suffix == ".png":
        if len(frames) == 1:
            return [write_png(path, frames[0])]
        return [
            write_png(path.with_name(f"{path.stem}_{i:03d}.png"), f) for i, f in enumerate(frames)
        ]
    raise ValueError(f"unsupported output suffix {suffix!r}; use one of .png, .gif, .mp4")
