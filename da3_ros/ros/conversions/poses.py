"""geometry_msgs Pose / Transform <-> 4x4 matrices and quaternions.

Quaternions are ``(x, y, z, w)``, the field order of geometry_msgs/Quaternion. Readers
normalise them; writers emit unit quaternions with ``w >= 0`` (q and -q are the same rotation;
the sign is fixed so equal matrices give equal messages). 4x4 matrices are homogeneous rigid
transforms ``[[R, t], [0, 0, 0, 1]]`` mapping points from the child frame into the parent frame
(a Pose / Transform in frame P is ``P_from_child``).
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Pose, Transform

from da3_ros.ros.errors import ConversionError

_ROTATION_TOL = 1e-3  # max |R^T R - I| entry accepted (float32 poses chained many times)


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
