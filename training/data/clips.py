"""Reading clips (video file, frame folder or ``.npz``) and choosing which frames to use.

Every reader raises :class:`ClipError` for a clip that is missing, unreadable or too short, so
that callers can skip and count it instead of crashing.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ClipError(Exception):
    """A clip that cannot be used; ``reason`` is one of ``missing``, ``corrupt``, ``short``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _load_npz_frames(path: Path) -> np.ndarray:
    try:
        with np.load(path) as data:
            frames = data["frames"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ClipError("corrupt", f"cannot read frames from {path}: {err}") from err
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ClipError("corrupt", f"{path}: 'frames' must be (T, H, W, 3) uint8")
    return frames


def _decode_video(path: Path, start: int, end: int | None) -> np.ndarray:
    """Decode frames ``start..end`` sequentially (seeking is unreliable for many codecs)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ClipError("corrupt", f"OpenCV cannot open video {path}")
    frames = []
    index = 0
    try:
        while end is None or index < end:
            ok, frame = capture.read()
            if not ok:
                break
            if index >= start:
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise ClipError("corrupt", f"no frame decodes from {path}")
    if not frames:
        raise ClipError("short", f"{path} ends before frame {start}")
    return np.stack(frames)


def _read_images(files: list[Path]) -> np.ndarray:
    images = [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files]
    if any(image is None for image in images) or len({i.shape for i in images}) != 1:
        raise ClipError("corrupt", f"unreadable or mismatched frame images in {files[0].parent}")
    return np.stack([cv2.cvtColor(image, cv2.COLOR_BGR2RGB) for image in images])


def read_clip(
    path: Path,
    choose: Callable[[int], list[int]],
    start: int | None = None,
    end: int | None = None,
) -> np.ndarray:
    """Read the frames of a clip that ``choose`` picks.

    Args:
        path: video file, frame folder or ``.npz`` with ``frames``.
        choose: maps the clip's frame count (inside ``start..end``) to the indices to return;
            it raises :class:`ClipError` when the clip is too short.
        start: first frame of the clip inside the file.
        end: frame after the last one (exclusive); ``None`` for the end of the file.

    Returns:
        ``(len(indices), H, W, 3)`` uint8 RGB frames.

    """
    start = start or 0
    if not path.exists():
        raise ClipError("missing", f"clip not found: {path}")
    if path.is_dir():
        files = _frame_files(path)[start:end]
        return _read_images([files[i] for i in choose(len(files))])
    frames = _load_npz_frames(path)[start:end] if path.suffix == ".npz" else None
    if frames is None:
        frames = _decode_video(path, start, end)
    return frames[choose(len(frames))]


def even_indices(num_frames: int, length: int) -> tuple[list[int], int]:
    """Pick ``length`` frames spread evenly from the first to the last frame.

    Returns the indices and the frame stride (the rounded step between picked frames), the
    value given to the model's frame-stride condition.

    Raises:
        ClipError: with reason ``short`` when the clip has fewer than ``length`` frames.

    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if num_frames < length:
        raise ClipError("short", f"clip has {num_frames} frames, need at least {length}")
    if length == 1:
        return [0], 1
    indices = np.rint(np.linspace(0, num_frames - 1, length)).astype(int).tolist()
    stride = max(1, round((num_frames - 1) / (length - 1)))
    return indices, stride


def pair_indices(
    num_frames: int, first_k: int, last_m: int, rng: np.random.Generator
) -> tuple[int, int]:
    """Draw a (source, target) pair of frame indices.

    The source comes from the first ``first_k`` frames, the target from the last ``last_m``;
    the two ranges never overlap.

    Raises:
        ClipError: with reason ``short`` when the clip cannot hold both ranges.

    """
    if first_k < 1 or last_m < 1:
        raise ValueError(f"first_k and last_m must be >= 1, got {first_k}, {last_m}")
    if num_frames < first_k + last_m:
        raise ClipError("short", f"clip has {num_frames} frames, need {first_k + last_m}")
    source = int(rng.integers(0, first_k))
    target = int(rng.integers(num_frames - last_m, num_frames))
    return source, target


def resize_center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize ``(T, H, W, 3)`` frames so they cover ``height x width``, then crop the centre."""
    _, h, w, _ = frames.shape
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    if (new_h, new_w) != (h, w):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        frames = np.stack([cv2.resize(f, (new_w, new_h), interpolation=interp) for f in frames])
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return frames[:, top : top + height, left : left + width]
