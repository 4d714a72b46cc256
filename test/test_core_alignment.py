import numpy as np
import pytest
from _core_synth import collect_published, make_sequence

from da3_ros.core.alignment import WindowChainer, depth_ratio_scale, estimate_sim3
from da3_ros.core.config import PipelineConfig
from da3_ros.core.frames import CameraIntrinsics, Frame, WindowPrediction
from da3_ros.core.geometry import apply_sim3_to_poses, invert_rigid, pixel_rays
from da3_ros.core.pipeline import Pipeline
from da3_ros.sim.standin import GroundTruthPredictor


def _run(seq, predictor, **cfg):
    p = Pipeline(PipelineConfig(**cfg), predictor)
    results = [r for f in seq.frames for r in p.push(f)] + p.flush()
    return p, results


def test_noise_free_chaining_is_exact_despite_per_window_scale():
    seq = make_sequence(30)
    gt = GroundTruthPredictor(seq, scale_range=(0.3, 3.0), seed=5)
    p, results = _run(seq, gt, num_view=6, stride=3)
    assert len(set(np.round(gt.scales, 6))) == len(gt.scales) > 5  # every window has its own scale
    s0 = gt.scales[0]
    first = invert_rigid(seq.truth[("cam", seq.frames[0].stamp_ns)][1])
    est = collect_published(results)
    assert len(est) == 30
    for (cam, stamp), T in est.items():
        expected = first @ seq.truth[(cam, stamp)][1]
        expected[:3, 3] *= s0  # global frame = window 0's frame and scale
        np.testing.assert_allclose(T, expected, atol=1e-6)  # float32 depth ratios
    for r in results:
        assert r.alignment.method in ("first", "shared")
        assert r.residual == pytest.approx(0.0, abs=1e-6) or r.window_index == 0
        # Depth comes back in global units: the true depth times window 0's scale.
        for f, d in zip(r.prediction.frames, r.prediction.depth):
            true = seq(f)[0]
            ok = np.isfinite(true)
            np.testing.assert_allclose(d[ok], s0 * true[ok], rtol=1e-5)
    assert results[-1].drift == pytest.approx(0.0, abs=1e-5)


def test_without_alignment_scale_jumps_break_the_trajectory():
    seq = make_sequence(30)
    _, results = _run(seq, GroundTruthPredictor(seq, scale_range=(0.3, 3.0), seed=5), num_view=6, stride=3,
                      align="none")
    est = collect_published(results)
    first = invert_rigid(seq.truth[("cam", seq.frames[0].stamp_ns)][1])
    errs = [np.linalg.norm(T[:3, 3] - (first @ seq.truth[k][1])[:3, 3]) for k, T in est.items()]
    assert max(errs) > 0.1  # each window sits in its own frame: the test above is not vacuous


def test_metric_predictor_se3_keeps_unit_scale():
    seq = make_sequence(20)
    gt = GroundTruthPredictor(seq, metric=True, depth_noise=0.01, pose_noise=0.002, seed=2)
    p, results = _run(seq, gt, num_view=4, stride=2)
    assert p.chainer.mode == "se3"
    assert all(r.scale == 1.0 for r in results)
    assert all(r.residual > 0 for r in results[1:])  # noisy poses leave a residual
    assert results[-1].drift == pytest.approx(np.sqrt(sum(r.residual ** 2 for r in results[1:])))


def test_known_poses_define_the_global_frame():
    seq = make_sequence(16, with_poses=True)
    _, results = _run(seq, GroundTruthPredictor(seq, seed=1), num_view=4, stride=2)
    est = collect_published(results)
    assert len(est) == 16
    for k, T in est.items():
        np.testing.assert_allclose(T, seq.truth[k][1], atol=1e-9)
    assert {r.alignment.method for r in results} == {"known_poses"}


def _plane_truth(frame):
    """Camera translating along optical x at 0.2 m/frame facing a wall 3 m ahead (depth 3 everywhere)."""
    K = np.array([[40.0, 0, 15.5], [0, 40.0, 11.5], [0, 0, 1]])
    T = np.eye(4)
    T[0, 3] = 0.2 * frame.stamp_ns / 1e8
    depth = (3.0 / pixel_rays(K, 24, 32)[..., 2]).astype(np.float32)
    return depth, T, CameraIntrinsics(K, 32, 24)


def test_no_overlap_windows_extrapolate_with_median_depth_scale():
    frames = [Frame(np.zeros((24, 32, 3), np.uint8), stamp_ns=int(i * 1e8)) for i in range(12)]
    gt = GroundTruthPredictor(_plane_truth, scale_range=(0.5, 2.0), seed=3)
    p = Pipeline(PipelineConfig(num_view=3, stride=3), gt)
    results = [r for f in frames for r in p.push(f)] + p.flush()
    assert [r.alignment.method for r in results] == ["first"] + ["extrapolated"] * 3
    assert all(np.isnan(r.residual) for r in results[1:])
    s0 = gt.scales[0]
    est = collect_published(results)
    for (_, stamp), T in est.items():
        # Constant velocity and constant scene depth: extrapolation is exact here.
        np.testing.assert_allclose(T[:3, 3], [s0 * 0.2 * stamp / 1e8, 0, 0], atol=1e-9)
    assert p.stats.processed == 12


def test_estimate_sim3_from_shared_frames_and_depth_scale():
    rng = np.random.default_rng(0)
    src = np.tile(np.eye(4), (3, 1, 1))
    src[:, :3, 3] = rng.normal(size=(3, 3))
    s, R = 1.8, np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    t = np.array([1.0, 2.0, 3.0])
    dst = apply_sim3_to_poses(s, R, t, src)
    s2, R2, t2, res, rot = estimate_sim3(dst, src, with_scale=True)
    assert s2 == pytest.approx(s) and res == pytest.approx(0, abs=1e-9) and rot == pytest.approx(0, abs=1e-5)
    np.testing.assert_allclose(R2, R, atol=1e-9)
    np.testing.assert_allclose(t2, t, atol=1e-9)
    # With one shared frame the scale must come from depth.
    s3, *_ = estimate_sim3(dst[:1], src[:1], with_scale=True, depth_scale=1.8)
    assert s3 == 1.8
    d = np.full((4, 4), 2.0, np.float32)
    d[0, 0] = np.nan
    assert depth_ratio_scale([d * 3], [d]) == (pytest.approx(3.0), 15)


def test_chainer_rejects_unknown_mode():
    with pytest.raises(ValueError, match="sim3"):
        WindowChainer("affine")


def _window(stamps, depth_value, scale=1.0):
    """A Sim(3) window of views 0.2 m apart along x, constant depth, in a frame ``scale`` times the truth."""
    K = CameraIntrinsics(np.array([[40.0, 0, 15.5], [0, 40.0, 11.5], [0, 0, 1]]), 32, 24)
    frames = [Frame(np.zeros((24, 32, 3), np.uint8), stamp_ns=int(s * 1e8)) for s in stamps]
    poses = np.tile(np.eye(4), (len(stamps), 1, 1))
    poses[:, 0, 3] = [0.2 * scale * (s - stamps[0]) for s in stamps]
    depth = [np.full((24, 32), depth_value, np.float32) for _ in stamps]
    return WindowPrediction(frames, depth, [np.ones((24, 32), np.float32)] * len(stamps), poses,
                            [K] * len(stamps))


def test_extrapolation_from_a_zero_median_depth_window_keeps_the_last_scale():
    # Regression (233a18a): a window whose median depth is 0 divided by zero.
    ch = WindowChainer("sim3")
    assert ch.chain(_window([0, 1], 3.0))[1].method == "first"
    _, al, _ = ch.chain(_window([2, 3], 6.0, scale=2.0))  # no shared frame: median-depth scale 3 / 6
    assert (al.method, al.scale) == ("extrapolated", pytest.approx(0.5))
    out, al, _ = ch.chain(_window([4, 5], 0.0))  # median 0: "None or 0: keep the scale"
    assert al.method == "extrapolated"
    assert al.scale == ch.last_scale == pytest.approx(0.5)
    assert np.isfinite(out.world_from_cam).all()
    # The zero window leaves the reference median (3, global units) alone: the next window of
    # median depth 2 scales by 3 / 2 again instead of being stuck at the last scale.
    _, al, _ = ch.chain(_window([6, 7], 2.0))
    assert (al.method, al.scale) == ("extrapolated", pytest.approx(1.5))


def test_thumb_medians_match_numpy_with_nan_inf_and_non_positive_values():
    from da3_ros.core.frames import thumb_medians

    rng = np.random.default_rng(3)
    thumbs = [rng.normal(1.0, 1.0, (48, 64)).astype(np.float32) for _ in range(6)]
    thumbs[1][:10] = np.nan
    thumbs[2][5] = np.inf
    thumbs[3][:] = np.nan  # nothing finite
    thumbs[4] = thumbs[4][:, :63]  # another shape: taken alone
    for positive in (False, True):
        got = thumb_medians(thumbs, positive)
        for t, m in zip(thumbs, got):
            keep = np.isfinite(t) & ((t > 0) if positive else True)
            assert (m is None) == (not keep.any())
            if m is not None:
                assert m == pytest.approx(float(np.median(t[keep].astype(np.float64))), rel=1e-12)
    assert thumb_medians([]) == []


def test_chaining_scales_owned_maps_in_place_and_copies_the_others():
    seq = make_sequence(12)
    frames = seq.frames[:4]
    poses = np.stack([np.eye(4)] * 4)
    poses[:, 0, 3] = np.arange(4) * 0.1
    K = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])
    intr = [CameraIntrinsics(K=K, width=64, height=48)] * 4

    def pred(shift, owns):
        return WindowPrediction(frames=frames[shift:] + seq.frames[4 + shift:4 + 2 * shift],
                                depth=[np.full((48, 64), 2.0, np.float32) for _ in range(4)],
                                confidence=[np.ones((48, 64), np.float32)] * 4, world_from_cam=poses.copy(),
                                intrinsics=intr, owns_maps=owns)

    for owns, in_place in ((True, True), (False, True), (True, False)):
        chainer = WindowChainer("sim3")
        chainer.chain(pred(0, owns), in_place=in_place)
        second = pred(2, owns)
        second.depth = [np.full((48, 64), 4.0, np.float32) for _ in range(4)]  # half the scale
        out, al, _ = chainer.chain(second, in_place=in_place)
        assert al.method == "shared" and al.scale == pytest.approx(0.5)
        assert all(np.allclose(d, 2.0) for d in out.depth)
        scaled_there = owns and in_place
        same = [a is b for a, b in zip(out.depth, second.depth)]
        assert all(same) if scaled_there else not any(same)
        assert np.allclose(second.depth[0], 2.0 if scaled_there else 4.0)  # otherwise left as it was
        assert not out.owns_maps  # scaled once: never again
