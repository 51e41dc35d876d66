"""Image messages to RGB arrays: every supported encoding, padding, byte order and bad input."""

import struct
import zlib

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from showme_ros.image_conversion import (
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
    is_empty,
    rgb_to_image,
)

RGB = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)


def make_image(array: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """Pack ``array`` (H, W[, C]) row by row with ``pad`` junk bytes after each row."""
    height, width = array.shape[:2]
    if array.dtype == np.uint16:
        array = array.astype(">u2" if bigendian else "<u2")
    rows = array.reshape(height, -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((height, pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=int(bigendian))
    msg.step = padded.shape[1]
    msg.data = padded.tobytes()
    return msg


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize(
    ("encoding", "to_message"),
    [
        ("rgb8", lambda rgb: rgb),
        ("bgr8", lambda rgb: rgb[..., ::-1]),
        ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)])),
        ("bgra8", lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 9, np.uint8)])),
    ],
)
def test_colour_encodings_round_to_the_same_rgb(encoding, to_message, pad):
    msg = make_image(np.ascontiguousarray(to_message(RGB)), encoding, pad=pad)
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("bigendian", [False, True])
def test_sixteen_bit_mono_honours_byte_order_and_scales_to_eight_bits(encoding, bigendian):
    values = np.array([[0, 257, 65535], [512, 1028, 30000]], dtype=np.uint16)
    out = image_to_rgb(make_image(values, encoding, pad=2, bigendian=bigendian))
    expected = np.round(values / 257.0).astype(np.uint8)
    assert out.shape == (2, 3, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], expected)


def test_mono8_becomes_grey_rgb():
    grey = RGB[..., 0].copy()
    out = image_to_rgb(make_image(grey, "mono8", pad=1))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("extension", [".png", ".jpg"])
def test_compressed_png_and_jpeg_decode_to_rgb(extension):
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (16, 1, 3))
    smooth[..., 0] = 200
    ok, data = cv2.imencode(extension, cv2.cvtColor(smooth, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(format=extension[1:])
    msg.data = data.tobytes()
    out = compressed_to_rgb(msg)
    assert out.shape == smooth.shape
    tolerance = 0 if extension == ".png" else 12
    assert np.abs(out.astype(int) - smooth.astype(int)).max() <= tolerance


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: setattr(m, "data", b""), "bytes"),
        (lambda m: setattr(m, "data", bytes(len(m.data) - 1)), "height x step"),
        (lambda m: setattr(m, "encoding", "yuv422_weird"), "unsupported encoding"),
        (lambda m: setattr(m, "step", 3), "smaller than"),
        (lambda m: (setattr(m, "height", 0), setattr(m, "width", 0)), "zero size"),
        (lambda m: (setattr(m, "height", 20000), setattr(m, "width", 20000)), "largest"),
    ],
)
def test_malformed_images_raise_a_clear_error(mutate, message):
    msg = make_image(RGB, "rgb8")
    mutate(msg)
    with pytest.raises(ImageConversionError, match=message):
        image_to_rgb(msg, max_side=4096)


def test_undecodable_compressed_image_raises():
    msg = CompressedImage(format="jpeg")
    msg.data = b"not an image at all"
    with pytest.raises(ImageConversionError, match="cannot read the compressed image"):
        compressed_to_rgb(msg)
    _, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    msg.data = png.tobytes()[:-20]  # header and a truncated pixel stream
    with pytest.raises(ImageConversionError, match="cannot decode the PNG data"):
        compressed_to_rgb(CompressedImage(format="png", data=msg.data))
    with pytest.raises(ImageConversionError, match="no data"):
        compressed_to_rgb(CompressedImage(format="png"))


def _compressed(array: np.ndarray, extension: str, fmt: str) -> CompressedImage:
    ok, data = cv2.imencode(extension, array)
    assert ok
    msg = CompressedImage(format=fmt)
    msg.data = data.tobytes()
    return msg


@pytest.mark.parametrize(
    ("extension", "fmt", "message"),
    [
        (".tiff", "", "data is TIFF"),
        (".tiff", "tiff", "not accepted"),
        (".bmp", "bgr8; bmp", "not accepted"),
        (".jpg", "png", "says PNG but the data is JPEG"),
        (".png", "bgr8; jpeg compressed bgr8", "says JPEG but the data is PNG"),
        (".png", "16UC1; compressedDepth png", "not accepted"),
    ],
)
def test_compressed_formats_other_than_declared_jpeg_or_png_are_refused(extension, fmt, message):
    msg = _compressed(np.zeros((8, 8, 3), np.uint8), extension, fmt)
    with pytest.raises(ImageConversionError, match=message):
        compressed_to_rgb(msg)


@pytest.mark.parametrize("fmt", ["", "jpeg", "rgb8; jpeg compressed bgr8", "JPG"])
def test_image_transport_format_strings_are_understood(fmt):
    out = compressed_to_rgb(_compressed(np.zeros((8, 8, 3), np.uint8), ".jpg", fmt))
    assert out.shape == (8, 8, 3)


def test_compressed_size_is_checked_from_the_header_before_decoding(monkeypatch):
    msg = _compressed(np.zeros((40, 30, 3), np.uint8), ".png", "png")

    def no_decoding(*_args):
        raise AssertionError("decoded an image that the header already refused")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    with pytest.raises(ImageConversionError, match="30x40; the largest accepted side is 32"):
        compressed_to_rgb(msg, max_side=32)


def test_sixteen_bit_png_scales_like_raw_sixteen_bit_images():
    values = np.array([[0, 257, 65535], [512, 1028, 30000]], dtype=np.uint16)
    out = compressed_to_rgb(_compressed(values, ".png", "png"))
    raw = image_to_rgb(make_image(values, "mono16"))
    np.testing.assert_array_equal(out, raw)


def test_rgb_to_image_keeps_header_and_round_trips():
    header = Header(frame_id="camera")
    header.stamp.sec = 12
    msg = rgb_to_image(RGB, header)
    assert (msg.encoding, msg.step, msg.header.frame_id, msg.header.stamp.sec) == (
        "rgb8",
        21,
        "camera",
        12,
    )
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)
    assert is_empty(Image()) and is_empty(Image(height=0, width=8)) and not is_empty(msg)
    assert not is_empty(Image(height=0, width=0, data=b"\x01"))


def test_a_png_header_declaring_a_huge_image_is_refused_by_its_size():
    info = struct.pack(">IIBBBBB", 16384, 16384, 8, 2, 0, 0, 0)
    chunk = (
        struct.pack(">I", len(info))
        + b"IHDR"
        + info
        + struct.pack(">I", zlib.crc32(b"IHDR" + info))
    )
    msg = CompressedImage(format="png", data=b"\x89PNG\r\n\x1a\n" + chunk)
    with pytest.raises(
        ImageConversionError, match="16384x16384; the largest accepted side is 4096"
    ):
        compressed_to_rgb(msg, max_side=4096)
