"""Conversion between ROS image messages and RGB numpy arrays.

Raw images: rgb8, bgr8, rgba8, bgra8, mono8 and mono16 / 16UC1, honouring row padding in
``step`` and ``is_bigendian``; 16-bit values are scaled to 8 bits by 255/65535 with rounding, as
``cv_bridge`` does for ``desired_encoding="rgb8"``. Compressed images: JPEG or PNG only, checked
against the message's ``format`` field, and their size is read from the file header before
anything is decoded, so an oversized image costs no memory. Every input is validated first: a
malformed message raises :class:`ImageConversionError` with a short, readable message.
"""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
from PIL import Image as PILImage
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
# Codec names a CompressedImage ``format`` may contain (image_transport writes e.g.
# "bgr8; jpeg compressed bgr8"), mapped to the file format Pillow reports for the data.
_CODECS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_OTHER_CODECS = ("tiff", "tif", "bmp", "webp", "gif", "jp2", "exr", "hdr", "pnm", "compresseddepth")


class ImageConversionError(ValueError):
    """An image message that cannot be turned into an RGB array."""


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
    item = np.dtype(dtype).itemsize
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    pixels = rows[:, : msg.width * channels * item]
    array = np.ascontiguousarray(pixels).view(np.dtype(dtype).newbyteorder(_byte_order(msg)))
    array = array.reshape(msg.height, msg.width, channels)
    if dtype == np.uint16:
        array = _to_eight_bits(array)
    conversion = _ENCODINGS[msg.encoding][2]
    if conversion is None:
        return np.ascontiguousarray(array)
    return cv2.cvtColor(array, conversion)


def compressed_to_rgb(msg: CompressedImage, max_side: int = 8192) -> np.ndarray:
    """Return a ``(H, W, 3)`` uint8 RGB array from a JPEG or PNG ``sensor_msgs/CompressedImage``.

    The format named in ``msg.format`` (empty = either) must match the data, and the size in
    the file header must be within ``max_side``; both are checked before decoding.

    Raises:
        ImageConversionError: The data is empty, of another format, cannot be decoded or is too
            large.

    """
    if len(msg.data) == 0:
        raise ImageConversionError("compressed image has no data")
    data = bytes(msg.data)
    actual, (width, height) = _read_header(data, msg.format)
    declared = declared_codec(msg.format)
    if declared is not None and declared != actual:
        raise ImageConversionError(
            f"compressed image format {msg.format!r} says {declared} but the data is {actual}"
        )
    if max(width, height) > max_side:
        raise ImageConversionError(
            f"compressed image is {width}x{height}; the largest accepted side is {max_side}"
        )
    try:
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        decoded = None
    if decoded is None:
        raise ImageConversionError(f"cannot decode the {actual} data (format {msg.format!r})")
    if decoded.dtype == np.uint16:
        decoded = _to_eight_bits(decoded)
    if decoded.dtype != np.uint8:
        raise ImageConversionError(f"unsupported {actual} sample type {decoded.dtype}")
    if decoded.ndim == 2:
        return cv2.cvtColor(decoded, cv2.COLOR_GRAY2RGB)
    if decoded.shape[2] == 4:
        return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGB)
    if decoded.shape[2] == 3:
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    raise ImageConversionError(f"unsupported {actual} with {decoded.shape[2]} channels")


def declared_codec(format_field: str) -> str | None:
    """``"JPEG"`` or ``"PNG"`` as named by a CompressedImage ``format``; None when it names none.

    Raises:
        ImageConversionError: The field names another codec (TIFF, compressed depth, ...).

    """
    words = format_field.lower().replace(";", " ").replace(",", " ").split()
    for word in words:
        if word in _OTHER_CODECS:
            raise ImageConversionError(
                f"compressed image format {format_field!r} is not accepted; send JPEG or PNG"
            )
    named = {_CODECS[word] for word in words if word in _CODECS}
    if len(named) > 1:
        raise ImageConversionError(f"compressed image format {format_field!r} is ambiguous")
    return named.pop() if named else None


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


def _read_header(data: bytes, format_field: str) -> tuple[str, tuple[int, int]]:
    """File format and (width, height) from the header alone; JPEG and PNG only."""
    if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR":  # IHDR is always first
        width, height = struct.unpack(">II", data[16:24])
        return "PNG", (width, height)
    try:
        with PILImage.open(io.BytesIO(data)) as opened:  # reads the header only
            actual, size = opened.format, opened.size
    except PILImage.DecompressionBombError as error:
        raise ImageConversionError(f"compressed image is far too large: {error}") from error
    except Exception as error:  # Pillow raises several types for unreadable data
        raise ImageConversionError(
            f"cannot read the compressed image (format {format_field!r}); expected JPEG or PNG"
        ) from error
    if actual not in _CODECS.values():
        raise ImageConversionError(
            f"compressed image data is {actual}, which is not accepted; send JPEG or PNG"
        )
    return actual, size


def _to_eight_bits(array: np.ndarray) -> np.ndarray:
    return np.round(array.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)


def _validate(msg: Image, max_side: int) -> tuple[int, type]:
    if msg.height == 0 or msg.width == 0:
        raise ImageConversionError(f"image has zero size ({msg.width}x{msg.height})")
    if msg.height > max_side or msg.width > max_side:
        raise ImageConversionError(
            f"image is {msg.width}x{msg.height}; the largest accepted side is {max_side}"
        )
    if msg.encoding not in _ENCODINGS:
        raise ImageConversionError(
            f"unsupported encoding {msg.encoding[:64]!r}; supported: "
            f"{', '.join(SUPPORTED_ENCODINGS)}"
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
