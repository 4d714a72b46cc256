"""da3_node end to end over DDS with the ground-truth stand-in: values checked against the scene.

The node runs as its own process (console script + params file), the synthetic camera
and the recorder live in this process; all on loopback with a domain of their own.
The stand-in gives every window its own random scale, so these tests also check that the
node publishes one consistent scale and one continuous trajectory.
"""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
from _node_harness import (
    NodeProcess,
    Recorder,
    RosHarness,
    SyntheticCamera,
    render_sequence,
    unique_domain_id,
    unique_namespace,
    wait_until,
)
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from da3_ros.core.geometry import ROS_BODY_FROM_OPTICAL
from da3_ros.ros import conversions as conv

pytestmark = pytest.mark.timeout(180)
FIXED = "da3_odom"
PER_CAMERA = {"depth": Image, "confidence": Image, "camera_info": CameraInfo, "depth_colored": Image,
              "pose": PoseStamped}


def _topics(cameras):
    topics = {f"/da3_node/{cam}/{name}": t for cam in cameras for name, t in PER_CAMERA.items()}
    topics.update({"/da3_node/points": PointCloud2, "/da3_node/odometry": Odometry, "/da3_node/path": Path,
                   "/diagnostics": DiagnosticArray})
    return topics


def _truth_params(cameras, **extra):
    params = {"model": "truth", "cameras": list(cameras), "input_qos": "reliable", "input_queue_depth": 50,
              "truth.scale_range": [0.5, 2.0], "truth.seed": 3, "diagnostics_period_s": 0.5,
              # values are checked here, not throughput: a loaded CI machine must not drop frames
              "queue_size": 64, "truth.wait_s": 5.0}
    for cam in cameras:
        params[f"camera.{cam}.image_topic"] = f"{cam}/image_raw"  # relative: inside the test's namespace
        params[f"camera.{cam}.camera_info_topic"] = f"{cam}/camera_info"
    params.update(extra)
    return params


def _run(tmp_path, cameras, params, steps, stop_signal=signal.SIGINT, png=()):
    """Start the node, play ``steps`` at 15 Hz, record every output; returns (recorder, exit code)."""
    domain, ns = unique_domain_id(), unique_namespace()
    with NodeProcess(tmp_path, params, domain, ns=ns) as node, RosHarness(domain) as ros:
        rec = Recorder(ros.node, _topics(cameras), ns=ns)
        cam = SyntheticCamera(ros.node, cameras, png=png, ns=ns)
        assert cam.wait_for_subscribers(60, topics=("image", "info", "depth", "pose")), node.log()
        time.sleep(0.5)  # let our subscriptions to the node's outputs match too
        cam.prime_camera_info(steps)
        cam.play(steps)
        n_views = sum(len(v) for v in steps)
        expected = n_views - 2 * len(cameras)  # the newest views may wait for a later window
        total = lambda: sum(rec.count(f"/da3_node/{c}/depth") for c in cameras)  # noqa: E731
        assert wait_until(lambda: total() >= expected, 60, alive=node.alive), \
            (total(), _last_diag(rec), node.log())
        inputs = lambda: sum(int(v) for k, v in _last_diag(rec).items()  # noqa: E731
                             if k.startswith("input_count."))
        wait_until(lambda: _last_diag(rec).get("views_published") == str(total()) and inputs() == n_views, 10)
        # ~/path goes out at most every path_period_s (1 s): its newest poses follow within that
        ref_poses = lambda: rec.count(f"/da3_node/{cameras[0]}/pose")  # noqa: E731
        wait_until(lambda: rec.count("/da3_node/path") > 0
                   and len(rec.get("/da3_node/path")[-1].poses) == ref_poses(), 5)
        code = node.stop(stop_signal)
        assert code == 0, f"exit code {code}\n{node.log()}"
        assert "Traceback" not in node.log(), node.log()
    return rec


def _last_diag(rec) -> dict[str, str]:
    msgs = rec.get("/diagnostics")
    return {kv.key: kv.value for kv in msgs[-1].status[0].values} if msgs else {}


def _by_stamp(msgs):
    out = {}
    for m in msgs:
        stamp = conv.stamp_to_ns(m.header.stamp)
        assert stamp not in out, f"stamp {stamp} published twice"
        out[stamp] = m
    return out


def _rel(a, b):
    return np.linalg.inv(a) @ b


def _rot_err(R1, R2):
    return float(np.arccos(np.clip((np.trace(R1.T @ R2) - 1) / 2, -1, 1)))


def _check_depth_views(rec, cam, truth, frame_id):
    """Per-view images of ``cam`` against truth; returns the global scale (published / true depth)."""
    depths = _by_stamp(rec.get(f"/da3_node/{cam}/depth"))
    assert set(depths) <= set(truth), "depth stamped with a stamp that was never an input"
    scales = []
    for stamp, msg in depths.items():
        f = truth[stamp]
        h, w = f.depth.shape
        assert (msg.encoding, msg.width, msg.height, msg.header.frame_id) == ("32FC1", w, h, frame_id)
        depth, _ = conv.image_to_numpy(msg)
        valid = np.isfinite(f.depth) & (f.depth > 0)
        assert valid.mean() > 0.5
        assert np.isnan(depth[~valid]).all(), "no-estimate pixels must be NaN (REP-118)"
        ratio = depth[valid] / f.depth[valid]
        scale = float(np.median(ratio))
        np.testing.assert_allclose(ratio, scale, rtol=1e-4)
        scales.append(scale)
    scales = np.array(scales)
    np.testing.assert_allclose(scales, scales[0], rtol=2e-3, err_msg="depth scale jumps between windows")
    for name, enc in (("confidence", "32FC1"), ("depth_colored", "rgb8")):
        msgs = _by_stamp(rec.get(f"/da3_node/{cam}/{name}"))
        assert set(msgs) == set(depths)
        for stamp, msg in msgs.items():
            h, w = truth[stamp].depth.shape
            assert (msg.encoding, msg.width, msg.height, msg.header.frame_id) == (enc, w, h, frame_id)
            arr, _ = conv.image_to_numpy(msg)
            valid = np.isfinite(truth[stamp].depth)
            if name == "confidence":  # the stand-in reports 2 where it knows the depth, 1 elsewhere
                assert np.all(arr[valid] == 2.0) and np.all(arr[~valid] == 1.0)
            else:  # a colormap of depth: varies with depth, black where there is none
                assert arr[valid].std(0).max() > 10 and not arr[~valid].any()
    infos = _by_stamp(rec.get(f"/da3_node/{cam}/camera_info"))
    assert set(infos) == set(depths)
    for stamp, msg in infos.items():
        intr = conv.camera_info_to_intrinsics(msg)
        h, w = truth[stamp].depth.shape
        assert (intr.width, intr.height, msg.header.frame_id) == (w, h, frame_id)
        np.testing.assert_allclose(intr.K, truth[stamp].K, rtol=1e-6)
    return float(scales[0]), sorted(depths)


def _poses(rec, cam):
    msgs = _by_stamp(rec.get(f"/da3_node/{cam}/pose"))
    assert all(m.header.frame_id == FIXED for m in msgs.values())
    return {s: conv.pose_to_matrix(m.pose) for s, m in msgs.items()}


def _check_trajectory(poses, truth, scale):
    stamps = sorted(poses)
    a = stamps[0]
    origin = truth[a].world_from_cam[:3, 3]
    extent = max(np.linalg.norm(truth[s].world_from_cam[:3, 3] - origin) for s in stamps)
    assert extent > 0.05, "the synthetic camera should move"
    for s in stamps[1:]:
        pub, true = _rel(poses[a], poses[s]), _rel(truth[a].world_from_cam, truth[s].world_from_cam)
        assert _rot_err(pub[:3, :3], true[:3, :3]) < 1e-3
        np.testing.assert_allclose(pub[:3, 3], scale * true[:3, 3], atol=2e-3 * scale * extent)


def _check_points(rec, truth, poses, scale):
    clouds = rec.get("/da3_node/points")
    assert clouds
    ref_stamp = min(poses)
    for msg in clouds:
        stamp = conv.stamp_to_ns(msg.header.stamp)
        assert msg.header.frame_id == FIXED and stamp in truth
        cloud = conv.cloud_to_numpy(msg)
        assert {"x", "y", "z", "rgb", "confidence"} <= set(cloud.dtype.names)
        pts = np.stack([cloud["x"], cloud["y"], cloud["z"]], -1).astype(np.float64)
        assert len(pts) > 100 and np.isfinite(pts).all()
        # fixed frame -> reference camera (scaled units) -> metres -> true world -> the stamp's camera
        ref_cam = (np.linalg.inv(poses[ref_stamp]) @ np.c_[pts, np.ones(len(pts))].T)[:3] / scale
        world = truth[ref_stamp].world_from_cam[:3, :3] @ ref_cam + truth[ref_stamp].world_from_cam[:3, 3:4]
        view = truth[stamp]
        cam_from_world = np.linalg.inv(view.world_from_cam)
        pc = cam_from_world[:3, :3] @ world + cam_from_world[:3, 3:4]
        uvw = view.K @ pc
        u, v = np.round(uvw[0] / uvw[2]).astype(int), np.round(uvw[1] / uvw[2]).astype(int)
        h, w = view.depth.shape
        inside = (pc[2] > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        assert inside.mean() > 0.5
        z_true = view.depth[v[inside], u[inside]]
        close = np.abs(pc[2][inside] - z_true) < 0.02 * z_true
        assert close.mean() > 0.6, f"only {close.mean():.0%} of the cloud lies on the scene"


def test_single_camera_outputs_match_truth(tmp_path):
    """One camera on compressed (png) transport; every output against the scene's truth."""
    steps = render_sequence(["camera"], 24, 64, 48, kind="room", seed=1)
    params = _truth_params(["camera"], num_view=4, stride=2)
    params.update({"camera.camera.image_topic": "camera/image_raw/compressed",
                   "camera.camera.transport": "compressed"})
    rec = _run(tmp_path, ["camera"], params, steps, png=("camera",))
    truth = {f.stamp_ns: f for views in steps for f in views}  # restamped by play()
    scale, stamps = _check_depth_views(rec, "camera", truth, "camera_optical_frame")
    assert len(stamps) >= 22
    poses = _poses(rec, "camera")
    assert sorted(poses) == stamps
    first = poses[stamps[0]]  # the fixed frame: first camera pose with REP-103 axes (x fwd, z up)
    np.testing.assert_allclose(first[:3, :3], ROS_BODY_FROM_OPTICAL, atol=1e-6)
    np.testing.assert_allclose(first[:3, 3], 0.0, atol=1e-6)
    _check_trajectory(poses, truth, scale)
    odom = _by_stamp(rec.get("/da3_node/odometry"))
    assert sorted(odom) == stamps
    for stamp, msg in odom.items():
        assert (msg.header.frame_id, msg.child_frame_id) == (FIXED, "camera_optical_frame")
        np.testing.assert_allclose(conv.pose_to_matrix(msg.pose.pose), poses[stamp], atol=1e-9)
    path = rec.get("/da3_node/path")[-1]
    assert path.header.frame_id == FIXED
    assert [conv.stamp_to_ns(p.header.stamp) for p in path.poses] == stamps
    for p in path.poses:
        np.testing.assert_allclose(conv.pose_to_matrix(p.pose), poses[conv.stamp_to_ns(p.header.stamp)],
                                   atol=1e-9)
    _check_points(rec, truth, poses, scale)
    diag = _last_diag(rec)
    assert diag["depth_units"] == "relative" and diag["model"].startswith("truth")
    assert int(diag["input_count.camera"]) == 24
    assert int(diag["views_published"]) == len(stamps)
    assert float(diag["latency_last_s"]) >= 0.0


def test_two_camera_rig_of_different_sizes(tmp_path):
    cams = ["cam0", "cam1"]
    steps = render_sequence(cams, 16, 64, 48, kind="corridor", seed=2, sizes={"cam1": (56, 42)})
    params = _truth_params(cams, mode="multicam", num_view=2, stride=1, slop_s=0.01)
    params["camera.cam1.frame_id"] = "cam1_custom_frame"  # override beats the header's frame id
    rec = _run(tmp_path, cams, params, steps, stop_signal=signal.SIGTERM)
    truth = {cam: {f.stamp_ns: f for views in steps for f in views if f.camera == cam} for cam in cams}
    s0, st0 = _check_depth_views(rec, "cam0", truth["cam0"], "cam0_optical_frame")
    s1, st1 = _check_depth_views(rec, "cam1", truth["cam1"], "cam1_custom_frame")
    assert s1 == pytest.approx(s0, rel=2e-3), "both cameras must share one scale"
    assert len(st0) >= 14 and len(st1) >= 14
    p0, p1 = _poses(rec, "cam0"), _poses(rec, "cam1")
    _check_trajectory(p0, truth["cam0"], s0)
    for t0, t1 in zip(st0, st1):  # the rig offset, as published, against truth
        assert abs(t1 - t0) < 10**6
        pub = _rel(p0[t0], p1[t1])
        true = _rel(truth["cam0"][t0].world_from_cam, truth["cam1"][t1].world_from_cam)
        assert _rot_err(pub[:3, :3], true[:3, :3]) < 1e-3
        np.testing.assert_allclose(pub[:3, 3], s0 * true[:3, 3], atol=1e-3 * s0)
    odom = rec.get("/da3_node/odometry")
    assert {conv.stamp_to_ns(m.header.stamp) for m in odom} == set(st0), "odometry follows the first camera"
    assert all(m.child_frame_id == "cam0_optical_frame" for m in odom)
