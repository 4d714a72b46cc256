"""Procedural scenes: exact depth, determinism, textures, free-space trajectories, rigs."""

import numpy as np
import pytest

from da3_ros.sim.scene import (
    SCENE_KINDS,
    default_intrinsics,
    make_scene,
    make_trajectory,
    rig_offsets,
    trajectory_at,
)

W, H = 96, 72


def _surface_distance(scene, pts):
    """Distance (N,) of world points to the nearest surface of ``scene`` (independent of render)."""
    best = np.full(len(pts), np.inf)
    for lo, hi in scene.boxes.astype(np.float64):
        outside = np.linalg.norm(np.maximum(np.maximum(lo - pts, pts - hi), 0), axis=1)
        inside = np.min(np.minimum(pts - lo, hi - pts), axis=1)
        best = np.minimum(best, np.where(outside > 0, outside, np.abs(inside)))
    for c in scene.spheres.astype(np.float64):
        best = np.minimum(best, np.abs(np.linalg.norm(pts - c[:3], axis=1) - c[3]))
    if scene.hall is not None:
        best = np.minimum(best, np.min(np.abs(np.concatenate([pts - scene.hall[0], scene.hall[1] - pts], 1)),
                                       axis=1))
    if scene.ground_extent_m > 0:
        best = np.minimum(best, np.abs(pts[:, 2]))
    return best


def _unproject(depth, K, T):
    v, u = np.nonzero(np.isfinite(depth))
    z = depth[v, u].astype(np.float64)
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)
    return cam @ T[:3, :3].T + T[:3, 3], z


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_depth_lies_on_surfaces_and_images_are_textured(kind):
    scene = make_scene(kind, seed=3)
    _, poses = make_trajectory(kind, 6, 10.0, seed=3)
    K = default_intrinsics(W, H).K
    for T in poses[::5]:
        rgb, depth = scene.render(T, K, W, H)
        assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
        assert depth.shape == (H, W) and depth.dtype == np.float32
        assert np.isfinite(depth).mean() > 0.5
        assert np.all(depth[np.isfinite(depth)] > 0)
        pts, z = _unproject(depth, K, T)
        assert np.quantile(_surface_distance(scene, pts) / z, 0.999) < 1e-4
        # texture: a good share of pixels have a visible intensity gradient
        grey = rgb.astype(np.float32).mean(axis=2)
        grad = np.abs(np.diff(grey, axis=1))
        assert (grad > 4).mean() > 0.15


def test_outdoor_sky_has_infinite_depth_above_horizon():
    scene = make_scene("outdoor", seed=0)
    _, poses = make_trajectory("outdoor", 1, 10.0, seed=0)
    rgb, depth = scene.render(poses[0], default_intrinsics(W, H).K, W, H)
    sky = np.isinf(depth)
    assert sky.any()
    assert sky[: H // 2].sum() > 5 * sky[H // 2:].sum()  # the sky is up


def test_render_is_deterministic_for_a_seed_and_differs_between_seeds():
    K = default_intrinsics(W, H).K
    _, poses = make_trajectory("room", 2, 10.0, seed=1)
    a = make_scene("room", 1).render(poses[1], K, W, H)
    b = make_scene("room", 1).render(poses[1], K, W, H)
    c = make_scene("room", 2).render(poses[1], K, W, H)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_trajectory_is_smooth_valid_and_in_free_space(kind):
    rate = 10.0
    stamps, poses = make_trajectory(kind, 300, rate, seed=5)
    assert stamps.dtype == np.int64 and poses.shape == (300, 4, 4)
    dt = np.diff(stamps) * 1e-9
    assert np.all(np.abs(dt - 1 / rate) <= 0.05 / rate)  # rate with small jitter
    assert not np.allclose(dt, 1 / rate, rtol=0, atol=1e-9)  # ... that is really there
    R = poses[:, :3, :3]
    assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(R), 1.0)
    step = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    assert step.max() < 0.2 and step.mean() > 0.01  # moves, without jumps
    rot = np.arccos(np.clip((np.trace(R[1:] @ R[:-1].transpose(0, 2, 1), axis1=1, axis2=2) - 1) / 2, -1, 1))
    assert np.degrees(rot).max() < 5.0
    # camera looks roughly horizontal: optical z has a small vertical component
    assert np.all(np.abs(poses[:, 2, 2]) < 0.3)
    # long trajectory (10 minutes at 2 Hz) stays clear of every solid
    scene = make_scene(kind, seed=5)
    long_poses = trajectory_at(kind, np.linspace(0, 600, 1200), seed=5)
    assert scene.is_free(long_poses[:, :3, 3], margin_m=0.3).all()


def test_trajectory_is_deterministic():
    a = make_trajectory("corridor", 20, 15.0, seed=9)
    b = make_trajectory("corridor", 20, 15.0, seed=9)
    c = make_trajectory("corridor", 20, 15.0, seed=10)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.allclose(a[1], c[1])


def test_default_intrinsics_field_of_view():
    intr = default_intrinsics(640, 480, hfov_deg=90.0)
    assert intr.K[0, 0] == pytest.approx(320.0)
    assert intr.K[1, 1] == pytest.approx(320.0)
    assert (intr.width, intr.height) == (640, 480)
    assert intr.K[0, 2] == pytest.approx(319.5) and intr.K[1, 2] == pytest.approx(239.5)


def test_rig_offsets():
    assert np.array_equal(rig_offsets(1), np.eye(4)[None])
    rig = rig_offsets(3, spacing_deg=40.0)
    assert rig.shape == (3, 4, 4)
    fwd = rig[:, :3, 2]
    yaw = np.degrees(np.arctan2(fwd[:, 0], fwd[:, 2]))
    assert np.allclose(yaw, [-40.0, 0.0, 40.0])
    assert np.allclose(np.linalg.det(rig[:, :3, :3]), 1.0)
    assert np.allclose(fwd[:, 1], 0.0)  # yawed about the body's down axis only
    assert 0 < np.linalg.norm(rig[0, :3, 3] - rig[1, :3, 3]) < 0.2  # small baseline


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown scene kind"):
        make_scene("moon", 0)


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_scan_style_pans_from_the_same_positions_and_sees_near_and_far(kind):
    t = np.linspace(0, 30, 301)
    survey, scan = trajectory_at(kind, t, seed=5), trajectory_at(kind, t, seed=5, style="scan")
    assert np.array_equal(survey[:, :3, 3], scan[:, :3, 3])  # same free-space positions
    cos = np.clip(np.einsum("ni,ni->n", survey[:, :3, 2], scan[:, :3, 2]), -1, 1)
    assert np.degrees(np.arccos(cos)).max() > 50  # pans far from the survey heading
    assert np.all(np.abs(scan[:, 2, 2]) < 0.3)  # still roughly horizontal
    scene, intr = make_scene(kind, 5), default_intrinsics(W, H)

    def log_mean_depth_range(poses):
        means = []
        for p in poses[::10]:
            d = scene.render(p, intr.K, W, H)[1]
            means.append(np.log(d[np.isfinite(d)].mean()))
        return np.ptp(means)

    assert log_mean_depth_range(scan) > log_mean_depth_range(survey) + 0.05
    with pytest.raises(ValueError, match="trajectory style"):
        trajectory_at(kind, t, seed=5, style="orbit")
