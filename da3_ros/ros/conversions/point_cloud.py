"""sensor_msgs/PointCloud2 <-> numpy structured arrays (zero-copy reads, one copy on write).

Fields are float32 ``x, y, z`` [, ``rgb``] [, ``confidence``], little-endian, tightly packed;
``rgb`` is the RViz/PCL packing: uint32 ``0x00RRGGBB`` reinterpreted as float32.
"""

from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField

from da3_ros.core import wire
from da3_ros.ros.errors import ConversionError

#: PointField datatype -> numpy type code (byte order added by the reader)
POINTFIELD_DTYPES = {
    PointField.INT8: "i1",
    PointField.UINT8: "u1",
    PointField.INT16: "i2",
    PointField.UINT16: "u2",
    PointField.INT32: "i4",
    PointField.UINT32: "u4",
    PointField.FLOAT32: "f4",
    PointField.FLOAT64: "f8",
}

def points_to_cloud(points: np.ndarray, header=None, rgb: np.ndarray | None = None,
                    confidence: np.ndarray | None = None) -> PointCloud2:
    """Build a PointCloud2 from one structured array (one copy into ``data``).

    Args:
        points: ``(N, 3)`` unorganized (height 1) or ``(H, W, 3)`` organized xyz in
            the header's frame, metres; cast to float32. NaN marks a missing point.
        header: std_msgs/Header (frame and source stamp), or None.
        rgb: optional ``(N, 3)`` / ``(H, W, 3)`` uint8 RGB, packed into float32 "rgb".
        confidence: optional ``(N,)`` / ``(H, W)`` confidence, float32 "confidence".

    Returns:
        PointCloud2 with fields x, y, z[, rgb][, confidence] (FLOAT32, count 1),
        ``point_step`` 4 bytes per field, ``row_step = point_step * width`` and
        ``is_dense`` False iff some xyz is not finite.

    Raises:
        ConversionError: wrong shapes or dtypes (rgb must be uint8).
    """
    cloud, names = _cloud_array(points, rgb, confidence)
    msg = PointCloud2()
    if header is not None:
        msg.header = header
    msg.height, msg.width = wire.cloud_height_width(cloud)
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, n in enumerate(names)]
    msg.is_bigendian = False
    msg.point_step = cloud.dtype.itemsize
    msg.row_step = cloud.dtype.itemsize * msg.width
    msg.data = array.array("B")
    msg.data.frombytes(cloud.reshape(-1).view(np.uint8))
    msg.is_dense = wire.cloud_is_dense(cloud)
    return msg


def points_to_cloud_cdr(points: np.ndarray, stamp_ns: int, frame_id: str, rgb: np.ndarray | None = None,
                        confidence: np.ndarray | None = None) -> bytes:
    """The serialised PointCloud2 (CDR, little-endian) :func:`points_to_cloud` would build.

    ``Publisher.publish`` sends bytes as they are (see ``images.numpy_to_image_cdr``): no message
    object, no second serialisation in rclpy.

    Args:
        points: as for :func:`points_to_cloud`.
        stamp_ns: header stamp, nanoseconds (>= 0).
        frame_id: header frame id.
        rgb: as for :func:`points_to_cloud`.
        confidence: as for :func:`points_to_cloud`.

    Raises:
        ConversionError: as :func:`points_to_cloud`.
    """
    cloud, names = _cloud_array(points, rgb, confidence)
    return wire.cloud_message(cloud, names, stamp_ns, frame_id).tobytes()


def _cloud_array(points, rgb, confidence) -> tuple[np.ndarray, list[str]]:
    """The packed structured array (fields of 4 bytes) and its field names (``wire.pack_cloud``)."""
    try:
        return wire.pack_cloud(points, rgb, confidence)
    except ValueError as exc:
        raise ConversionError(str(exc)) from None


def cloud_dtype(msg) -> np.dtype:
    """The numpy structured dtype (itemsize ``point_step``) described by a cloud's PointFields."""
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if f.datatype not in POINTFIELD_DTYPES:
            raise ConversionError(f"PointField {f.name!r} has unknown datatype {f.datatype}")
        code = order + POINTFIELD_DTYPES[f.datatype]
        count = max(int(f.count), 1)
        end = int(f.offset) + count * np.dtype(code).itemsize
        if end > int(msg.point_step):
            raise ConversionError(
                f"PointField {f.name!r} ends at byte {end}, beyond point_step {msg.point_step}"
            )
        names.append(str(f.name))
        formats.append(code if count == 1 else (code, (count,)))
        offsets.append(int(f.offset))
    if len(set(names)) != len(names):
        raise ConversionError(f"PointCloud2 has duplicate field names {names}")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": int(msg.point_step)})


def cloud_to_numpy(msg) -> np.ndarray:
    """Read a PointCloud2 as a structured array, one named field per PointField.

    Returns:
        Shape ``(width,)`` when ``height == 1`` (unorganized), else ``(height, width)``.
        A zero-copy view of ``msg.data`` when native byte order (padding bytes
        between points or rows are skipped by strides); a native copy otherwise.
        The "rgb" field stays packed float32; see :func:`unpack_rgb`.

    Raises:
        ConversionError: unknown datatypes, fields beyond ``point_step``,
            ``row_step < width * point_step`` or data shorter than ``height * row_step``.
    """
    dtype = cloud_dtype(msg)
    height, width, row_step = int(msg.height), int(msg.width), int(msg.row_step)
    if row_step < width * dtype.itemsize:
        raise ConversionError(
            f"row_step {row_step} is smaller than width * point_step = {width * dtype.itemsize}"
        )
    raw = np.frombuffer(msg.data, dtype=np.uint8)
    if raw.size < height * row_step:
        raise ConversionError(
            f"cloud data has {raw.size} bytes, shorter than height * row_step = {height * row_step}"
        )
    out = np.ndarray((height, width), dtype=dtype, buffer=raw, strides=(row_step, dtype.itemsize))
    if not dtype.isnative:
        out = out.astype(dtype.newbyteorder("="))
    return out[0] if height == 1 else out


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """RViz/PCL packed "rgb" values (float32 or uint32 bits ``0x00RRGGBB``) -> ``(..., 3)`` uint8."""
    p = np.asarray(packed)
    if p.dtype.itemsize != 4 or p.dtype.kind not in "fiu":
        raise ConversionError(f"packed rgb must be 4-byte float32 or uint32, got {p.dtype}")
    bits = p.astype(p.dtype.newbyteorder("="), copy=False).view(np.uint32)
    return np.stack([(bits >> s) & 0xFF for s in (16, 8, 0)], axis=-1).astype(np.uint8)
