"""da3-synth bags and da3-eval scores: ideal with the truth stand-in, expected values with injected errors."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from da3_ros.dds_env import loopback_env
from da3_ros.evaluation import metrics as M
from da3_ros.sim.scene import default_intrinsics, make_scene, make_trajectory
from da3_ros.sim.standin import GroundTruthPredictor
from da3_ros.tools.bag.io import BagError, BagReader, BagWriter, find_cameras
from da3_ros.tools.eval import EvalOptions, evaluate
from da3_ros.tools.synth import synthesize

W, H, N = 96, 72, 20
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "room"
    synthesize(path, frames=N, seed=4, width=W, height=H)
    return path


def _opts(**kw):
    base = {"model": "truth", "write_bag": False, "plots": False, "progress": False}
    base.update(kw)
    return EvalOptions(**base)


def _messages(path):
    with BagReader(path) as r:
        return r.topics, [(t, ts, raw) for t, ts, raw in r.messages()]


# ---------------------------------------------------------------- synth
def test_synth_topics_and_content_match_the_scene(bag):
    from da3_ros.ros import conversions as conv

    with BagReader(bag) as r:
        assert r.topics == {f"/camera/{n}": (t, N) for n, t in (
            ("image_raw", "sensor_msgs/msg/Image"), ("camera_info", "sensor_msgs/msg/CameraInfo"),
            ("depth_gt", "sensor_msgs/msg/Image"), ("pose_gt", "geometry_msgs/msg/PoseStamped"))}
        msgs = {}
        for topic, _, raw in r.messages():
            m = r.decode(raw, r.msgtype(topic))
            msgs.setdefault(conv.stamp_to_ns(m.header.stamp), {})[topic] = m
    stamps = sorted(msgs)
    ref_stamps, _ = make_trajectory("room", N, 10.0, seed=4)
    assert stamps == list(ref_stamps)
    one = msgs[stamps[7]]
    T = conv.pose_to_matrix(one["/camera/pose_gt"].pose)
    assert one["/camera/pose_gt"].header.frame_id == "world"
    assert one["/camera/image_raw"].header.frame_id == "camera_optical_frame"
    intr = conv.camera_info_to_intrinsics(one["/camera/camera_info"])
    assert np.allclose(intr.K, default_intrinsics(W, H).K)
    rgb, depth = make_scene("room", 4).render(T, intr.K, W, H)  # re-render at the stored pose
    assert np.array_equal(conv.image_to_rgb(one["/camera/image_raw"]), rgb)
    gt = conv.image_to_depth_m(one["/camera/depth_gt"])
    assert one["/camera/depth_gt"].encoding == "32FC1"
    assert np.allclose(gt, depth, rtol=1e-6, equal_nan=False)


def test_synth_is_deterministic_and_both_formats_read_the_same(tmp_path, bag):
    synthesize(tmp_path / "again", frames=N, seed=4, width=W, height=H)
    synthesize(tmp_path / "lite", frames=N, seed=4, width=W, height=H, fmt="sqlite3")
    synthesize(tmp_path / "other", frames=N, seed=5, width=W, height=H)
    ref = _messages(bag)
    assert _messages(tmp_path / "again") == ref
    assert list((tmp_path / "lite").glob("*.db3"))
    assert _messages(tmp_path / "lite") == ref
    assert _messages(tmp_path / "other")[1] != ref[1]


def test_synth_rig_names_cameras_and_stamps_them_close(tmp_path):
    synthesize(tmp_path / "rig", frames=3, cameras=3, seed=1, width=48, height=32, scene="corridor")
    with BagReader(tmp_path / "rig") as r:
        cams = find_cameras(r)
        assert [c.name for c in cams] == ["cam0", "cam1", "cam2"]
        assert all(c.camera_info and c.depth_gt and c.pose_gt for c in cams)
        stamps = {}
        for topic, _, raw in r.messages([c.image for c in cams]):
            m = r.decode(raw, r.msgtype(topic))
            stamps.setdefault(topic, []).append(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec)
    s = np.array([stamps[c.image] for c in cams])
    assert np.ptp(s, axis=0).max() < 1_000_000  # within 1 ms across the rig
    assert np.diff(s, axis=1).min() > 50_000_000  # ~10 Hz per camera


# ---------------------------------------------------------------- eval with the truth stand-in
def test_eval_truth_is_ideal_and_writes_every_output(bag, tmp_path):
    m = evaluate(bag, tmp_path, _opts(write_bag=True, plots=True, samples=2, save_stride=1))
    assert m["abs_rel"] < 1e-5 and m["rmse"] < 1e-4 and m["delta1"] == 1.0
    assert m["ate"] < 1e-5 and m["rpe"] < 1e-5
    assert m["frames_read"] == N and m["frames_processed"] == N and m["frames_dropped"] == 0
    assert m["frames_evaluated"] == N and m["poses_evaluated"] == N
    assert m["trajectory_alignment"] == "sim3"
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("abs_rel", "rmse", "delta1", "ate", "rpe", "frames_processed", "frames_dropped", "model"):
        assert key in saved
    for name in ("summary.md", "per_frame.csv", "samples.png", "trajectory.png", "per_frame.png",
                 "points.ply", "trajectory_camera.tum", "truth_camera.tum"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert len((tmp_path / "trajectory_camera.tum").read_text().splitlines()) == N
    assert not (tmp_path / "PARTIAL").exists() and not saved["partial"]  # a finished run is not marked
    with BagReader(tmp_path / "predictions") as r:
        topics = r.topics
    for t in ("camera/depth", "camera/confidence", "camera/camera_info", "camera/pose", "points", "odometry",
              "path"):
        assert topics[f"/da3_node/{t}"][1] > 0, t
    assert topics["/da3_node/camera/depth"][1] == N  # every frame published exactly once
    header = (tmp_path / "points.ply").read_bytes()[:300]
    assert int(header.split(b"element vertex ")[1].split(b"\n")[0]) == m["points"] > 0


def test_eval_depth_noise_survives_median_alignment_at_the_expected_level(bag, tmp_path):
    sigma = 0.05
    m = evaluate(bag, tmp_path, _opts(depth_noise=sigma, scale_range=(0.3, 3.0), seed=1))
    expected = sigma * math.sqrt(2 / math.pi)  # E|n| for n ~ N(0, sigma): scale removed, noise left
    assert m["abs_rel"] == pytest.approx(expected, rel=0.1)
    assert m["delta1"] > 0.99


def test_eval_pose_noise_shows_in_ate(bag, tmp_path):
    m = evaluate(bag, tmp_path, _opts(pose_noise=0.01, seed=2))
    assert 1e-3 < m["ate"] < 0.2
    assert m["abs_rel"] < 1e-5  # depth untouched


def test_eval_metric_model_is_scored_without_any_scale_correction(bag, tmp_path):
    m = evaluate(bag, tmp_path, _opts(truth_metric=True))
    assert m["trajectory_alignment"] == "se3" and m["depth_alignment"] == "none"
    assert m["abs_rel"] < 1e-5 and m["ate"] < 1e-5

    class WrongScaleMetric:  # claims metres but is off by a constant factor 2
        is_metric, name = True, "wrong_scale_metric"

        def __init__(self, truth_fn):
            self.inner = GroundTruthPredictor(truth_fn, metric=True)

        def predict(self, frames):
            pred = self.inner.predict(frames)
            pred.depth = [d * 2.0 for d in pred.depth]
            pred.world_from_cam[:, :3, 3] *= 2.0
            return pred

    m = evaluate(bag, tmp_path, _opts(overwrite=True), predictor_factory=WrongScaleMetric)
    assert m["abs_rel"] == pytest.approx(1.0, abs=1e-4)  # |2g - g| / g
    assert m["delta1"] == 0.0
    assert m["ate"] > 0.05  # SE(3) cannot undo the scale


def test_constant_scale_is_removed_by_sim3_but_not_se3():
    stamps, poses = make_trajectory("room", 30, 10.0, seed=0)
    scaled = poses.copy()
    scaled[:, :3, 3] *= 3.0
    sim3 = M.trajectory_errors({"c": (stamps, scaled)}, {"c": (stamps, poses)}, correct_scale=True)
    se3 = M.trajectory_errors({"c": (stamps, scaled)}, {"c": (stamps, poses)}, correct_scale=False)
    assert sim3.ate < 1e-9 and sim3.scale == pytest.approx(1 / 3)
    assert se3.ate > 0.1 and se3.rpe > 0.01


def test_a_trajectory_that_stays_still_is_scored_not_refused():
    """A static camera (or an estimate the pose check held still): Umeyama is degenerate."""
    stamps, poses = make_trajectory("room", 10, 10.0, seed=0)
    still = np.repeat(poses[:1], 10, axis=0)
    e = M.trajectory_errors({"c": (stamps, still)}, {"c": (stamps, poses)}, correct_scale=True)
    centres = poses[:, :3, 3]
    spread = np.sqrt(np.mean(np.sum((centres - centres.mean(0)) ** 2, axis=1)))
    assert e.alignment == "centroid" and e.ate == pytest.approx(spread)  # how far the truth moved
    both = M.trajectory_errors({"c": (stamps, still)}, {"c": (stamps, still)}, correct_scale=True)
    assert both.ate == pytest.approx(0.0, abs=1e-12)


def test_depth_metrics_known_values():
    gt = np.full((4, 5), 2.0)
    gt[0, 0] = np.nan
    pred = gt * 1.1
    pred[1, 1] = 4.0  # ratio 2 -> fails delta1
    e = M.depth_errors(pred, gt)
    assert e.n_valid == 19
    assert e.abs_rel == pytest.approx((18 * 0.1 + 1.0) / 19)
    assert e.delta1 == pytest.approx(18 / 19)
    assert e.rmse == pytest.approx(math.sqrt((18 * 0.2**2 + 2.0**2) / 19))
    assert M.median_scale([pred], [gt]) == pytest.approx(1 / 1.1)  # median of gt / pred


def test_eval_rig_bag_in_multicam_mode(tmp_path):
    synthesize(tmp_path / "rig", frames=8, cameras=2, seed=3, width=64, height=48, scene="corridor")
    m = evaluate(tmp_path / "rig", tmp_path / "out", _opts())
    assert m["cameras"] == ["cam0", "cam1"]
    assert m["frames_processed"] == 16 and m["abs_rel"] < 1e-5 and m["ate"] < 1e-5


def test_eval_reads_sqlite3(tmp_path):
    synthesize(tmp_path / "lite", frames=6, seed=2, width=48, height=32, fmt="sqlite3")
    m = evaluate(tmp_path / "lite", tmp_path / "out", _opts())
    assert m["frames_processed"] == 6 and m["abs_rel"] < 1e-5


# ---------------------------------------------------------------- bad input: one line, non-zero exit
def _run(tool, *args, cwd):
    env = loopback_env(77, log_dir=str(cwd))
    return subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


def _bad_bags(tmp_path, bag):
    import shutil

    trunc = tmp_path / "trunc"
    shutil.copytree(bag, trunc)
    mcap = next(trunc.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"not a bag" * 50)
    no_images = tmp_path / "no_images"
    no_gt = tmp_path / "no_gt"
    with BagReader(bag) as r, BagWriter(no_images) as a, BagWriter(no_gt) as b:
        for topic, stamp, raw in r.messages():
            if topic == "/camera/pose_gt":
                a.write(topic, stamp, raw, r.msgtype(topic))
            if topic in ("/camera/image_raw", "/camera/camera_info"):
                b.write(topic, stamp, raw, r.msgtype(topic))
    return {"missing": (tmp_path / "nope", "not found"), "truncated": (trunc, "corrupt, truncated"),
            "garbage": (garbage, "cannot open bag"), "no_images": (no_images, "no image topics"),
            "no_truth": (no_gt, "needs <ns>/depth_gt")}


def test_eval_bad_bags_exit_nonzero_with_one_line(bag, tmp_path):
    for name, (path, words) in _bad_bags(tmp_path, bag).items():
        res = _run("da3-eval", path, "--model", "truth", "--out", tmp_path / f"o_{name}", cwd=tmp_path)
        lines = res.stderr.strip().splitlines()
        assert res.returncode != 0, name
        assert len(lines) == 1 and "Traceback" not in res.stderr, (name, res.stderr)
        assert lines[0].startswith("da3-eval: error:") and words in lines[0], (name, lines[0])
    res = _run("da3-eval", bag, "--model", "truth", "--out", tmp_path / "o", "--image-topics", "/nope/image",
               cwd=tmp_path)
    assert res.returncode != 0 and "topic /nope/image not in bag" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_bag_reader_errors_are_bag_errors(tmp_path):
    with pytest.raises(BagError, match="not found"):
        BagReader(tmp_path / "missing")
    with pytest.raises(BagError, match="exists"):
        BagWriter(tmp_path)  # an existing non-bag directory is never overwritten


def test_cli_synth_then_eval(tmp_path):
    res = _run("da3-synth", "--out", tmp_path / "b", "--frames", 6, "--width", 48, "--height", 32, "--quiet",
               cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = _run("da3-synth", "--out", tmp_path / "b", "--frames", 6, cwd=tmp_path)
    assert res.returncode != 0 and "exists" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = _run("da3-eval", tmp_path / "b", "--model", "truth", "--out", tmp_path / "e", "--quiet",
               "--no-plots", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "abs_rel" in res.stdout
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["frames_processed"] == 6


def test_bundled_bags_match_their_scenes():
    from da3_ros.ros import conversions as conv

    data = Path(__file__).resolve().parents[1] / "data"
    for name, scene, seed, cams, frames in (("room", "room", 0, ["camera"], 40),
                                            ("corridor_rig2", "corridor", 1, ["cam0", "cam1"], 20)):
        with BagReader(data / name) as r:
            found = find_cameras(r)
            assert [c.name for c in found] == cams
            assert all(r.topics[c.image][1] == frames for c in found)
            c = found[-1]
            msgs = {}
            for topic, _, raw in r.messages([c.image, c.camera_info, c.depth_gt, c.pose_gt]):
                msgs[topic] = r.decode(raw, r.msgtype(topic))
                if len(msgs) == 4:
                    break
        intr = conv.camera_info_to_intrinsics(msgs[c.camera_info])
        rgb, depth = make_scene(scene, seed).render(conv.pose_to_matrix(msgs[c.pose_gt].pose), intr.K,
                                                    intr.width, intr.height)
        assert np.array_equal(conv.image_to_rgb(msgs[c.image]), rgb)
        gt = conv.image_to_depth_m(msgs[c.depth_gt])
        assert np.nanmax(np.abs(gt - depth)) <= 0.0005 + 1e-6  # millimetre-rounded truth


def test_eval_runs_a_network_through_the_node_engine(bag, tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    m = evaluate(bag, tmp_path, _opts(model="da3-tiny", process_res=56, device="cpu", dtype="float32",
                                      max_frames=4, write_bag=True, save_stride=1))
    assert m["frames_read"] == 4 and m["frames_processed"] == 4 and m["windows"] >= 1
    assert "random weights" in m["model"] and any("RANDOM WEIGHTS" in n for n in m["notes"])
    assert all(math.isfinite(m[k]) for k in ("abs_rel", "rmse", "delta1", "ate"))
    with BagReader(tmp_path / "predictions") as r:
        assert r.topics["/da3_node/camera/depth"][1] == 4


def test_eval_over_two_cpu_processes_scores_what_one_device_does(bag, tmp_path, monkeypatch):
    """``da3-eval --devices cpu,cpu``: every window sharded over 2 processes (gloo), same scores."""
    pytest.importorskip("torch").set_num_threads(1)
    from da3_ros.core.sharded import ShardedNet

    views, real = [], ShardedNet.__call__
    monkeypatch.setattr(ShardedNet, "__call__",
                        lambda self, x, **kw: views.append(x.shape[1]) or real(self, x, **kw))
    opts = {"model": "default", "process_res": 56, "device": "cpu", "dtype": "float32", "max_frames": 6}
    one = evaluate(bag, tmp_path / "one", _opts(**opts))
    assert views == []
    two = evaluate(bag, tmp_path / "two", _opts(devices=["cpu", "cpu"], **opts))
    assert len(views) == two["windows"] == one["windows"] >= 2 and min(views) >= 2
    assert two["frames_processed"] == 6
    for key in ("abs_rel", "rmse", "delta1", "ate", "rpe"):
        assert two[key] == pytest.approx(one[key], rel=1e-3, abs=1e-5), key


def test_eval_gpus_and_devices_options():
    from da3_ros.tools.eval import build_parser, options_from_args

    def devices(*a):
        return options_from_args(build_parser().parse_args(["b", "--model", "x", "--out", "o", *a])).devices

    assert devices() == [] and devices("--gpus", "1") == []
    assert devices("--gpus", "3") == ["cuda:0", "cuda:1", "cuda:2"]
    assert devices("--devices", "cpu, cpu") == ["cpu", "cpu"]
    bad_args = (("--gpus", "2", "--devices", "cpu,cpu"), ("--devices", "gpu0,cpu"), ("--devices", "auto,cpu"))
    for bad in bad_args:
        with pytest.raises(ValueError):
            devices(*bad)
