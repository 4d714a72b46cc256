"""Bad input on the node's topics is logged (throttled), counted in /diagnostics, and never kills it."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from _node_harness import (
    NodeProcess,
    Recorder,
    RosHarness,
    SyntheticCamera,
    render_sequence,
    restamp_to_now,
    unique_domain_id,
    unique_namespace,
    wait_until,
)
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import Path
from sensor_msgs.msg import Image

from da3_ros.core.frames import CameraIntrinsics
from da3_ros.ros import conversions as conv

pytestmark = pytest.mark.timeout(180)


def _diag(rec) -> tuple[int, str, dict[str, str]]:
    msgs = rec.get("/diagnostics")
    if not msgs:
        return -1, "", {}
    st = msgs[-1].status[0]
    return st.level, st.message, {kv.key: kv.value for kv in st.values}


def _bad_images(stamp_ns: int, last_good_ns: int) -> list[tuple[str, Image]]:
    """(expected reason, message) pairs."""
    header = conv.make_header(stamp_ns, "camera_optical_frame")
    depth_as_image = conv.numpy_to_image(np.ones((48, 64), np.float32), "32FC1", header)
    depth_again = conv.numpy_to_image(np.ones((24, 32), np.float32), "32FC1", header)  # same kind of problem
    mono16_depth = conv.numpy_to_image(np.ones((48, 64), np.uint16), "16UC1", header)
    unknown = conv.numpy_to_image(np.zeros((48, 64, 3), np.uint8), "rgb8", header)
    unknown.encoding = "yuv422_weird"
    truncated = conv.numpy_to_image(np.zeros((48, 64, 3), np.uint8), "rgb8", header)
    truncated.data = bytes(100)
    empty = Image(header=header, height=0, width=0, encoding="rgb8", step=0)
    back = conv.numpy_to_image(np.zeros((48, 64, 3), np.uint8), "rgb8",
                               conv.make_header(last_good_ns - 200_000_000, "camera_optical_frame"))
    zero = conv.numpy_to_image(np.zeros((48, 64, 3), np.uint8), "rgb8", conv.make_header(0, "x"))
    return [("decode_error", mono16_depth), ("decode_error", unknown), ("decode_error", depth_as_image),
            ("decode_error", depth_again), ("decode_error", truncated),
            ("empty_image", empty), ("stamp_backwards", back), ("zero_stamp", zero)]


def test_bad_input_is_counted_and_survived(tmp_path):
    steps = render_sequence(["camera"], 24, 64, 48, kind="room", seed=6)
    params = {"model": "truth", "input_qos": "reliable", "input_queue_depth": 50, "num_view": 3, "stride": 1,
              "camera.camera.image_topic": "camera/image_raw",
              "camera.camera.camera_info_topic": "camera/camera_info",
              "diagnostics_period_s": 0.3, "stale_input_s": 1.0, "log_throttle_s": 30.0,
              "time_jump_reset_s": 5.0}
    domain, ns = unique_domain_id(), unique_namespace()
    with NodeProcess(tmp_path, params, domain, ns=ns) as node, RosHarness(domain) as ros:
        rec = Recorder(ros.node, {"/diagnostics": DiagnosticArray, "/da3_node/camera/depth": Image,
                                  "/da3_node/path": Path}, ns=ns)
        cam = SyntheticCamera(ros.node, ["camera"], ns=ns)
        assert cam.wait_for_subscribers(60, topics=("image", "info", "depth", "pose")), node.log()
        time.sleep(0.5)
        cam.prime_camera_info(steps)
        restamp_to_now(steps)
        cam.play(steps[:8])
        assert wait_until(lambda: rec.count("/da3_node/camera/depth") >= 6, 30), node.log()

        last_good = steps[7][0].stamp_ns
        for _reason, msg in _bad_images(last_good + 1000, last_good):
            cam.pubs["camera"]["image"].publish(msg)
        small = conv.intrinsics_to_camera_info(CameraIntrinsics(steps[0][0].K / 2, 32, 24),
                                               conv.make_header(last_good, "camera_optical_frame"))
        cam.pubs["camera"]["info"].publish(small)  # the next image has another size: intrinsics ignored
        time.sleep(0.3)
        cam.publish(dataclasses.replace(steps[8][0], stamp_ns=steps[8][0].stamp_ns + 10**6), with_info=False)
        time.sleep(0.3)
        before = rec.count("/da3_node/camera/depth")
        cam.play([[dataclasses.replace(f, stamp_ns=f.stamp_ns + 10**6)] for v in steps[9:16] for f in v])
        # the stand-in cannot answer without intrinsics: the windows holding that one frame fail
        assert wait_until(lambda: rec.count("/da3_node/camera/depth") >= before + 4, 30, alive=node.alive), \
            node.log()

        # a bag loop: stamps jump back 60 s -> a fresh trajectory, not a stream of drops
        assert len(rec.get("/da3_node/path")[-1].poses) > 8
        looped = [[dataclasses.replace(f, stamp_ns=f.stamp_ns - 60 * 10**9)] for v in steps[16:] for f in v]
        cam.play(looped)
        looped_stamps = {f.stamp_ns for views in looped for f in views}
        assert wait_until(lambda: any(conv.stamp_to_ns(m.header.stamp) in looped_stamps
                                      for m in rec.get("/da3_node/path")), 30), node.log()
        new_path = [m for m in rec.get("/da3_node/path") if conv.stamp_to_ns(m.header.stamp) in looped_stamps]
        assert all(conv.stamp_to_ns(p.header.stamp) in looped_stamps for p in new_path[-1].poses), \
            "the path restarts after a time jump"

        # the camera stops: diagnostics turn WARN naming it
        assert wait_until(lambda: "camera stale" in _diag(rec)[1], 15), _diag(rec)
        level, message, values = _diag(rec)
        assert level == DiagnosticStatus.WARN
        assert node.alive()
        code = node.stop()
        log = node.log()
    assert code == 0, log
    assert int(values["drops.input_decode_error"]) == 5
    assert int(values["drops.input_empty_image"]) == 1
    assert int(values["drops.input_stamp_backwards"]) == 1
    assert int(values["drops.input_zero_stamp"]) == 1
    # the image still goes on (without intrinsics / into a fresh pipeline): events, never drops
    assert int(values["events.input_camera_info_mismatch"]) >= 1
    assert int(values["events.input_time_jump_reset"]) == 1
    assert not any(k.startswith(("drops.input_camera_info", "drops.input_time_jump")) for k in values)
    # throttled per kind of problem: each distinct one once, the second 32FC1 image not again
    assert log.count("[camera] decode_error") == 4, log
    assert log.count("'32FC1'") == 1 and "'16UC1'" in log and "yuv422_weird" in log, log
    assert "stamps jumped back" in log
    assert "Traceback" not in log
