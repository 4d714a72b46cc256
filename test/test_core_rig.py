"""A calibrated rig: relative poses come out as calibrated, in metres (core.rig)."""

import numpy as np
import pytest
from _core_synth import collect_published, make_sequence
from scipy.spatial.transform import Rotation

from da3_ros.core.config import PipelineConfig
from da3_ros.core.geometry import invert_rigid, rotation_angle_deg
from da3_ros.core.pipeline import Pipeline
from da3_ros.core.rig import RigCalibration, pose_from_vector, time_steps
from da3_ros.sim.scene import rig_offsets
from da3_ros.sim.standin import GroundTruthPredictor

CAMS = ("left", "right")


def _vector(T):
    return [*T[:3, 3], *Rotation.from_matrix(T[:3, :3]).as_quat()]


def _run(seq, rig_extrinsics, seed=4):
    gt = GroundTruthPredictor(seq, scale_range=(0.3, 3.0), depth_noise=0.01, pose_noise=0.004, seed=seed)
    cfg = PipelineConfig(mode="multicam", cameras=list(CAMS), num_view=4, stride=2,
                         rig_extrinsics=rig_extrinsics)
    p = Pipeline(cfg, gt)
    return p, [r for f in seq.frames for r in p.push(f)] + p.flush()


def test_rig_relative_poses_are_the_calibrated_ones_and_the_output_is_in_metres():
    seq = make_sequence(20, cameras=CAMS)
    offsets = rig_offsets(2)  # body_from_cam of the synthetic rig: its calibration
    calib = {c: _vector(offsets[k]) for k, c in enumerate(CAMS)}
    left_from_right = invert_rigid(offsets[0]) @ offsets[1]
    p, results = _run(seq, calib)
    assert p.chainer.mode == "mixed" and all(r.prediction.is_metric for r in results)
    est = collect_published(results)
    stamps = sorted({s for _, s in est})
    assert len(stamps) == 20
    for s in stamps:  # each time step: right seen from left exactly as calibrated, in metres
        left, right = est[("left", s)], est[("right", s)]
        np.testing.assert_allclose(invert_rigid(left) @ right, left_from_right, atol=1e-9)
    for r in results:  # depth in metres: the scale came from the 5.5 cm baseline
        ratios = [np.nanmedian(d / seq(f)[0]) for f, d in zip(r.prediction.frames, r.prediction.depth)]
        assert np.median(ratios) == pytest.approx(1.0, rel=0.15)
    # Without the calibration the network's noisy guesses stand, in model units.
    _, plain = _run(seq, {})
    est = collect_published(plain)
    errs = [invert_rigid(est[("left", s)] @ left_from_right) @ est[("right", s)] for s in stamps]
    assert max(rotation_angle_deg(E[:3, :3]) for E in errs) > 0.2
    assert not all(r.prediction.is_metric for r in plain)


def test_one_calibrated_camera_or_a_zero_baseline_gives_no_metres():
    one = RigCalibration({"left": [0, 0, 0, 0, 0, 0, 1], "right": []})
    assert not one and not one.is_metric(CAMS)
    same_place = RigCalibration({"left": [0, 0, 0, 0, 0, 0, 1], "right": [0, 0, 0, 0, 0.2, 0, 0.98]})
    assert same_place and not same_place.is_metric(CAMS)


def test_extrinsics_vectors_and_time_steps():
    T = pose_from_vector([1, 2, 3, 0, 0, np.sin(0.25), np.cos(0.25)])
    np.testing.assert_allclose(T[:3, 3], [1, 2, 3])
    assert rotation_angle_deg(T[:3, :3]) == pytest.approx(np.degrees(0.5))
    for bad in ([0, 0, 0, 0, 0, 0, 0], [1, 2, 3], [0, 0, 0, 0, 0, 0, np.nan]):
        with pytest.raises(ValueError):
            pose_from_vector(bad)
    assert time_steps(["l", "r", "l", "r", "l"]) == [[0, 1], [2, 3], [4]]
    assert time_steps(["c", "c", "c"]) == [[0], [1], [2]]
    with pytest.raises(ValueError, match="rig_extrinsics"):
        PipelineConfig(mode="multicam", cameras=list(CAMS), rig_extrinsics={"left": (1.0, 2.0)}).validate()
