"""sensor_msgs/Image and CompressedImage read from their serialised (CDR) bytes.

The writers (``images.numpy_to_image_cdr``, ``point_cloud.points_to_cloud_cdr``) build on
:mod:`da3_ros.core.wire`, which the inference process uses too.

A subscription created with ``raw=True`` hands the callback the message's bytes as they came
off the wire. Reading the few header fields here and viewing the pixels with ``np.frombuffer``
skips what rclpy does for a deserialised message (a Python object per message and two copies of
the pixel data, about a millisecond for a 640 x 480 rgb8 image): the bytes object is the only
copy, and the returned message's ``data`` is a view into it.

The returned objects have the fields of the rclpy messages (``header.stamp.sec``/``nanosec``,
``header.frame_id``, ``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``, ``data``
for Image; ``format`` and ``data`` for CompressedImage), so every reader of
:mod:`da3_ros.ros.conversions.images` takes them unchanged.

CDR (OMG XCDR1, as Fast DDS writes ROS 2 messages): a 4-byte encapsulation header whose second
byte is 1 for little-endian and 0 for big-endian data, then the fields in order, each aligned
to its own size relative to the end of that header; a string is a uint32 length (counting its
terminating NUL) and the bytes; a ``uint8[]`` is a uint32 count and the bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from da3_ros.ros.errors import ConversionError

_ENCAPSULATION = {0x00: ">", 0x01: "<"}  # CDR_BE, CDR_LE (second byte of the header)


@dataclass(frozen=True)
class RawStamp:
    """builtin_interfaces/Time fields."""

    sec: int
    nanosec: int


@dataclass(frozen=True)
class RawHeader:
    """std_msgs/Header fields."""

    stamp: RawStamp
    frame_id: str


@dataclass(frozen=True)
class RawImage:
    """sensor_msgs/Image fields; ``data`` is a memoryview into the serialised bytes."""

    header: RawHeader
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: memoryview


@dataclass(frozen=True)
class RawCompressedImage:
    """sensor_msgs/CompressedImage fields; ``data`` is a memoryview into the serialised bytes."""

    header: RawHeader
    format: str
    data: memoryview


class _Reader:
    """Sequential CDR reader over ``buf`` (alignment relative to the end of the 4-byte header)."""

    def __init__(self, buf: bytes | memoryview, what: str) -> None:
        self.buf = memoryview(buf).cast("B")
        self.what = what
        if len(self.buf) < 4 or self.buf[1] not in _ENCAPSULATION or self.buf[0] != 0:
            raise ConversionError(f"{what}: not a plain CDR message (encapsulation {bytes(self.buf[:4])!r})")
        self.order = _ENCAPSULATION[self.buf[1]]
        self.pos = 4

    def _take(self, size: int, align: int) -> int:
        self.pos += (-(self.pos - 4)) % align
        start, self.pos = self.pos, self.pos + size
        if self.pos > len(self.buf):
            raise ConversionError(f"{self.what}: serialised message truncated at byte {start} "
                                  f"of {len(self.buf)}")
        return start

    def u32(self) -> int:
        return struct.unpack_from(self.order + "I", self.buf, self._take(4, 4))[0]

    def i32(self) -> int:
        return struct.unpack_from(self.order + "i", self.buf, self._take(4, 4))[0]

    def u8(self) -> int:
        return self.buf[self._take(1, 1)]

    def string(self) -> str:
        n = self.u32()
        start = self._take(n, 1)
        raw = bytes(self.buf[start:start + n])
        return raw[:-1].decode("utf-8", errors="replace") if n else ""

    def octets(self) -> memoryview:
        n = self.u32()
        start = self._take(n, 1)
        return self.buf[start:start + n]

    def header(self) -> RawHeader:
        sec, nanosec = self.i32(), self.u32()
        return RawHeader(RawStamp(sec, nanosec), self.string())


def decode_image(raw: bytes | memoryview) -> RawImage:
    """A serialised sensor_msgs/Image as :class:`RawImage` (pixels not copied).

    Raises:
        ConversionError: not CDR, or truncated.
    """
    r = _Reader(raw, "sensor_msgs/Image")
    header = r.header()
    height, width = r.u32(), r.u32()
    encoding = r.string()
    is_bigendian = r.u8()
    step = r.u32()
    return RawImage(header, height, width, encoding, is_bigendian, step, r.octets())


def cdr_stamp_ns(raw: bytes | memoryview) -> int:
    """The header stamp (ns) of a serialised message that starts with a ``std_msgs/Header``.

    Raises:
        ConversionError: not CDR, or truncated.
    """
    stamp = _Reader(raw, "message with a header").header().stamp
    return stamp.sec * 10**9 + stamp.nanosec


def decode_compressed_image(raw: bytes | memoryview) -> RawCompressedImage:
    """A serialised sensor_msgs/CompressedImage as :class:`RawCompressedImage` (data not copied).

    Raises:
        ConversionError: not CDR, or truncated.
    """
    r = _Reader(raw, "sensor_msgs/CompressedImage")
    header = r.header()
    fmt = r.string()
    return RawCompressedImage(header, fmt, r.octets())
