"""Images that arrive before a camera's first CameraInfo (the start-up race), in process.

CameraInputs holds them (bounded by ``camera_info_wait_s``) and releases them in order with
the intrinsics, or without (counted) when the wait runs out; the truth stand-in's lookup
waits for the camera's CameraInfo. Fake node objects, no DDS.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from da3_ros.core.frames import CameraIntrinsics, Frame
from da3_ros.ros import conversions as conv
from da3_ros.ros.inputs import CameraInputs
from da3_ros.ros.parameters import CameraSettings
from da3_ros.ros.truth_topics import TruthTopics

W, H = 8, 6
K = CameraIntrinsics(K=np.array([[6.0, 0, 4], [0, 6.0, 3], [0, 0, 1]]), width=W, height=H)


class _Logger:
    def __init__(self):
        self.lines = []

    def warning(self, text):
        self.lines.append(text)


class _FakeNode:
    def __init__(self):
        self.logger = _Logger()

    def create_subscription(self, _msg_type, topic, *_args, **_kwargs):
        return SimpleNamespace(topic_name=topic)  # a subscription, as far as CameraInputs looks

    def destroy_subscription(self, _sub):
        pass

    def get_logger(self):
        return self.logger


def _inputs(wait_s, info_topic="camera/camera_info", uses=True):
    node, sunk, no_intr, bad = _FakeNode(), [], [], []
    cam = CameraSettings("camera", "camera/image_raw", info_topic, "", "raw")
    inputs = CameraInputs(node, [cam], sunk.append, lambda c, r: bad.append(r), lambda c, s: None,
                          lambda c: None, qos=None, camera_info_wait_s=wait_s,
                          on_no_intrinsics=no_intr.append, uses_intrinsics=uses)
    return inputs, node, sunk, no_intr, bad


def _image(stamp_ns):
    rgb = np.full((H, W, 3), stamp_ns % 250, np.uint8)
    return conv.numpy_to_image(rgb, "rgb8", conv.make_header(stamp_ns, "camera_optical_frame"))


def _info(stamp_ns=1, intr=K):
    return conv.intrinsics_to_camera_info(intr, conv.make_header(stamp_ns, "camera_optical_frame"))


def test_images_before_the_first_camera_info_wait_for_it_and_keep_their_order():
    inputs, node, sunk, no_intr, _ = _inputs(wait_s=5.0)
    for s in (10, 20, 30):
        inputs._on_image("camera", _image(s))
    assert sunk == [] and inputs.held_count() == 3
    inputs._on_info("camera", _info())
    assert [f.stamp_ns for f in sunk] == [10, 20, 30]
    assert all(f.intrinsics is not None and np.allclose(f.intrinsics.K, K.K) for f in sunk)
    inputs._on_image("camera", _image(40))  # no more waiting
    assert [f.stamp_ns for f in sunk] == [10, 20, 30, 40] and sunk[-1].intrinsics is not None
    assert no_intr == [] and inputs.held_count() == 0


def test_without_camera_info_in_time_frames_go_on_without_intrinsics_counted():
    inputs, node, sunk, no_intr, _ = _inputs(wait_s=0.05)
    inputs._on_image("camera", _image(10))
    inputs._on_image("camera", _image(20))
    inputs.check_held()  # too early: still held
    assert sunk == []
    time.sleep(0.06)
    inputs.check_held()  # the node calls this with its diagnostics
    assert [f.stamp_ns for f in sunk] == [10, 20] and all(f.intrinsics is None for f in sunk)
    assert no_intr == ["camera", "camera"] and "no CameraInfo within" in node.logger.lines[0]
    inputs._on_image("camera", _image(30))  # the camera stopped waiting: straight through, counted
    assert len(sunk) == 3 and no_intr == ["camera"] * 3
    inputs._on_info("camera", _info())
    inputs._on_image("camera", _image(40))
    assert sunk[-1].intrinsics is not None and len(no_intr) == 3


def test_nothing_is_held_or_counted_when_intrinsics_are_not_used_or_there_is_no_info_topic():
    inputs, node, sunk, no_intr, _ = _inputs(wait_s=1.0, uses=False)
    inputs._on_image("camera", _image(10))
    assert len(sunk) == 1 and no_intr == []  # nothing uses them: nothing is missing
    inputs, node, sunk, no_intr, _ = _inputs(wait_s=0.0)
    inputs._on_image("camera", _image(10))
    assert len(sunk) == 1 and no_intr == ["camera"]  # used, never waited for: counted
    inputs, node, sunk, no_intr, _ = _inputs(wait_s=1.0, info_topic="")
    inputs._on_image("camera", _image(10))
    assert len(sunk) == 1 and no_intr == []  # intrinsics are estimated anyway


def test_an_image_just_ahead_of_its_camera_info_is_not_counted_without_intrinsics():
    """The reported start-up race: each image comes with a CameraInfo of the same stamp, the first
    image's callback runs first. With the default settings (intrinsics used) it waits for it."""
    inputs, _, sunk, no_intr, _ = _inputs(wait_s=1.0)
    for stamp in (10, 20, 30):
        inputs._on_image("camera", _image(stamp))
        inputs._on_info("camera", _info(stamp))
    assert [f.stamp_ns for f in sunk] == [10, 20, 30] and all(f.intrinsics is not None for f in sunk)
    assert no_intr == []


def test_held_frames_are_bounded_and_handed_over_on_destroy():
    from da3_ros.ros.inputs import MAX_HELD

    inputs, node, sunk, _, _ = _inputs(wait_s=60.0)
    for s in range(1, MAX_HELD + 1):
        inputs._on_image("camera", _image(s * 10))
    assert len(sunk) == MAX_HELD and inputs.held_count() == 0  # the cap releases them
    inputs, node, sunk, _, _ = _inputs(wait_s=60.0)
    inputs._on_image("camera", _image(10))
    inputs.destroy()  # deactivate: held frames reach the pipeline (which accounts for them)
    assert len(sunk) == 1 and inputs.held_count() == 0


def test_held_frames_get_no_intrinsics_of_another_size():
    inputs, _, sunk, no_intr, bad = _inputs(wait_s=5.0)
    inputs._on_image("camera", _image(10))
    inputs._on_info("camera", _info(intr=CameraIntrinsics(K=K.K * 2, width=2 * W, height=2 * H)))
    assert sunk[0].intrinsics is None and bad == ["camera_info_mismatch"] and no_intr == ["camera"]


def _truth_with(source, wait_s):
    truth = TruthTopics(_FakeNode(), ["camera"], "{camera}/depth_gt", "{camera}/pose_gt", None, wait_s=wait_s)
    truth._depth[("camera", 10)] = np.ones((H, W), np.float32)
    truth._pose[("camera", 10)] = np.eye(4)
    truth.intrinsics_source = source
    return truth


def test_truth_lookup_waits_for_the_cameras_first_camera_info():
    arrived = threading.Event()
    truth = _truth_with(lambda cam: K if arrived.is_set() else None, wait_s=5.0)
    threading.Timer(0.1, arrived.set).start()
    frame = Frame(image=np.zeros((H, W, 3), np.uint8), stamp_ns=10)
    depth, pose, intr = truth.lookup(frame)
    assert intr is K and depth.shape == (H, W)


def test_truth_lookup_gives_up_after_wait_s_without_camera_info():
    truth = _truth_with(lambda cam: None, wait_s=0.05)
    with pytest.raises(LookupError, match="needs CameraInfo"):
        truth.lookup(Frame(image=np.zeros((H, W, 3), np.uint8), stamp_ns=10))


def test_camera_info_whose_distortion_cannot_be_undone_is_ignored_and_counted():
    inputs, _, sunk, no_intr, bad = _inputs(wait_s=0.0)
    odd = CameraIntrinsics(K=K.K, width=W, height=H, D=np.array([0.1, 0.0, 0.0]),
                           distortion_model="plumb_bob")
    inputs._on_info("camera", _info(intr=odd))
    inputs._on_image("camera", _image(10))
    assert bad == ["camera_info_invalid"] and sunk[0].intrinsics is None and no_intr == ["camera"]
    barrel = CameraIntrinsics(K=K.K, width=W, height=H, D=np.array([-0.2, 0.05, 0, 0, 0]),
                              distortion_model="plumb_bob")
    inputs._on_info("camera", _info(intr=barrel))
    inputs._on_image("camera", _image(20))
    assert len(bad) == 1 and np.array_equal(sunk[1].intrinsics.D, barrel.D)  # kept for undistortion
