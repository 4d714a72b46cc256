import numpy as np
import pytest
from _core_synth import make_sequence
from scipy.spatial.transform import Rotation

from da3_ros.core import geometry as g


def _pose(rotvec, t):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])


def test_unproject_plane_points_lie_on_plane_and_reproject():
    # Plane n.x = d in the camera frame, ray cast analytically: depth = d / (n . K^-1 [u v 1]).
    n, d = np.array([0.1, -0.2, 1.0]) / np.linalg.norm([0.1, -0.2, 1.0]), 3.0
    rays = g.pixel_rays(K, 48, 64)
    depth = d / (rays @ n)
    pts = g.unproject_depth(depth, K).astype(np.float64)
    np.testing.assert_allclose(pts @ n, d, rtol=1e-5)
    np.testing.assert_allclose(pts[..., 2], depth, rtol=1e-6)
    uv = pts @ K.T
    u, v = np.meshgrid(np.arange(64), np.arange(48))
    np.testing.assert_allclose(uv[..., 0] / uv[..., 2], u, atol=1e-3)
    np.testing.assert_allclose(uv[..., 1] / uv[..., 2], v, atol=1e-3)


def test_unproject_marks_unknown_depth_nan():
    depth = np.full((4, 5), 2.0, np.float32)
    depth[0, 0], depth[1, 1], depth[2, 2] = np.nan, np.inf, 0.0
    pts = g.unproject_depth(depth, K)
    assert np.isnan(pts[0, 0]).all() and np.isnan(pts[1, 1]).all() and np.isnan(pts[2, 2]).all()
    assert np.isfinite(pts[3]).all()


def test_world_points_from_scene_depth_match_other_view():
    seq = make_sequence(12, kind="room")
    d0, T0, intr = seq(seq.frames[0])
    d1, T1, _ = seq(seq.frames[11])
    pts = g.depth_to_world_points(d0, intr.K, T0).reshape(-1, 3).astype(np.float64)
    pts = pts[np.isfinite(pts).all(1)]
    cam1 = g.transform_points(g.world_from_cam_to_cam_from_world(T1), pts).astype(np.float64)
    uvw = cam1 @ intr.K.T
    front = uvw[:, 2] > 0.1
    u, v = uvw[front, 0] / uvw[front, 2], uvw[front, 1] / uvw[front, 2]
    inside = (u > 1) & (u < 62) & (v > 1) & (v < 46)
    z = uvw[front, 2][inside]
    z_seen = d1[np.round(v[inside]).astype(int), np.round(u[inside]).astype(int)]
    # Points of view 0 seen by view 11 land where view 11's own depth says (occlusions aside).
    close = np.abs(z - z_seen) < 0.05 * z
    assert inside.sum() > 500 and close.mean() > 0.8


def test_pose_inversions_and_rep103_conversion():
    T = _pose([0.3, -0.2, 0.1], [1.0, 2.0, 3.0])
    E = g.world_from_cam_to_cam_from_world(T)
    np.testing.assert_allclose(E @ T, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(g.cam_from_world_to_world_from_cam(E[:3]), T, atol=1e-12)
    # Optical z (forward) is REP-103 body x; optical x (right) is body -y; optical y (down) is body -z.
    B = g.optical_to_ros_body(T)
    np.testing.assert_allclose(B[:3, 0], T[:3, 2], atol=1e-12)
    np.testing.assert_allclose(B[:3, 1], -T[:3, 0], atol=1e-12)
    np.testing.assert_allclose(B[:3, 2], -T[:3, 1], atol=1e-12)
    np.testing.assert_allclose(B[:3, 3], T[:3, 3])
    np.testing.assert_allclose(g.ros_body_to_optical(B), T, atol=1e-12)
    # A level camera looking along optical z: in the REP-103 world its body frame is identity.
    W = g.ros_world_from_optical_world()
    np.testing.assert_allclose(W @ g.optical_to_ros_body(np.eye(4)), np.eye(4), atol=1e-12)
    # A point 2 m in front of the camera is 2 m along REP-103 world x.
    np.testing.assert_allclose(g.transform_points(W, [0, 0, 2.0]), [2.0, 0, 0], atol=1e-6)


@pytest.mark.parametrize("with_scale", [True, False])
def test_umeyama_recovers_similarity_and_ignores_zero_weight_outliers(with_scale):
    rng = np.random.default_rng(3)
    src = rng.normal(size=(30, 3))
    s = 2.5 if with_scale else 1.0
    R = Rotation.from_rotvec([0.4, 0.1, -0.7]).as_matrix()
    t = np.array([0.5, -1.0, 2.0])
    dst = s * src @ R.T + t
    w = np.ones(30)
    dst[:5] += 10.0  # outliers with zero weight
    w[:5] = 0.0
    s2, R2, t2 = g.umeyama(src, dst, w, with_scale=with_scale)
    assert s2 == pytest.approx(s, rel=1e-9)
    np.testing.assert_allclose(R2, R, atol=1e-9)
    np.testing.assert_allclose(t2, t, atol=1e-9)
    s3, _, _ = g.umeyama(src, dst, None, with_scale=with_scale)
    assert with_scale is False or abs(s3 - s) > 1e-3  # the outliers matter unless weighted out


def test_apply_sim3_to_poses_matches_point_transform():
    T = _pose([0.1, 0.2, 0.3], [1, 2, 3])
    s, R, t = 1.7, Rotation.from_rotvec([0, 0.5, 0]).as_matrix(), np.array([3.0, 0, -1])
    T2 = g.apply_sim3_to_poses(s, R, t, T)
    p_cam = np.array([0.3, -0.1, 2.0])
    # A point at p_cam * s (depth scales by s) seen by the new pose lands where Sim3 maps the old one.
    expected = g.transform_points(g.sim3_matrix(s, R, t), g.transform_points(T, p_cam))
    np.testing.assert_allclose(g.transform_points(T2, s * p_cam), expected, atol=1e-5)
    np.testing.assert_allclose(T2[:3, :3] @ T2[:3, :3].T, np.eye(3), atol=1e-12)


def test_colored_points_filters_and_voxel_downsample():
    depth = np.array([[1.0, 2.0, np.nan], [5.0, 0.5, 3.0]], np.float32)
    conf = np.array([[2.0, 0.5, 2.0], [2.0, 2.0, 2.0]], np.float32)
    img = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
    Kp = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1]])
    pts, cols, c = g.colored_points(depth, Kp, np.eye(4), img, conf, conf_threshold=1.0,
                                    min_depth=0.8, max_depth=4.0)
    # Kept: (0,0) d=1 and (1,2) d=3; (0,1) low conf, (0,2) NaN, (1,0) too far, (1,1) too near.
    np.testing.assert_allclose(pts, [[0, 0, 1.0], [6.0, 3.0, 3.0]])
    np.testing.assert_array_equal(cols, [img[0, 0], img[1, 2]])
    np.testing.assert_allclose(c, [2.0, 2.0])
    P = np.array([[0.01, 0.01, 0.01], [0.03, 0.02, 0.04], [1.01, 0, 0]], np.float32)
    C = np.array([[0, 0, 0], [100, 50, 20], [7, 7, 7]], np.uint8)
    p2, c2, f2 = g.voxel_downsample(P, C, np.array([1.0, 3.0, 2.0], np.float32), 0.1)
    order = np.argsort(p2[:, 0])
    np.testing.assert_allclose(p2[order], [[0.02, 0.015, 0.025], [1.01, 0, 0]], atol=1e-6)
    np.testing.assert_array_equal(c2[order], [[50, 25, 10], [7, 7, 7]])
    np.testing.assert_allclose(f2[order], [3.0, 2.0])


def test_mean_rotation_of_symmetric_perturbations_is_centre():
    R0 = Rotation.from_rotvec([0.2, 0.3, -0.1]).as_matrix()
    d = Rotation.from_rotvec([0, 0, 0.05]).as_matrix()
    np.testing.assert_allclose(g.mean_rotation(np.stack([R0 @ d, R0 @ d.T])), R0, atol=1e-12)
