"""Serialised messages published from a buffer through rcl (GIL released), over real loopback DDS."""

from __future__ import annotations

import time

import numpy as np
import pytest
from _node_harness import isolated_node
from rclpy.lifecycle import LifecycleNode
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image

from da3_ros.core import wire
from da3_ros.ros.serialized_publish import gil_free_available, publish_serialized

pytestmark = pytest.mark.timeout(60)
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


@pytest.fixture
def lifecycle_node():
    with isolated_node("serialized_publish_test", LifecycleNode) as (node, executor):
        yield node, executor


def _receive(node, executor, topic: str, send, want: int, timeout_s: float = 10.0) -> list[bytes]:
    got: list[bytes] = []
    node.create_subscription(Image, topic, got.append, QOS, raw=True)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and len(got) < want:
        send()
        executor.spin_once(timeout_sec=0.05)
    return got


def test_a_message_in_a_buffer_arrives_byte_for_byte_and_an_inactive_publisher_sends_nothing(lifecycle_node):
    node, executor = lifecycle_node
    assert gil_free_available()  # rclpy's librcl is reachable: the GIL-free path is the one tested
    depth = np.random.default_rng(0).random((48, 64)).astype(np.float32)
    framed = wire.image_message(depth, "32FC1", 1_234_567_890_123, "cam_optical")
    # the message as the inference process leaves it: one uint8 buffer, here inside a larger one
    backing = np.zeros(framed.nbytes + 64, np.uint8)
    message = backing[16:16 + framed.nbytes]
    message[:] = np.frombuffer(framed.tobytes(), np.uint8)

    plain = node.create_publisher(Image, "/plain", QOS)
    got = _receive(node, executor, "/plain", lambda: publish_serialized(plain, message), want=1)
    assert got and got[0] == framed.tobytes()
    msg = deserialize_message(got[0], Image)
    assert (msg.height, msg.width, msg.encoding, msg.header.frame_id) == (48, 64, "32FC1", "cam_optical")
    np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), np.float32).reshape(48, 64), depth)

    managed = node.create_lifecycle_publisher(Image, "/managed", QOS)  # not activated yet
    assert not managed.is_activated
    assert _receive(node, executor, "/managed", lambda: publish_serialized(managed, framed.tobytes()),
                    want=1, timeout_s=1.5) == []
    managed.on_activate(None)
    got = _receive(node, executor, "/managed", lambda: publish_serialized(managed, framed.tobytes()), want=1)
    assert got and got[0] == framed.tobytes()
    with pytest.raises(ValueError, match="C-contiguous uint8"):
        publish_serialized(plain, np.zeros(8, np.float32))


def test_a_publisher_without_an_rcl_handle_gets_the_bytes():
    class BagLike:
        sent: list = []

        def publish(self, msg):
            self.sent.append(msg)

    pub = BagLike()
    publish_serialized(pub, np.frombuffer(b"\x00\x01\x00\x00abcd", np.uint8))
    assert pub.sent == [b"\x00\x01\x00\x00abcd"]
