"""CameraInfo, PointCloud2, Pose/Transform and Time <-> numpy (re-exported by conversions).

Conventions:
- Quaternions are ``(x, y, z, w)``, the field order of geometry_msgs/Quaternion.
  Readers normalise them; writers emit unit quaternions with ``w >= 0`` (q and -q
  are the same rotation; the sign is fixed so equal matrices give equal messages).
- 4x4 matrices are homogeneous rigid transforms ``[[R, t], [0, 0, 0, 1]]`` that
  map points from the child frame into the parent frame (a Pose / Transform in
  frame P is ``P_from_child``).
- Stamps are integer nanoseconds.
- PointCloud2 fields are float32 ``x, y, z`` [, ``rgb``] [, ``confidence``],
  little-endian, tightly packed; ``rgb`` is the RViz/PCL packing: uint32
  ``0x00RRGGBB`` reinterpreted as float32.
"""

from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, Transform
from sensor_msgs.msg import CameraInfo, PointCloud2, PointField
from std_msgs.msg import Header

from da3_ros.core.frames import CameraIntrinsics
from da3_ros.ros.errors import ConversionError

NS_PER_S = 1_000_000_000
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
_ROTATION_TOL = 1e-3  # max |R^T R - I| entry accepted (float32 poses chained many times)


# ----------------------------------------------------------------------------- CameraInfo
def camera_info_to_intrinsics(msg, width: int | None = None, height: int | None = None,
                              rectified: bool = False) -> CameraIntrinsics:
    """CameraInfo -> CameraIntrinsics for the image the camera actually publishes.

    Binning and ROI follow REP-104 / image_geometry: the ROI is in full-resolution
    pixels, the published image is the ROI crop binned by ``binning_x/y``, so
    ``cx' = (cx - roi.x_offset) / binning_x`` and ``fx' = fx / binning_x``.

    Args:
        msg: sensor_msgs/CameraInfo (rclpy or rosbags).
        width: optional target image width; the intrinsics are then rescaled with
            :meth:`CameraIntrinsics.scaled` (give width and height, or neither).
        height: optional target image height.
        rectified: use ``P[:3, :3]`` and no distortion (for ``image_rect`` topics)
            instead of ``K`` and ``D``.

    Raises:
        ConversionError: zero size, an all-zero (uncalibrated) or non-finite matrix,
            non-positive focal lengths, an ROI outside the image, or only one of
            width / height.
    """
    full_w, full_h = int(msg.width), int(msg.height)
    if full_w <= 0 or full_h <= 0:
        raise ConversionError(f"CameraInfo has an empty image size {full_w}x{full_h}")
    K = (np.asarray(msg.p, dtype=np.float64).reshape(3, 4)[:, :3] if rectified
         else np.asarray(msg.k, dtype=np.float64).reshape(3, 3)).copy()
    name = "P" if rectified else "K"
    if not np.isfinite(K).all() or not K.any():
        raise ConversionError(
            f"CameraInfo {name} is all zero or not finite (uncalibrated camera?): {K.ravel()}"
        )
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ConversionError(f"CameraInfo {name} has non-positive focal lengths fx={K[0, 0]}, fy={K[1, 1]}")
    roi = msg.roi
    img_w, img_h = full_w, full_h
    if int(roi.width) > 0 and int(roi.height) > 0:
        x0, y0, img_w, img_h = int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)
        if x0 + img_w > full_w or y0 + img_h > full_h:
            raise ConversionError(
                f"CameraInfo ROI {img_w}x{img_h}+{x0}+{y0} lies outside the {full_w}x{full_h} image"
            )
        K[0, 2] -= x0
        K[1, 2] -= y0
    bx, by = max(int(msg.binning_x), 1), max(int(msg.binning_y), 1)
    K[0, :] /= bx
    K[1, :] /= by
    D = np.zeros(0) if rectified else np.asarray(msg.d, dtype=np.float64).copy()
    intr = CameraIntrinsics(K=K, width=img_w // bx, height=img_h // by, D=D,
                            distortion_model="" if rectified else str(msg.distortion_model))
    if (width is None) != (height is None):
        raise ConversionError(f"give both width and height to rescale intrinsics, got {width}x{height}")
    if width is not None and (width, height) != (intr.width, intr.height):
        if width <= 0 or height <= 0:
            raise ConversionError(f"cannot rescale intrinsics to an empty size {width}x{height}")
        intr = intr.scaled(int(width), int(height))
    return intr


def intrinsics_to_camera_info(intr: CameraIntrinsics, header=None) -> CameraInfo:
    """CameraIntrinsics -> CameraInfo (no binning, no ROI, R = I, P = [K | 0]).

    An empty ``distortion_model`` becomes ``"plumb_bob"`` with five zero
    coefficients when D is empty, so image_proc accepts the message.
    """
    K = np.asarray(intr.K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise ConversionError(f"intrinsics K must be a finite (3, 3) matrix, got shape {K.shape}")
    if intr.width <= 0 or intr.height <= 0:
        raise ConversionError(f"intrinsics have an empty image size {intr.width}x{intr.height}")
    D = np.asarray(intr.D, dtype=np.float64).ravel()
    model = intr.distortion_model or "plumb_bob"
    if not intr.distortion_model and D.size == 0:
        D = np.zeros(5)
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = int(intr.width), int(intr.height)
    msg.distortion_model = model
    msg.d = array.array("d", D.tolist())
    msg.k = K.ravel()
    msg.r = np.eye(3).ravel()
    msg.p = np.hstack([K, np.zeros((3, 1))]).ravel()
    return msg


# ----------------------------------------------------------------------------- PointCloud2
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
    xyz = np.asarray(points)
    if xyz.ndim not in (2, 3) or xyz.shape[-1] != 3 or xyz.dtype.kind not in "fiu":
        raise ConversionError(f"points must be numeric (N, 3) or (H, W, 3), got {xyz.shape} {xyz.dtype}")
    lead = xyz.shape[:-1]
    names = ["x", "y", "z"]
    extra = {}
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != lead + (3,) or rgb.dtype != np.uint8:
            raise ConversionError(f"rgb must be uint8 {lead + (3,)}, got {rgb.dtype} {rgb.shape}")
        r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
        extra["rgb"] = (r << 16) | (g << 8) | b
    if confidence is not None:
        confidence = np.asarray(confidence)
        if confidence.shape != lead or confidence.dtype.kind not in "fiu":
            raise ConversionError(
                f"confidence must be numeric {lead}, got {confidence.dtype} {confidence.shape}"
            )
        extra["confidence"] = confidence
    names += list(extra)
    # rgb is written as uint32 bits (declared FLOAT32 below): no float round trip on the packed value
    formats = ["<u4" if n == "rgb" else "<f4" for n in names]
    dtype = np.dtype({"names": names, "formats": formats, "offsets": [4 * i for i in range(len(names))],
                      "itemsize": 4 * len(names)})
    cloud = np.empty(lead, dtype=dtype)
    for i, axis in enumerate("xyz"):
        cloud[axis] = xyz[..., i]
    for name, values in extra.items():
        cloud[name] = values
    msg = PointCloud2()
    if header is not None:
        msg.header = header
    msg.height, msg.width = (int(lead[0]), int(lead[1])) if xyz.ndim == 3 else (1, int(lead[0]))
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, n in enumerate(names)]
    msg.is_bigendian = False
    msg.point_step = dtype.itemsize
    msg.row_step = dtype.itemsize * msg.width
    msg.data = array.array("B")
    msg.data.frombytes(cloud.reshape(-1).view(np.uint8))
    msg.is_dense = bool(np.isfinite(cloud["x"]).all() and np.isfinite(cloud["y"]).all()
                        and np.isfinite(cloud["z"]).all())
    return msg


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


# ----------------------------------------------------------------------------- poses
def quaternion_to_matrix(q) -> np.ndarray:
    """Quaternion ``(x, y, z, w)`` -> (3, 3) rotation matrix; normalised first.

    Raises:
        ConversionError: non-finite or zero-norm quaternion.
    """
    q = np.asarray(q, dtype=np.float64).reshape(4)
    n = np.linalg.norm(q)
    if not np.isfinite(q).all() or n < 1e-12:
        raise ConversionError(f"bad quaternion (x, y, z, w) = {q.tolist()}: zero norm or not finite")
    x, y, z, w = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> unit quaternion ``(x, y, z, w)`` with ``w >= 0`` (Shepperd's method).

    Raises:
        ConversionError: non-finite entries, or not a proper rotation within 1e-3
            (a reflection, a scale or a shear).
    """
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3) or not np.isfinite(R).all():
        raise ConversionError(
            f"rotation must be a finite (3, 3) matrix (NaN/inf in pose matrix?): {R.tolist()}"
        )
    err = np.abs(R.T @ R - np.eye(3)).max()
    if err > _ROTATION_TOL or np.linalg.det(R) <= 0:
        raise ConversionError(f"rotation block is not a proper rotation (|R^T R - I| = {err:.2e}, "
                              f"det = {np.linalg.det(R):.4f}): scale, shear or reflection in pose matrix")
    m = R
    tr = np.trace(m)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q) / np.linalg.norm(q)
    return -q if q[3] < 0 else q


def _check_matrix(T) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape not in ((4, 4), (3, 4)):
        raise ConversionError(f"pose matrix must be (4, 4) or (3, 4), got {T.shape}")
    if not np.isfinite(T).all():
        raise ConversionError(f"NaN or inf in pose matrix: {T.tolist()}")
    if T.shape == (4, 4) and not np.allclose(T[3], [0, 0, 0, 1], atol=1e-6):
        raise ConversionError(f"pose matrix bottom row must be [0, 0, 0, 1], got {T[3].tolist()}")
    return T


def pose_to_matrix(msg) -> np.ndarray:
    """geometry_msgs Pose or Transform -> (4, 4) float64 ``parent_from_child``.

    Raises:
        ConversionError: not a Pose/Transform, a zero-norm or non-finite quaternion,
            or a non-finite position.
    """
    if hasattr(msg, "position") and hasattr(msg, "orientation"):
        p, q = msg.position, msg.orientation
    elif hasattr(msg, "translation") and hasattr(msg, "rotation"):
        p, q = msg.translation, msg.rotation
    else:
        raise ConversionError(f"expected geometry_msgs Pose or Transform, got {type(msg).__name__}")
    t = np.array([p.x, p.y, p.z], dtype=np.float64)
    if not np.isfinite(t).all():
        raise ConversionError(f"NaN or inf in pose position {t.tolist()}")
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix([q.x, q.y, q.z, q.w])
    T[:3, 3] = t
    return T


def matrix_to_pose(T: np.ndarray) -> Pose:
    """(4, 4) or (3, 4) rigid ``parent_from_child`` -> Pose (unit quaternion, ``w >= 0``)."""
    T = _check_matrix(T)
    q = matrix_to_quaternion(T[:3, :3])
    msg = Pose()
    msg.position.x, msg.position.y, msg.position.z = (float(v) for v in T[:3, 3])
    o = msg.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in q)
    return msg


def matrix_to_transform(T: np.ndarray) -> Transform:
    """(4, 4) or (3, 4) rigid ``parent_from_child`` -> Transform (unit quaternion, ``w >= 0``)."""
    T = _check_matrix(T)
    q = matrix_to_quaternion(T[:3, :3])
    msg = Transform()
    msg.translation.x, msg.translation.y, msg.translation.z = (float(v) for v in T[:3, 3])
    r = msg.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return msg


# ----------------------------------------------------------------------------- time
def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (rclpy or rosbags) -> integer nanoseconds (exact)."""
    sec, nsec = int(stamp.sec), int(stamp.nanosec)
    if not 0 <= nsec < NS_PER_S:
        raise ConversionError(f"Time.nanosec {nsec} outside [0, 1e9)")
    return sec * NS_PER_S + nsec


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time (negative times floor to sec < 0)."""
    if isinstance(ns, float | np.floating):
        raise ConversionError(f"stamp must be integer nanoseconds, got float {ns!r}")
    sec, nsec = divmod(int(ns), NS_PER_S)
    if not -(2**31) <= sec < 2**31:
        raise ConversionError(f"stamp {ns} ns does not fit Time.sec (int32)")
    return Time(sec=sec, nanosec=nsec)


def make_header(stamp_ns: int, frame_id: str) -> Header:
    """std_msgs/Header with the given stamp (integer ns) and frame id."""
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=str(frame_id))
