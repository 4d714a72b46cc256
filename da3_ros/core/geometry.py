"""Geometry: unprojection, point clouds, pose conventions and Umeyama / Sim(3) alignment.

Conventions used throughout:
- Camera frame: OpenCV optical (x right, y down, z forward). Pixel centres at integer (u, v).
- ``world_from_cam`` (4, 4): camera-to-world pose (camera pose in the world frame).
- ``cam_from_world`` (3, 4) or (4, 4): world-to-camera, what DA3 calls "extrinsics".
- ROS REP-103 body axes: x forward, y left, z up. A camera's ``<camera>_optical_frame`` uses
  the OpenCV optical axes; ``optical_to_ros_body`` is the one place that maps between them.
- A Sim(3) ``(s, R, t)`` maps a point ``x`` to ``s * R @ x + t``.
"""

from __future__ import annotations

import numpy as np

# Rotation taking optical-frame coordinates to REP-103 body coordinates of the same camera:
# x_body = z_opt (forward), y_body = -x_opt (left), z_body = -y_opt (up).
ROS_BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def to_homogeneous(T: np.ndarray) -> np.ndarray:
    """A (..., 3, 4) or (..., 4, 4) rigid/similarity matrix as (..., 4, 4) float64."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape[-2:] == (4, 4):
        return T.copy()
    if T.shape[-2:] != (3, 4):
        raise ValueError(f"expected (...,3,4) or (...,4,4), got {T.shape}")
    out = np.zeros(T.shape[:-2] + (4, 4))
    out[..., :3, :] = T
    out[..., 3, 3] = 1.0
    return out


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms (..., 4, 4) or (..., 3, 4); returns (..., 4, 4)."""
    T = to_homogeneous(T)
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    out = np.zeros_like(T)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, t)
    out[..., 3, 3] = 1.0
    return out


def cam_from_world_to_world_from_cam(cam_from_world: np.ndarray) -> np.ndarray:
    """OpenCV world-to-camera extrinsics (..., 3|4, 4) to camera-to-world poses (..., 4, 4).

    Both are in OpenCV optical axes; this only inverts the transform.
    """
    return invert_rigid(cam_from_world)


def world_from_cam_to_cam_from_world(world_from_cam: np.ndarray) -> np.ndarray:
    """Camera-to-world poses (..., 4, 4) to world-to-camera extrinsics (..., 4, 4)."""
    return invert_rigid(world_from_cam)


def optical_to_ros_body(world_from_optical: np.ndarray) -> np.ndarray:
    """Pose of a camera's REP-103 body frame from the pose of its optical frame.

    Args:
        world_from_optical: (..., 4, 4) camera-to-world pose whose camera axes are OpenCV
            optical (x right, y down, z forward).

    Returns:
        (..., 4, 4) ``world_from_body``: same origin, camera axes x forward, y left, z up.
        The world frame is unchanged (see ``ros_world_from_optical_world`` for that).
    """
    T = to_homogeneous(world_from_optical)
    optical_from_body = np.eye(4)
    optical_from_body[:3, :3] = ROS_BODY_FROM_OPTICAL.T
    return T @ optical_from_body


def ros_body_to_optical(world_from_body: np.ndarray) -> np.ndarray:
    """Inverse of :func:`optical_to_ros_body`: REP-103 body pose to optical-frame pose (..., 4, 4)."""
    T = to_homogeneous(world_from_body)
    body_from_optical = np.eye(4)
    body_from_optical[:3, :3] = ROS_BODY_FROM_OPTICAL
    return T @ body_from_optical


def ros_world_from_optical_world() -> np.ndarray:
    """(4, 4) rotation re-expressing a world frame with optical axes in REP-103 axes.

    The model's window world frame is a camera's optical frame (z forward, y down). Left-multiply
    poses (and points) by this to get a fixed frame with x forward, y left, z up (REP-103), e.g.
    ``ros_world_from_optical_world() @ optical_to_ros_body(world_from_cam)``.
    """
    T = np.eye(4)
    T[:3, :3] = ROS_BODY_FROM_OPTICAL
    return T


_FIXED_FROM_WORLD = ros_world_from_optical_world()


def fixed_from_model_world(world_from_cam: np.ndarray) -> np.ndarray:
    """Camera optical-frame poses in the REP-103 fixed frame from poses in the pipeline's world frame.

    The pipeline's world frame has OpenCV optical axes (it is the first window's
    reference camera frame). The fixed frame has the same origin with REP-103
    axes (x forward, y left, z up); the camera side stays the optical frame,
    since the pose is that of ``<camera>_optical_frame``.

    Args:
        world_from_cam: (..., 4, 4) camera-to-world, OpenCV optical axes on both sides.

    Returns:
        (..., 4, 4) ``fixed_from_optical``.
    """
    return _FIXED_FROM_WORLD @ np.asarray(world_from_cam, dtype=np.float64)


# The fixed frame's axes are the world's, permuted with signs (x_f = z, y_f = -x, z_f = -y).
_FIXED_AXIS = np.argmax(np.abs(_FIXED_FROM_WORLD[:3, :3]), axis=1)
_FIXED_SIGN = _FIXED_FROM_WORLD[:3, :3][np.arange(3), _FIXED_AXIS].astype(np.float32)
#: The same as ``(order, signs)``: fixed axis i is ``signs[i] * world axis order[i]``
#: (``wire.pack_cloud(..., axes=FIXED_AXES)`` packs world points in the fixed frame).
FIXED_AXES: tuple[tuple[int, ...], tuple[float, ...]] = (tuple(int(a) for a in _FIXED_AXIS),
                                                         tuple(float(x) for x in _FIXED_SIGN))


def points_to_fixed(points_world: np.ndarray) -> np.ndarray:
    """(N, 3) points in the pipeline's world frame -> (N, 3) float32 in the fixed frame.

    A signed permutation of the axes, done as one gather and a multiply: a matrix product would
    go through BLAS, whose worker threads then spin between the node's clouds (seen on a 16-core
    GPU host: four threads at 100 % CPU each).
    """
    return np.asarray(points_world, dtype=np.float32)[:, _FIXED_AXIS] * _FIXED_SIGN


def pixel_rays(K: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rays ``K^-1 [u, v, 1]`` for every pixel centre; (H, W, 3) float64 with z == 1."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    uv1 = np.stack([u, v, np.ones_like(u)], axis=-1)
    return uv1 @ np.linalg.inv(np.asarray(K, dtype=np.float64)).T


def unproject_depth(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Z-depth image to 3-D points in the camera's optical frame.

    Args:
        depth: (H, W) z-depth along the optical axis (any unit); NaN/inf/<=0 = unknown.
        K: (3, 3) intrinsics at the depth image's resolution.

    Returns:
        (H, W, 3) float32 points ``depth * K^-1 [u, v, 1]``; NaN where depth is unknown.
    """
    d = np.asarray(depth, dtype=np.float64)
    d = np.where(np.isfinite(d) & (d > 0), d, np.nan)
    return (pixel_rays(K, *d.shape) * d[..., None]).astype(np.float32)


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) or (3, 4) transform to points (..., 3); returns float32 (..., 3)."""
    T = to_homogeneous(T)
    p = np.asarray(points, dtype=np.float64)
    return (p @ T[:3, :3].T + T[:3, 3]).astype(np.float32)


def depth_to_world_points(depth: np.ndarray, K: np.ndarray, world_from_cam: np.ndarray) -> np.ndarray:
    """Depth (H, W) to world points (H, W, 3) float32 via the camera-to-world pose; NaN where unknown."""
    return transform_points(world_from_cam, unproject_depth(depth, K))


def colored_points(
    depth: np.ndarray,
    K: np.ndarray,
    world_from_cam: np.ndarray,
    image: np.ndarray,
    confidence: np.ndarray | None = None,
    conf_threshold: float = 0.0,
    min_depth: float = 0.0,
    max_depth: float = np.inf,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Filtered, coloured world points of one view.

    Args:
        depth: (H, W) z-depth.
        K: (3, 3) intrinsics.
        world_from_cam: (4, 4) camera-to-world pose (optical axes).
        image: (H, W, 3) uint8 RGB at the same size.
        confidence: (H, W) per-pixel confidence, or None (all 1).
        conf_threshold: keep pixels with confidence >= this.
        min_depth: keep pixels with depth >= min_depth (depth units).
        max_depth: keep pixels with depth <= max_depth.

    Returns:
        points (N, 3) float32 in the world frame, colors (N, 3) uint8, conf (N,) float32.
    """
    d = np.asarray(depth, dtype=np.float32)
    conf = np.ones_like(d) if confidence is None else np.asarray(confidence, dtype=np.float32)
    if image.shape[:2] != d.shape or conf.shape != d.shape:
        raise ValueError(f"depth {d.shape}, image {image.shape}, conf {conf.shape} sizes differ")
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(d) & (d > 0) & (d >= min_depth) & (d <= max_depth) & (conf >= conf_threshold)
    vs, us = np.nonzero(keep)
    rays = np.stack([us, vs, np.ones_like(us)], axis=-1).astype(np.float64) @ np.linalg.inv(K).T
    pts_cam = rays * d[vs, us, None]
    pts = transform_points(world_from_cam, pts_cam)
    return pts, np.asarray(image)[vs, us].astype(np.uint8), conf[vs, us]


def voxel_downsample(
    points: np.ndarray, colors: np.ndarray, conf: np.ndarray, voxel_size: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge points per cubic voxel: mean position and colour, maximum confidence.

    Args:
        points: (N, 3) float.
        colors: (N, 3) uint8.
        conf: (N,) float.
        voxel_size: voxel edge in the points' unit; <= 0 returns the input unchanged.

    Returns:
        (M, 3) float32 points, (M, 3) uint8 colours, (M,) float32 confidence, M <= N, ordered
        by voxel key.
    """
    if voxel_size <= 0 or len(points) == 0:
        return points, colors, conf
    keys = np.floor(np.asarray(points, dtype=np.float64) / voxel_size).astype(np.int64)
    _, inv, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    m = len(counts)
    psum = np.zeros((m, 3))
    csum = np.zeros((m, 3))
    np.add.at(psum, inv, points)
    np.add.at(csum, inv, colors.astype(np.float64))
    cmax = np.full(m, -np.inf, dtype=np.float64)
    np.maximum.at(cmax, inv, conf)
    n = counts[:, None].astype(np.float64)
    cols = np.clip(np.round(csum / n), 0, 255).astype(np.uint8)
    return (psum / n).astype(np.float32), cols, cmax.astype(np.float32)


def umeyama(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None, with_scale: bool = True
) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted least-squares similarity (Umeyama 1991) with ``dst ~= s * R @ src + t``.

    Args:
        src: (N, 3) points, N >= 1 (N >= 3 non-collinear for a unique R).
        dst: (N, 3) corresponding points.
        weights: (N,) non-negative weights, or None for equal weights.
        with_scale: estimate s (Sim(3)); False fixes s = 1 (SE(3)).

    Returns:
        (s, R (3, 3), t (3,)). Degenerate input (all src equal) gives s = 1, R = I.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    var_s = float(w @ np.sum(xs * xs, axis=1))
    if var_s < 1e-18:
        return 1.0, np.eye(3), mu_d - mu_s
    cov = (xd * w[:, None]).T @ xs
    U, D, Vt = np.linalg.svd(cov)
    E = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        E[2, 2] = -1.0
    R = U @ E @ Vt
    s = float(np.sum(D * np.diag(E)) / var_s) if with_scale else 1.0
    return s, R, mu_d - s * R @ mu_s


def sim3_matrix(s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(4, 4) matrix of the similarity ``x -> s R x + t``."""
    T = np.eye(4)
    T[:3, :3] = s * np.asarray(R)
    T[:3, 3] = t
    return T


def apply_sim3_to_poses(s: float, R: np.ndarray, t: np.ndarray, world_from_cam: np.ndarray) -> np.ndarray:
    """Re-express camera-to-world poses (..., 4, 4) in a new world ``x' = s R x + t``.

    Rotations become ``R @ R_i`` (they stay orthonormal), centres ``s R c_i + t``.
    """
    T = to_homogeneous(world_from_cam)
    out = T.copy()
    out[..., :3, :3] = np.asarray(R) @ T[..., :3, :3]
    out[..., :3, 3] = s * T[..., :3, 3] @ np.asarray(R).T + t
    return out


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of a rotation matrix (3, 3) in degrees."""
    c = (np.trace(R) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def mean_rotation(Rs: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Chordal L2 mean of rotations (N, 3, 3): the SVD projection of their weighted sum."""
    w = np.ones(len(Rs)) if weights is None else np.asarray(weights, dtype=np.float64)
    M = np.einsum("n,nij->ij", w, np.asarray(Rs, dtype=np.float64))
    U, _, Vt = np.linalg.svd(M)
    E = np.eye(3)
    E[2, 2] = np.sign(np.linalg.det(U @ Vt))
    return U @ E @ Vt
