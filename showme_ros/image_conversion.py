"""Conversion between ROS image messages and RGB numpy arrays.

Uses ``cv_bridge`` where it is installed (any ROS 2 install); otherwise a numpy path that reads
rgb8, bgr8, rgba8, bgra8, mono8 and mono16 / 16UC1 images (honouring row padding in ``step`` and
``is_bigendian``) and JPEG / PNG compressed images. Every input is validated first, so a
malformed message raises :class:`ImageConversionError` with a readable message.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

# encoding -> (channels, numpy dtype, OpenCV conversion to RGB or None)
_ENCODINGS: dict[str, tuple[int, type, int | None]] = {
    "rgb8": (3, np.uint8, None),
    "bgr8": (3, np.uint8, cv2.COLOR_BGR2RGB),
    "rgba8": (4, np.uint8, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, np.uint8, cv2.COLOR_BGRA2RGB),
    "mono8": (1, np.uint8, cv2.COLOR_GRAY2RGB),
    "mono16": (1, np.uint16, cv2.COLOR_GRAY2RGB),
    "16UC1": (1, np.uint16, cv2.COLOR_GRAY2RGB),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)


class ImageConversionError(ValueError):
    """An image message that cannot be turned into an RGB array."""


def _load_cv_bridge() -> Any:
    try:
        from cv_bridge import CvBridge
    except ImportError:
        return None
    return CvBridge()


_BRIDGE = _load_cv_bridge()


def uses_cv_bridge() -> bool:
    """Whether conversions go through ``cv_bridge`` (it is importable here)."""
    return _BRIDGE is not None


def image_to_rgb(msg: Image, max_side: int = 8192) -> np.ndarray:
    """Return a ``(H, W, 3)`` uint8 RGB array from a ``sensor_msgs/Image``.

    Args:
        msg: The image message.
        max_side: Largest accepted height or width, in pixels.

    Raises:
        ImageConversionError: The message is empty, too large, inconsistent or of an
            unsupported encoding.

    """
    channels, dtype = _validate(msg, max_side)
    if _BRIDGE is not None:
        return np.ascontiguousarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    item = np.dtype(dtype).itemsize
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.step)
    pixels = rows[:, : msg.width * channels * item]
    array = np.ascontiguousarray(pixels).view(np.dtype(dtype).newbyteorder(_byte_order(msg)))
    array = array.reshape(msg.height, msg.width, channels)
    if dtype == np.uint16:
        array = np.round(array.astype(np.float32) / 257.0).astype(np.uint8)
    conversion = _ENCODINGS[msg.encoding][2]
    if conversion is None:
        return np.ascontiguousarray(array)
    return cv2.cvtColor(array, conversion)


def compressed_to_rgb(msg: CompressedImage, max_side: int = 8192) -> np.ndarray:
    """Return a ``(H, W, 3)`` uint8 RGB array from a JPEG or PNG ``sensor_msgs/CompressedImage``.

    Raises:
        ImageConversionError: The data is empty, cannot be decoded or is too large.

    """
    if len(msg.data) == 0:
        raise ImageConversionError("compressed image has no data")
    buffer = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    decoded = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ImageConversionError(
            f"cannot decode compressed image (format {msg.format!r}); expected JPEG or PNG data"
        )
    if max(decoded.shape[:2]) > max_side:
        raise ImageConversionError(
            f"compressed image is {decoded.shape[1]}x{decoded.shape[0]}; "
            f"the largest accepted side is {max_side}"
        )
    if decoded.dtype == np.uint16:
        decoded = np.round(decoded.astype(np.float32) / 257.0).astype(np.uint8)
    if decoded.ndim == 2:
        return cv2.cvtColor(decoded, cv2.COLOR_GRAY2RGB)
    if decoded.shape[2] == 4:
        return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def rgb_to_image(array: np.ndarray, header: Header | None = None) -> Image:
    """Return an rgb8 ``sensor_msgs/Image`` of a ``(H, W, 3)`` uint8 array, with ``header``."""
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ImageConversionError(
            f"expected a (H, W, 3) uint8 array, got {array.shape} {array.dtype}"
        )
    height, width = array.shape[:2]
    msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
    if header is not None:
        msg.header = header
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


def is_empty(msg: Image) -> bool:
    """Whether an image field was left unset: a zero height or width, and no data."""
    return (msg.height == 0 or msg.width == 0) and len(msg.data) == 0


def _validate(msg: Image, max_side: int) -> tuple[int, type]:
    if msg.height == 0 or msg.width == 0:
        raise ImageConversionError(f"image has zero size ({msg.width}x{msg.height})")
    if msg.height > max_side or msg.width > max_side:
        raise ImageConversionError(
            f"image is {msg.width}x{msg.height}; the largest accepted side is {max_side}"
        )
    if msg.encoding not in _ENCODINGS:
        raise ImageConversionError(
            f"unsupported encoding {msg.encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    channels, dtype, _ = _ENCODINGS[msg.encoding]
    row_bytes = msg.width * channels * np.dtype(dtype).itemsize
    if msg.step < row_bytes:
        raise ImageConversionError(
            f"step {msg.step} is smaller than a {msg.encoding} row of width {msg.width} "
            f"({row_bytes} bytes)"
        )
    if len(msg.data) != msg.height * msg.step:
        raise ImageConversionError(
            f"image data has {len(msg.data)} bytes; height x step is "
            f"{msg.height} x {msg.step} = {msg.height * msg.step}"
        )
    return channels, dtype


def _byte_order(msg: Image) -> str:
    return ">" if msg.is_bigendian else "<"
