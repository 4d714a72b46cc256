"""Pose sanity: a static camera stays still, a jump is flagged and not chained (core.pose_check)."""

import numpy as np
import pytest
import torch
from _core_synth import collect_published, make_sequence
from scipy.spatial.transform import Rotation

from da3_ros.core.config import PipelineConfig
from da3_ros.core.engine import DA3Engine
from da3_ros.core.frames import Frame
from da3_ros.core.geometry import invert_rigid, rotation_angle_deg
from da3_ros.core.pipeline import Pipeline
from da3_ros.core.pose_check import image_motion, motion_thumb
from da3_ros.model import build_model
from da3_ros.sim.scene import default_intrinsics, make_scene, make_trajectory
from da3_ros.sim.standin import GroundTruthPredictor


def _static_sequence(n, w=128, h=96, noise=2.0, seed=0):
    """``n`` frames of a camera that never moves: one render plus fresh sensor noise each frame."""
    scene = make_scene("room", seed)
    _, body = make_trajectory("room", 3, 10.0, seed)
    intr = default_intrinsics(w, h)
    rgb, depth = scene.render(body[1], intr.K, w, h)
    rng = np.random.default_rng(seed)
    frames, truth = [], {}
    for i in range(n):
        img = np.clip(rgb + rng.normal(0, noise, rgb.shape), 0, 255).astype(np.uint8)
        frames.append(Frame(img, (i + 1) * 100_000_000, "cam", intrinsics=intr))
        truth[("cam", frames[-1].stamp_ns)] = (depth, body[1], intr)
    return frames, lambda f: truth[(f.camera, f.stamp_ns)]


def _run(frames, predictor, **cfg):
    p = Pipeline(PipelineConfig(num_view=4, stride=2, **cfg), predictor)
    return p, [r for f in frames for r in p.push(f)] + p.flush()


def _spread(results):
    """(largest rotation, degrees, and centre distance) of any published pose from the first one."""
    poses = list(collect_published(results).values())
    turn = max(rotation_angle_deg(poses[0][:3, :3].T @ T[:3, :3]) for T in poses)
    move = max(np.linalg.norm(T[:3, 3] - poses[0][:3, 3]) for T in poses)
    return turn, move


def test_a_static_camera_stays_exactly_still_although_the_poses_are_noisy():
    frames, truth = _static_sequence(40)
    noisy = GroundTruthPredictor(truth, pose_noise=0.05, seed=3)  # 3 deg, 5 cm per view
    p, results = _run(frames, noisy)
    assert _spread(results) == (0.0, 0.0)  # the stated tolerance: identical poses
    assert p.stats.pose_held == {"static": len(results)} and len(results) == 19
    assert all(r.alignment.held == "static" and "unchanged" in r.alignment.held_reason for r in results)
    _, unchecked = _run(frames, GroundTruthPredictor(truth, pose_noise=0.05, seed=3), pose_check=False)
    turn, move = _spread(unchecked)
    assert turn > 5 and move > 0.1  # without the check the noise adds up: the test is not vacuous


def test_a_static_camera_stays_still_with_the_real_network():
    """The tiny network with random weights: its poses are noise, and chained they wander."""
    frames, _ = _static_sequence(16, w=64, h=48)
    torch.manual_seed(0)
    engine = DA3Engine(build_model("da3-tiny"), process_res=70, ref_view_strategy="first")
    _, results = _run(frames, engine)
    assert _spread(results) == (0.0, 0.0)
    _, unchecked = _run(frames, engine, pose_check=False)
    assert _spread(unchecked)[0] > 1.0


def test_a_moving_camera_is_never_held():
    seq = make_sequence(60)
    p, results = _run(seq.frames, GroundTruthPredictor(seq, depth_noise=0.02, pose_noise=0.01, seed=1))
    assert p.stats.pose_held == {} and all(r.alignment.held == "" for r in results)


class _Corrupting:
    """A noise-free predictor whose window ``bad`` gets its last two views rotated or moved."""

    def __init__(self, seq, bad, kind):
        self.inner, self.bad, self.kind, self.calls = GroundTruthPredictor(seq, seed=2), bad, kind, 0
        self.is_metric, self.name = False, "corrupting"

    def predict(self, frames):
        pred = self.inner.predict(frames)
        if self.calls == self.bad:
            for i in (-2, -1):
                if self.kind == "turn":
                    pred.world_from_cam[i, :3, :3] = Rotation.from_euler("y", 170, degrees=True).as_matrix() \
                        @ pred.world_from_cam[i, :3, :3]
                else:
                    pred.world_from_cam[i, :3, 3] += 5.0 * np.nanmedian(pred.depth[i])
        self.calls += 1
        return pred


@pytest.mark.parametrize("kind", ["turn", "move"])
def test_a_jump_is_flagged_and_not_chained(kind):
    seq = make_sequence(30)
    p, results = _run(seq.frames, _Corrupting(seq, 5, kind))
    held = [r for r in results if r.alignment.held]
    assert [r.window_index for r in held] == [5] and held[0].alignment.held == "jump"
    assert p.stats.pose_held == {"jump": 1} and p.stats.last_pose_jump == held[0].alignment.held_reason
    assert ("turned" if kind == "turn" else "median depths") in p.stats.last_pose_jump
    before = results[4]
    last_pose = before.world_from_cam[-1]
    for i in np.flatnonzero(held[0].is_new):  # the jumping views stay where the camera was
        np.testing.assert_array_equal(held[0].world_from_cam[i], last_pose)
    est = collect_published(results)
    first = invert_rigid(seq.truth[("cam", seq.frames[0].stamp_ns)][1])
    worst = max(rotation_angle_deg((first @ seq.truth[k][1])[:3, :3].T @ T[:3, :3]) for k, T in est.items())
    assert worst < 10  # the trajectory goes on; only the held frames' motion is missing
    _, unchecked = _run(seq.frames, _Corrupting(seq, 5, kind), pose_check=False)
    est = collect_published(unchecked)
    if kind == "turn":
        assert max(rotation_angle_deg((first @ seq.truth[k][1])[:3, :3].T @ T[:3, :3])
                   for k, T in est.items()) > 90  # unchecked, the flip enters the trajectory
    else:
        assert max(np.linalg.norm(T[:3, 3] - (first @ seq.truth[k][1])[:3, 3] * results[0].scale)
                   for k, T in est.items()) > 1.0


def test_image_motion_sees_sub_pixel_pans_and_ignores_sensor_noise():
    frames, _ = _static_sequence(2, w=320, h=240)
    a, b = motion_thumb(frames[0].image), motion_thumb(frames[1].image)
    shift, change = image_motion(a, b)
    assert shift < 0.2 and change < 0.02
    shifted = np.roll(frames[0].image, 3, axis=1)  # 3 px pan
    shift, change = image_motion(a, motion_thumb(shifted))
    assert 2.5 < shift < 3.5 and change > 0.1


def test_static_verdict_compares_every_new_frame_but_a_moving_camera_costs_one_comparison(monkeypatch):
    """Newest new frame first: a moving camera is known from one comparison; a window whose
    newest frame looks like the anchor but an older new frame moved is still not static."""
    from da3_ros.core import pose_check

    still, _ = _static_sequence(5, noise=0.0)
    shifted = np.roll(still[2].image, 9, axis=1)
    calls = []
    real = pose_check.image_motion
    monkeypatch.setattr(pose_check, "image_motion", lambda a, b: calls.append(1) or real(a, b))
    check = pose_check.PoseCheck(PipelineConfig())
    check.anchors["cam"] = motion_thumb(still[0].image)
    frames = [Frame(image=f.image, stamp_ns=f.stamp_ns, camera="cam") for f in still]
    is_new = np.array([False, True, True, True, True])
    newest, reason = check._static(frames, is_new)  # all still: every new frame compared
    assert reason is not None and len(calls) == 4 and set(newest) == {"cam"}
    calls.clear()
    frames[2] = Frame(image=shifted, stamp_ns=frames[2].stamp_ns, camera="cam")
    newest, reason = check._static(frames, is_new)  # an older new frame moved: not static
    assert reason is None and np.array_equal(newest["cam"].grey, motion_thumb(frames[4].image).grey)
    calls.clear()
    frames[4] = Frame(image=shifted, stamp_ns=frames[4].stamp_ns, camera="cam")
    assert check._static(frames, is_new)[1] is None and len(calls) == 1  # the newest moved: one look
