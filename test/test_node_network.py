"""da3_node with the real network (da3-tiny, random weights): the plumbing over DDS.

Values are meaningless with random weights; these tests check types, encodings, sizes,
stamps, frames and finiteness, and that the shipped default config starts and publishes
every listed topic.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from _node_harness import (
    REPO,
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
from nav_msgs.msg import Odometry
from nav_msgs.msg import Path as PathMsg
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from da3_ros.ros import conversions as conv

pytestmark = pytest.mark.timeout(300)
OUTPUTS = {
    "/da3_node/camera/depth": "sensor_msgs/msg/Image",
    "/da3_node/camera/confidence": "sensor_msgs/msg/Image",
    "/da3_node/camera/camera_info": "sensor_msgs/msg/CameraInfo",
    "/da3_node/camera/depth_colored": "sensor_msgs/msg/Image",
    "/da3_node/camera/pose": "geometry_msgs/msg/PoseStamped",
    "/da3_node/points": "sensor_msgs/msg/PointCloud2",
    "/da3_node/odometry": "nav_msgs/msg/Odometry",
    "/da3_node/path": "nav_msgs/msg/Path",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}
TYPES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo,
         "geometry_msgs/msg/PoseStamped": PoseStamped, "sensor_msgs/msg/PointCloud2": PointCloud2,
         "nav_msgs/msg/Odometry": Odometry, "nav_msgs/msg/Path": PathMsg,
         "diagnostic_msgs/msg/DiagnosticArray": DiagnosticArray}


def _stamps(msgs):
    return [conv.stamp_to_ns(m.header.stamp) for m in msgs]


@pytest.mark.parametrize("inference_process", ["off", "on"])
def test_tiny_network_plumbing(tmp_path: Path, inference_process: str):
    """Every output, through the node's worker thread (off) or its inference process (on)."""
    steps = render_sequence(["camera"], 10, 96, 72, kind="boxes", seed=4)
    params = {"model": "da3-tiny", "device": "cpu", "process_res": 112, "num_view": 3, "stride": 1,
              "inference_process": inference_process,
              "queue_size": 50, "input_qos": "reliable", "input_queue_depth": 50, "diagnostics_period_s": 0.5,
              "camera.camera.image_topic": "camera/image_raw",
              "camera.camera.camera_info_topic": "camera/camera_info"}
    domain, ns = unique_domain_id(), unique_namespace()
    with NodeProcess(tmp_path, params, domain, ns=ns) as node, RosHarness(domain) as ros:
        rec = Recorder(ros.node, {topic: TYPES[t] for topic, t in OUTPUTS.items()}, ns=ns)
        cam = SyntheticCamera(ros.node, ["camera"], ns=ns)
        assert cam.wait_for_subscribers(120), node.log()  # model build + warm-up come first
        time.sleep(0.5)
        cam.play(steps, with_truth=False)  # no CameraInfo ahead: the first image may beat its own
        assert wait_until(lambda: rec.count("/da3_node/camera/depth") >= 8, 120, alive=node.alive), node.log()
        seen = rec.count("/diagnostics")  # the last one checked below must come after the views
        wait_until(lambda: rec.count("/diagnostics") > seen and rec.count("/da3_node/path") >= 1, 10)
        code = node.stop()
        assert code == 0, node.log()
        assert "RANDOM WEIGHTS" in node.log()  # the inference process's log reaches the node's
        assert ("runs the model" in node.log()) == (inference_process == "on")
    inputs = {f.stamp_ns: f for views in steps for f in views}
    depth = rec.get("/da3_node/camera/depth")
    assert set(_stamps(depth)) <= set(inputs) and len(set(_stamps(depth))) == len(depth)
    for name, enc in (("depth", "32FC1"), ("confidence", "32FC1"), ("depth_colored", "rgb8")):
        for msg in rec.get(f"/da3_node/camera/{name}"):
            assert (msg.encoding, msg.width, msg.height) == (enc, 96, 72)
            assert msg.header.frame_id == "camera_optical_frame"
            arr, _ = conv.image_to_numpy(msg)
            if enc == "32FC1":
                assert np.isfinite(arr).mean() > 0.9 and np.all(np.nan_to_num(arr, nan=1.0) > 0)
    calibration = steps[0][0].K
    infos = rec.get("/da3_node/camera/camera_info")
    assert len(infos) == len(depth)
    for msg in infos:  # the given calibration at the source resolution, never the network's guess
        intr = conv.camera_info_to_intrinsics(msg)
        assert (intr.width, intr.height) == (96, 72)
        np.testing.assert_allclose(intr.K, calibration, rtol=1e-12)
    for msg in rec.get("/da3_node/camera/pose"):
        T = conv.pose_to_matrix(msg.pose)
        assert msg.header.frame_id == "da3_odom" and np.isfinite(T).all()
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6)
    clouds = rec.get("/da3_node/points")
    assert clouds and all(c.header.frame_id == "da3_odom" for c in clouds)
    assert set(_stamps(clouds)) <= set(inputs)
    pts = conv.cloud_to_numpy(clouds[-1])
    assert len(pts) > 0 and np.isfinite(pts["x"]).all()
    diag = {kv.key: kv.value for kv in rec.get("/diagnostics")[-1].status[0].values}
    assert "frames_without_intrinsics.camera" not in diag  # every image had its CameraInfo
    assert diag["latency_mean_s"] != "nan" and diag["latency_last_s"] != "nan"
    assert diag["model"] == "da3-tiny (random weights)"
    assert (diag["depth_units"], diag["device"], diag["attention_backend"]) == ("relative", "cpu", "sdpa")
    assert diag["accelerate"] == "off"  # the GPU fast path never runs on the CPU


def test_default_config_starts_and_every_topic_appears(tmp_path: Path):
    """`da3_node --ros-args --params-file config/da3.yaml`: the command the README gives."""
    steps = render_sequence(["camera"], 12, 64, 48, kind="room", seed=5)
    domain, ns = unique_domain_id(), unique_namespace()
    remaps = ["-r", f"/camera/image_raw:={ns}/camera/image_raw",
              "-r", f"/camera/camera_info:={ns}/camera/camera_info"]
    with NodeProcess(tmp_path, None, domain, params_file=REPO / "config" / "da3.yaml", ns=ns,
                     extra_args=remaps) as node, RosHarness(domain) as ros:
        rec = Recorder(ros.node, {"/da3_node/camera/depth": Image}, ns=ns)
        cam = SyntheticCamera(ros.node, ["camera"], ns=ns)
        assert cam.wait_for_subscribers(180), node.log()

        def graph():
            return dict(ros.node.get_topic_names_and_types())

        outputs = {(t if t == "/diagnostics" else ns + t): type_name for t, type_name in OUTPUTS.items()}
        assert wait_until(lambda: set(outputs) <= set(graph()), 30), (set(outputs) - set(graph()), node.log())
        for topic, type_name in outputs.items():
            assert graph()[topic] == [type_name]
        cam.prime_camera_info(steps)
        cam.play(steps, with_truth=False)
        assert wait_until(lambda: rec.count("/da3_node/camera/depth") >= 1, 180, alive=node.alive), node.log()
        assert node.stop() == 0, node.log()
    msg = rec.get("/da3_node/camera/depth")[0]
    assert (msg.encoding, msg.width, msg.height) == ("32FC1", 64, 48)


def test_a_static_camera_with_a_calibration_stays_still_through_the_node(tmp_path: Path):
    """The issue's check, as a new user with a bag would see it: the default model, a camera that
    never moves (one render plus fresh sensor noise), a calibrated CameraInfo. Published
    camera_info is the calibration; every published pose is the first one."""
    from dataclasses import replace

    steps = render_sequence(["camera"], 14, 128, 96, kind="room", seed=2)
    still, rng = steps[3][0], np.random.default_rng(0)
    calibration = still.K * [[1.1], [1.1], [1.0]]  # not the render's: the node must publish what it is given
    for views in steps:
        noisy = np.clip(still.rgb + rng.normal(0, 2.0, still.rgb.shape), 0, 255).astype(np.uint8)
        views[0] = replace(still, stamp_ns=views[0].stamp_ns, rgb=noisy, K=calibration)
    params = {"device": "cpu", "num_view": 4, "stride": 2, "queue_size": 50, "input_qos": "reliable",
              "input_queue_depth": 50, "diagnostics_period_s": 0.5,
              "camera.camera.image_topic": "camera/image_raw",
              "camera.camera.camera_info_topic": "camera/camera_info"}
    domain, ns = unique_domain_id(), unique_namespace()
    topics = {"/da3_node/camera/pose": PoseStamped, "/da3_node/camera/camera_info": CameraInfo,
              "/diagnostics": DiagnosticArray}
    with NodeProcess(tmp_path, params, domain, ns=ns) as node, RosHarness(domain) as ros:
        rec = Recorder(ros.node, topics, ns=ns)
        cam = SyntheticCamera(ros.node, ["camera"], ns=ns)
        assert cam.wait_for_subscribers(120), node.log()
        time.sleep(0.5)
        cam.play(steps, with_truth=False)
        assert wait_until(lambda: rec.count("/da3_node/camera/pose") >= 12, 120, alive=node.alive), node.log()

        def held():
            last = rec.get("/diagnostics")[-1:] or [None]
            return {kv.key: kv.value for kv in last[0].status[0].values} if last[0] else {}

        assert wait_until(lambda: int(held().get("pose_held.static", 0)) >= 5, 10), held()
        assert node.stop() == 0, node.log()
    poses = [conv.pose_to_matrix(m.pose) for m in rec.get("/da3_node/camera/pose")]
    for T in poses:
        np.testing.assert_array_equal(T, poses[0])
    for msg in rec.get("/da3_node/camera/camera_info"):
        np.testing.assert_allclose(conv.camera_info_to_intrinsics(msg).K, calibration, rtol=1e-12)
    diag = held()
    assert diag["pose_held.jump"] == "0" and diag["model"].endswith("da3-tiny-synth")
