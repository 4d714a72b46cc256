"""Large images over DDS: the output resolution policy, the size warning, and images lost in transport.

The node runs as its own process on loopback DDS (da3-tiny with random weights on the CPU, or
the truth stand-in where only the inputs matter).
"""

from __future__ import annotations

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
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from da3_ros.core.frames import CameraIntrinsics
from da3_ros.ros import conversions as conv

pytestmark = pytest.mark.timeout(240)


def _last_diag(rec) -> dict[str, str]:
    msgs = rec.get("/diagnostics")
    return {kv.key: kv.value for kv in msgs[-1].status[0].values} if msgs else {}


# output_resolution as a params file gives it: a word, or a long side as a YAML integer
@pytest.mark.parametrize("policy, size", [("network", (112, 84)), (160, (160, 120))],
                         ids=["network", "long_side"])
def test_outputs_at_the_policys_resolution_with_camera_info_scaled_to_match(tmp_path, policy, size):
    steps = render_sequence(["camera"], 8, 320, 240, kind="boxes", seed=4)
    params = {"model": "da3-tiny", "device": "cpu", "process_res": 112, "num_view": 2, "stride": 1,
              "queue_size": 50, "input_qos": "reliable", "input_queue_depth": 50, "output_resolution": policy,
              "condition_on_intrinsics": True, "max_input_pixels": 320 * 240 - 1,
              "camera.camera.image_topic": "camera/image_raw",
              "camera.camera.camera_info_topic": "camera/camera_info"}
    domain, ns = unique_domain_id(), unique_namespace()
    with NodeProcess(tmp_path, params, domain, ns=ns) as node, RosHarness(domain) as ros:
        topics = {f"/da3_node/camera/{k}": Image for k in ("depth", "confidence", "depth_colored")}
        rec = Recorder(ros.node, {**topics, "/da3_node/camera/camera_info": CameraInfo,
                                  "/da3_node/points": PointCloud2}, ns=ns)
        cam = SyntheticCamera(ros.node, ["camera"], ns=ns)
        assert cam.wait_for_subscribers(120), node.log()
        time.sleep(0.5)
        cam.prime_camera_info(steps)
        cam.play(steps, with_truth=False)
        assert wait_until(lambda: rec.count("/da3_node/camera/camera_info") >= 6, 120, alive=node.alive), \
            node.log()
        assert node.stop() == 0, node.log()
        log = node.log()
    w, h = size
    for topic in topics:
        assert {(m.width, m.height) for m in rec.get(topic)} == {(w, h)}, topic
    known = CameraIntrinsics(steps[0][0].K, 320, 240).scaled(w, h)  # what the camera's CameraInfo says
    for msg in rec.get("/da3_node/camera/camera_info"):
        intr = conv.camera_info_to_intrinsics(msg)
        assert (intr.width, intr.height) == (w, h)
        np.testing.assert_allclose(intr.K, known.K, rtol=1e-9)
    assert rec.count("/da3_node/points") > 0
    assert log.count("exceed max_input_pixels") == 1, log  # once per camera and size
    assert "320x240 images (0.1 MP)" in log and "Traceback" not in log


def _lossy_profile(path) -> str:
    """The loopback profile with a shared-memory segment too small for two large images at once."""
    from da3_ros.dds_env import fastdds_profile_path

    text = fastdds_profile_path().read_text().replace("<segment_size>67108864</segment_size>",
                                                      "<segment_size>16777216</segment_size>")
    path.write_text(text)
    return str(path)


def test_best_effort_images_lost_in_transport_are_counted_and_large_ones_named(tmp_path):
    """4000x3000 frames (36 MB each) in a burst over the default best-effort input QoS.

    The shipped profile loses some of them here too (the issue's case); the node gets a smaller
    shared-memory segment so that the loss does not depend on how fast this machine is.
    """
    params = {"model": "truth", "truth.wait_s": 0.0, "num_view": 1, "stride": 1, "diagnostics_period_s": 0.5,
              "camera.camera.image_topic": "camera/image_raw"}
    domain, ns = unique_domain_id(), unique_namespace()
    profile = _lossy_profile(tmp_path / "lossy.xml")
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": profile}
    with NodeProcess(tmp_path, params, domain, ns=ns, extra_env=env) as node, RosHarness(domain) as ros:
        rec = Recorder(ros.node, {"/diagnostics": DiagnosticArray}, ns=ns)
        pub = ros.node.create_publisher(Image, f"{ns}/camera/image_raw",
                                        QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
        assert wait_until(lambda: pub.get_subscription_count() > 0, 60, alive=node.alive), node.log()
        time.sleep(0.5)
        image = np.random.default_rng(0).integers(0, 255, (3000, 4000, 3), dtype=np.uint8)
        sent = 12
        msg = conv.numpy_to_image(image, "rgb8", conv.make_header(time.time_ns(), "camera_optical_frame"))
        for _ in range(sent):
            msg.header = conv.make_header(time.time_ns(), "camera_optical_frame")
            pub.publish(msg)
        counted = lambda: int(_last_diag(rec).get("drops.input_lost", 0))  # noqa: E731
        assert wait_until(lambda: counted() > 0, 60, alive=node.alive), (_last_diag(rec), node.log())
        time.sleep(2.0)  # the rest of the burst settles
        assert node.stop() == 0, node.log()
        log = node.log()
    values = _last_diag(rec)
    received, lost = int(values["input_count.camera"]), int(values["drops.input_lost"])
    # lost ones were never received (images replaced in the reader's history are neither: uncounted)
    assert received < sent and 0 < lost <= sent - received, values
    assert "lost in transport" in log and "input_qos reliable" in log, log
    assert "4000x3000 images (12.0 MP) exceed max_input_pixels" in log, log
    assert "Traceback" not in log
