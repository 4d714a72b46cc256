"""Serialised (CDR) sensor_msgs/Image and PointCloud2 laid out with numpy, without ROS.

A published image or cloud, as bytes on the wire, is a short prefix (encapsulation, header,
sizes, encoding or field list), the pixel or point bytes as they lie in memory and, for a cloud,
one trailing byte. :class:`Framed` keeps those three pieces apart, so whoever writes the message
(:meth:`Framed.tobytes`, or ``inference.shm_ring.SlotRing.write`` straight into shared memory) copies
the array once. The inference process frames each published map and the window's cloud this way,
and the ROS process publishes them from shared memory as they lie, with nothing left to build;
``ros.conversions.numpy_to_image_cdr`` and ``points_to_cloud_cdr`` build the same bytes from
these pieces. Nothing here imports ROS: this is the messages' byte layout, like a file format.

CDR (OMG XCDR1, as Fast DDS writes ROS 2 messages), little-endian here: a 4-byte encapsulation
header (``00 01 00 00``), then the fields in order, each aligned to its own size relative to the
end of that header; a string is a uint32 length (counting its terminating NUL) and the bytes; a
``uint8[]`` is a uint32 count and the bytes.

Clouds have float32 fields ``x, y, z`` [, ``rgb``] [, ``confidence``], tightly packed; ``rgb``
is the RViz/PCL packing, uint32 ``0x00RRGGBB`` bits declared FLOAT32.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: sensor_msgs/PointField.FLOAT32
POINTFIELD_FLOAT32 = 7


@dataclass(frozen=True)
class Framed:
    """A serialised message: ``prefix`` + the bytes of ``array`` (C order) + ``suffix``."""

    prefix: bytes
    array: np.ndarray
    suffix: bytes = b""

    @property
    def nbytes(self) -> int:
        """Length of the whole message in bytes."""
        return len(self.prefix) + self.array.nbytes + len(self.suffix)

    def tobytes(self) -> bytes:
        """The message as one ``bytes`` (one copy of the array)."""
        return b"".join((self.prefix, np.ascontiguousarray(self.array).reshape(-1).view(np.uint8),
                         self.suffix))


def cdr_string(text: str) -> bytes:
    """A CDR string: uint32 length (with the NUL), the UTF-8 bytes, NUL."""
    data = text.encode() + b"\0"
    return struct.pack("<I", len(data)) + data


def pad4(buf: bytes) -> bytes:
    """``buf`` padded to a multiple of 4 bytes.

    Offsets count from after the 4-byte encapsulation header, itself 4 bytes long, so padding the
    whole buffer aligns them.
    """
    return buf + b"\0" * (-len(buf) % 4)


def header_cdr(stamp_ns: int, frame_id: str) -> bytes:
    """The CDR encapsulation (little-endian) and a ``std_msgs/Header``, padded to 4 bytes."""
    head = b"\x00\x01\x00\x00" + struct.pack("<iI", stamp_ns // 10**9, stamp_ns % 10**9)
    return pad4(head + cdr_string(frame_id))


def image_message(arr: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Framed:
    """A ``sensor_msgs/Image`` of ``arr``, framed (no copy of the pixels here).

    Args:
        arr: (H, W) or (H, W, C) pixels whose dtype and channels fit ``encoding`` (not checked
            here: ``ros.conversions.numpy_to_image_cdr`` checks); made C-contiguous if it is not.
        encoding: the image encoding, e.g. ``32FC1`` or ``rgb8``.
        stamp_ns: header stamp, nanoseconds (>= 0).
        frame_id: header frame id.
    """
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    step = arr.nbytes // h if h else 0
    head = header_cdr(stamp_ns, frame_id) + struct.pack("<II", h, w)
    head = pad4(head + cdr_string(encoding) + bytes([is_big_endian(arr)]))  # is_bigendian: one byte
    head += struct.pack("<II", step, h * step)
    return Framed(head, arr)


def is_big_endian(arr: np.ndarray) -> bool:
    """Image ``is_bigendian`` of ``arr``'s pixels (False for one-byte types)."""
    order = arr.dtype.byteorder
    return arr.dtype.itemsize > 1 and (order == ">" or (order == "=" and not np.little_endian))


def pack_cloud(points: np.ndarray, rgb: np.ndarray | None = None, confidence: np.ndarray | None = None,
               axes: tuple[Sequence[int], Sequence[float]] | None = None) -> tuple[np.ndarray, list[str]]:
    """Points (and colours, confidences) as one packed structured array, and its field names.

    Args:
        points: (N, 3) or (H, W, 3) numeric xyz, metres; cast to float32.
        rgb: optional uint8 (N, 3) / (H, W, 3), packed into the uint32 field ``rgb``.
        confidence: optional numeric (N,) / (H, W), float32 field ``confidence``.
        axes: optional ``(order, signs)``: field i is ``signs[i] * points[..., order[i]]`` (a
            signed permutation, e.g. ``geometry.FIXED_AXES``: world points packed in the fixed
            frame in the same pass).

    Returns:
        ``(cloud, names)``: shape (N,) or (H, W), little-endian fields of 4 bytes each.

    Raises:
        ValueError: wrong shapes or dtypes (the message names them).
    """
    xyz = np.asarray(points)
    if xyz.ndim not in (2, 3) or xyz.shape[-1] != 3 or xyz.dtype.kind not in "fiu":
        raise ValueError(f"points must be numeric (N, 3) or (H, W, 3), got {xyz.shape} {xyz.dtype}")
    lead = xyz.shape[:-1]
    names = ["x", "y", "z"]
    extra = {}
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != lead + (3,) or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8 {lead + (3,)}, got {rgb.dtype} {rgb.shape}")
        extra["rgb"] = rgb
    if confidence is not None:
        confidence = np.asarray(confidence)
        if confidence.shape != lead or confidence.dtype.kind not in "fiu":
            raise ValueError(f"confidence must be numeric {lead}, got {confidence.dtype} {confidence.shape}")
        extra["confidence"] = confidence
    names += list(extra)
    # rgb is written as uint32 bits (declared FLOAT32): no float round trip on the packed value
    formats = ["<u4" if n == "rgb" else "<f4" for n in names]
    dtype = np.dtype({"names": names, "formats": formats, "offsets": [4 * i for i in range(len(names))],
                      "itemsize": 4 * len(names)})
    # one block of little-endian 4-byte columns, filled one column at a time (numpy copies a
    # strided column fast, a block of 3 narrow columns slowly), then viewed as the structured array
    n = int(np.prod(lead))
    block = np.empty((n, len(names)), "<f4")
    order, signs = axes if axes is not None else ((0, 1, 2), (1.0, 1.0, 1.0))
    flat = xyz.reshape(n, 3)
    for axis, (source, sign) in enumerate(zip(order, signs)):
        if sign == 1.0:
            block[:, axis] = flat[:, source]
        else:
            np.multiply(flat[:, source], sign, out=block[:, axis], casting="unsafe")
    col = 3
    if "rgb" in extra:  # bytes of the little-endian uint32 (r << 16 | g << 8 | b): b, g, r, 0
        as_bytes = block.view(np.uint8).reshape(n, 4 * len(names))
        for j, channel in enumerate((2, 1, 0)):
            as_bytes[:, 4 * col + j] = rgb.reshape(n, 3)[:, channel]
        as_bytes[:, 4 * col + 3] = 0
        col += 1
    if "confidence" in extra:
        block[:, col] = confidence.reshape(n)
    return block.view(dtype).reshape(lead), names


def cloud_height_width(cloud: np.ndarray) -> tuple[int, int]:
    """PointCloud2 ``height, width`` of a packed cloud: (1, N) unorganised, (H, W) organised."""
    return (int(cloud.shape[0]), int(cloud.shape[1])) if cloud.ndim == 2 else (1, int(cloud.shape[0]))


def cloud_is_dense(cloud: np.ndarray) -> bool:
    """PointCloud2 ``is_dense``: every point's x, y, z finite."""
    fields = cloud.dtype.fields or {}
    packed = [fields.get(axis, (None, -1))[1] for axis in "xyz"] == [0, 4, 8] and all(
        fields[axis][0] == np.dtype("<f4") for axis in "xyz")
    if packed and cloud.flags.c_contiguous and cloud.dtype.itemsize % 4 == 0:  # xyz: the first 3 columns
        block = cloud.reshape(-1).view("<f4").reshape(cloud.size, cloud.dtype.itemsize // 4)
        return all(bool(np.isfinite(block[:, axis]).all()) for axis in range(3))
    return bool(np.isfinite(cloud["x"]).all() and np.isfinite(cloud["y"]).all()
                and np.isfinite(cloud["z"]).all())


def cloud_message(cloud: np.ndarray, names: list[str], stamp_ns: int, frame_id: str) -> Framed:
    """A ``sensor_msgs/PointCloud2`` of a :func:`pack_cloud` array, framed (no copy of the points)."""
    height, width = cloud_height_width(cloud)
    buf = header_cdr(stamp_ns, frame_id) + struct.pack("<III", height, width, len(names))
    for i, name in enumerate(names):  # PointField: name, offset (uint32), datatype (uint8), count
        buf = pad4(buf + cdr_string(name)) + struct.pack("<IB", 4 * i, POINTFIELD_FLOAT32)
        buf = pad4(buf) + struct.pack("<I", 1)
    step = cloud.dtype.itemsize
    buf = pad4(buf + b"\x00") + struct.pack("<III", step, step * width, cloud.nbytes)  # is_bigendian
    return Framed(buf, cloud, bytes([cloud_is_dense(cloud)]))

