"""sensor_msgs/Image and CompressedImage <-> numpy, numpy only (no cv_bridge).

Images (sensor_msgs/Image): ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``,
``mono16``, ``16UC1`` (depth in millimetres, 0 = invalid) and ``32FC1`` (depth in
metres, NaN = invalid, REP-118). Reading honours ``step`` (padded rows) and
``is_bigendian`` and returns a zero-copy view of ``msg.data`` whenever the byte
order is native; writing copies the array's bytes once into ``msg.data``.
CompressedImage (jpeg, png) is decoded and encoded with OpenCV.

Every reader also accepts messages deserialised by ``rosbags`` (duck typing on
the field names), so bag tools and the node share these functions.

Every failure raises :class:`ConversionError` (a ``ValueError``) whose message
names the problem; nothing returns a silently wrong array.
"""

from __future__ import annotations

import array

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from da3_ros.core import wire
from da3_ros.ros.errors import ConversionError

#: encoding -> (numpy scalar type code without byte order, channels)
IMAGE_ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "mono8": ("u1", 1),
    "mono16": ("u2", 1),
    "16UC1": ("u2", 1),
    "32FC1": ("f4", 1),
}

_COLOUR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_MM16_MAX_M = 65.535  # the largest depth a 16UC1 millimetre image can hold


def _encoding_info(encoding: str) -> tuple[str, int]:
    try:
        return IMAGE_ENCODINGS[encoding]
    except KeyError:
        raise ConversionError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(IMAGE_ENCODINGS)}"
        ) from None


def _byte_array(arr: np.ndarray) -> array.array:
    """One copy of ``arr``'s bytes (C order) as the ``array('B')`` rclpy stores in ``data``."""
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
    return out


def numpy_to_image_cdr(arr: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> bytes:
    """The serialised ``sensor_msgs/Image`` (CDR, little-endian) :func:`numpy_to_image` would build.

    ``Publisher.publish`` sends bytes as they are: no message object is built, and rclpy does not
    serialise it again (a 640x480 32FC1 image: 24-31 % less CPU to publish, bench/RESULTS.md
    "Publishing an image"). The pixel bytes are copied once, into the result.

    Args:
        arr: as for :func:`numpy_to_image`.
        encoding: one of :data:`IMAGE_ENCODINGS`.
        stamp_ns: header stamp, nanoseconds (>= 0).
        frame_id: header frame id.

    Raises:
        ConversionError: as :func:`numpy_to_image`.
    """
    arr, _ = _checked_array(arr, encoding)
    return wire.image_message(arr, encoding, stamp_ns, frame_id).tobytes()


def image_to_numpy(msg) -> tuple[np.ndarray, str]:
    """Decode a sensor_msgs/Image into an array.

    Args:
        msg: sensor_msgs/Image (rclpy or rosbags) in one of :data:`IMAGE_ENCODINGS`.

    Returns:
        ``(array, encoding)``: ``(H, W)`` for one channel, ``(H, W, C)`` otherwise;
        dtype uint8, uint16 (mono16 / 16UC1, millimetres for depth) or float32
        (32FC1, metres). A zero-copy view of ``msg.data`` (padded rows are skipped by
        strides) when the byte order is native; a native-order copy otherwise.
        Writing into the view writes into the message.

    Raises:
        ConversionError: unsupported encoding, empty image, ``step`` smaller than a
            row, or ``data`` shorter than ``height * step``.
    """
    encoding = str(msg.encoding)
    code, channels = _encoding_info(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ConversionError(f"empty image: {height} rows x {width} columns ({encoding})")
    dtype = np.dtype((">" if msg.is_bigendian else "<") + code)
    pixel_bytes = channels * dtype.itemsize
    if step < width * pixel_bytes:
        raise ConversionError(
            f"step {step} is smaller than width * bytes per pixel = {width} * {pixel_bytes} "
            f"= {width * pixel_bytes} for {encoding}"
        )
    raw = np.frombuffer(msg.data, dtype=np.uint8)
    if raw.size < height * step:
        raise ConversionError(
            f"image data has {raw.size} bytes, shorter than height * step = "
            f"{height} * {step} = {height * step} ({encoding})"
        )
    if channels == 1:
        shape, strides = (height, width), (step, dtype.itemsize)
    else:
        shape, strides = (height, width, channels), (step, pixel_bytes, dtype.itemsize)
    out = np.ndarray(shape, dtype=dtype, buffer=raw, strides=strides)
    if dtype.itemsize > 1 and not dtype.isnative:
        out = out.astype(dtype.newbyteorder("="))
    return out, encoding


def _checked_array(arr: np.ndarray, encoding: str) -> tuple[np.ndarray, int]:
    """``arr`` as it will be written for ``encoding`` (one channel squeezed) and its channels.

    Raises:
        ConversionError: see :func:`numpy_to_image`.
    """
    code, channels = _encoding_info(encoding)
    arr = np.asarray(arr)
    if channels == 1 and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    want = "(H, W)" if channels == 1 else f"(H, W, {channels})"
    if arr.ndim != (2 if channels == 1 else 3) or (channels > 1 and arr.shape[2] != channels):
        raise ConversionError(
            f"array of shape {arr.shape} does not match encoding {encoding}: expected {want}"
        )
    want_dtype = np.dtype(code)
    if arr.dtype.kind != want_dtype.kind or arr.dtype.itemsize != want_dtype.itemsize:
        raise ConversionError(
            f"array dtype {arr.dtype} does not match encoding {encoding}: expected {want_dtype.name}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ConversionError(f"empty image: {arr.shape[0]} rows x {arr.shape[1]} columns ({encoding})")
    return arr, channels


def numpy_to_image(arr: np.ndarray, encoding: str, header=None) -> Image:
    """Encode an array as a sensor_msgs/Image with unpadded rows.

    Args:
        arr: ``(H, W)`` (or ``(H, W, 1)``) for one-channel encodings, ``(H, W, C)``
            otherwise; dtype must match the encoding exactly (uint8 for 8-bit,
            uint16 for mono16 / 16UC1, float32 for 32FC1). Either byte order;
            ``is_bigendian`` follows the array's.
        encoding: one of :data:`IMAGE_ENCODINGS`.
        header: std_msgs/Header to attach (stamp = source stamp), or None.

    Raises:
        ConversionError: unsupported encoding, empty array, or shape / dtype not
            matching the encoding.
    """
    arr, channels = _checked_array(arr, encoding)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = wire.is_big_endian(arr)
    msg.step = msg.width * channels * arr.dtype.itemsize
    msg.data = _byte_array(arr)
    return msg


def _to_rgb(arr: np.ndarray, encoding: str) -> np.ndarray:
    if encoding in ("rgb8", "rgba8"):
        out = arr[..., :3]
    elif encoding in ("bgr8", "bgra8"):
        out = arr[..., 2::-1]
    elif encoding == "mono8":
        out = np.repeat(arr[..., None], 3, axis=2)
    else:  # mono16: keep the high byte
        out = np.repeat((arr >> 8).astype(np.uint8)[..., None], 3, axis=2)
    return np.ascontiguousarray(out)


def image_to_rgb(msg) -> np.ndarray:
    """Any colour or mono image message as ``(H, W, 3)`` uint8 RGB.

    Args:
        msg: sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8, mono16) or
            sensor_msgs/CompressedImage (jpeg, png), rclpy or rosbags.

    Returns:
        C-contiguous ``(H, W, 3)`` uint8. A zero-copy view of ``msg.data`` for an
        unpadded native rgb8 image, otherwise a new array (alpha dropped, BGR
        swapped, mono replicated, mono16 reduced to its high byte).

    Raises:
        ConversionError: depth encodings (16UC1, 32FC1) or any invalid input.
    """
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return compressed_to_numpy(msg)
    arr, encoding = image_to_numpy(msg)
    if encoding not in _COLOUR_ENCODINGS:
        raise ConversionError(f"encoding {encoding!r} is not a colour or mono image; cannot convert to RGB")
    return _to_rgb(arr, encoding)


def depth_m_to_mm16(depth_m: np.ndarray) -> np.ndarray:
    """Depth in metres -> 16UC1 millimetres.

    Args:
        depth_m: ``(H, W)`` float depth in metres; NaN / inf / <= 0 mean no estimate.

    Returns:
        ``(H, W)`` uint16 millimetres, rounded; 0 (invalid) where the input is not
        finite, not positive, or beyond 65.535 m (not representable).
    """
    d = np.asarray(depth_m, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0) & (d <= _MM16_MAX_M)
    mm = np.zeros(d.shape, dtype=np.uint16)
    mm[valid] = np.rint(d[valid] * 1000.0).astype(np.uint16)
    return mm


def mm16_to_depth_m(depth_mm: np.ndarray) -> np.ndarray:
    """16UC1 millimetres -> float32 metres, NaN where the input is 0 (invalid)."""
    mm = np.asarray(depth_mm)
    if mm.dtype != np.uint16:
        raise ConversionError(f"millimetre depth must be uint16, got {mm.dtype}")
    out = mm.astype(np.float32) / np.float32(1000.0)
    out[mm == 0] = np.nan
    return out


def image_to_depth_m(msg) -> np.ndarray:
    """A depth image (32FC1 metres or 16UC1 / mono16 millimetres) as float32 metres.

    Returns:
        ``(H, W)`` float32 metres, NaN where invalid (0 in millimetre images). A
        zero-copy view for a native-order 32FC1 image.
    """
    arr, encoding = image_to_numpy(msg)
    if encoding == "32FC1":
        return arr
    if encoding in ("16UC1", "mono16"):
        return mm16_to_depth_m(arr)
    raise ConversionError(f"encoding {encoding!r} is not a depth image (expected 32FC1 or 16UC1)")


def _compressed_codec(fmt: str, head: bytes) -> str:
    """'jpeg' or 'png' from a CompressedImage ``format`` string, checked against the data."""
    f = fmt.lower()
    if "compresseddepth" in f:
        raise ConversionError(f"unsupported CompressedImage format {fmt!r}: compressedDepth is not supported")
    sniffed = "jpeg" if head.startswith(_JPEG_MAGIC) else "png" if head.startswith(_PNG_MAGIC) else ""
    if "jpeg" in f or "jpg" in f:
        named = "jpeg"
    elif "png" in f:
        named = "png"
    elif f.strip() == "":
        named = sniffed
    else:
        raise ConversionError(f"unsupported CompressedImage format {fmt!r}: expected jpeg or png")
    if not named or sniffed != named:
        raise ConversionError(
            f"CompressedImage data is not a {named or 'jpeg/png'} stream (format {fmt!r}, "
            f"first bytes {head[:4].hex()})"
        )
    return named


def compressed_to_numpy(msg) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (jpeg or png) to ``(H, W, 3)`` uint8 RGB.

    Understands image_transport format strings (``"rgb8; jpeg compressed bgr8"``,
    ``"jpeg"``, ``"png"``, or empty: sniffed). A stream declared ``compressed
    rgb8`` holds RGB in OpenCV's BGR slots and is not swapped again. Mono streams
    come back with the grey value in all three channels.

    Raises:
        ConversionError: unknown or compressedDepth format, empty data, data that is
            not the declared codec, or data OpenCV cannot decode.
    """
    fmt = str(msg.format)
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size == 0:
        raise ConversionError(f"CompressedImage ({fmt!r}) has no data")
    codec = _compressed_codec(fmt, buf[:8].tobytes())
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ConversionError(f"could not decode CompressedImage {codec} data ({buf.size} bytes)")
    stored = fmt.lower().split("compressed", 1)[1].strip() if "compressed" in fmt.lower() else ""
    if stored.startswith("rgb"):
        return bgr
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def numpy_to_compressed(
    image: np.ndarray, fmt: str = "jpeg", header=None, quality: int = 90
) -> CompressedImage:
    """Encode ``(H, W, 3)`` uint8 RGB or ``(H, W)`` uint8 mono as a CompressedImage.

    Args:
        image: RGB (colour) or mono8 (grey) uint8 pixels.
        fmt: "jpeg" or "png".
        header: std_msgs/Header to attach, or None.
        quality: JPEG quality 1..100 (ignored for png).

    Returns:
        CompressedImage whose ``format`` follows image_transport, e.g.
        ``"rgb8; jpeg compressed bgr8"`` or ``"mono8; png compressed mono8"``.
    """
    if fmt not in ("jpeg", "png"):
        raise ConversionError(f"unsupported compression {fmt!r}: expected 'jpeg' or 'png'")
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ConversionError(f"compressed images need uint8 pixels, got {img.dtype}")
    if img.ndim == 2:
        src, stored, pixels = "mono8", "mono8", img
    elif img.ndim == 3 and img.shape[2] == 3:
        src, stored, pixels = "rgb8", "bgr8", cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)
    else:
        raise ConversionError(f"array of shape {img.shape} is neither (H, W, 3) RGB nor (H, W) mono")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ConversionError(f"empty image: {img.shape[0]} rows x {img.shape[1]} columns")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", np.ascontiguousarray(pixels), params)
    if not ok:
        raise ConversionError(f"OpenCV failed to encode a {img.shape} image as {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f"{src}; {fmt} compressed {stored}"
    msg.data = _byte_array(encoded)
    return msg
