"""Images and clouds nobody subscribes to are not built: the publish thread's time is the worker's too."""

import numpy as np
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image

from da3_ros.core.frames import CameraIntrinsics, Frame
from da3_ros.ros.publishers import OutputPublishers


class _Publisher:
    def __init__(self, topic):
        self.topic, self.sent, self.listeners = topic, [], 0

    def publish(self, msg):
        self.sent.append(msg)

    def get_subscription_count(self):
        return self.listeners


class _Node:
    def __init__(self):
        self.pubs = {}

    def create_publisher(self, _msg_type, topic, _qos):
        self.pubs[topic] = _Publisher(topic)
        return self.pubs[topic]


def test_only_the_heavy_outputs_someone_listens_to_are_built():
    node = _Node()
    out = OutputPublishers(node, ["cam"], "odom")
    node.pubs["~/cam/depth"].listeners = 1  # a SLAM stack: depth, camera info and poses only
    frame = Frame(image=np.zeros((6, 8, 3), np.uint8), stamp_ns=1_000, camera="cam", frame_id="cam_optical")
    intr = CameraIntrinsics(K=np.array([[5.0, 0, 4], [0, 5.0, 3], [0, 0, 1]]), width=8, height=6)
    depth = np.full((6, 8), 2.0, np.float32)
    out._publish_view(frame, depth, np.ones((6, 8), np.float32), intr, np.eye(4), None)
    sent = {topic: len(p.sent) for topic, p in node.pubs.items()}
    assert sent["~/cam/depth"] == 1 and sent["~/cam/camera_info"] == 1 and sent["~/cam/pose"] == 1
    assert sent["~/cam/confidence"] == 0 and sent["~/cam/depth_colored"] == 0
    node.pubs["~/cam/depth_colored"].listeners = 2  # a viewer joins
    out._publish_view(frame, depth, np.ones((6, 8), np.float32), intr, np.eye(4), None)
    colored = node.pubs["~/cam/depth_colored"].sent  # images go out serialised (bytes)
    assert len(colored) == 1
    msg = deserialize_message(colored[0], Image)
    assert msg.encoding == "rgb8" and len(msg.data) == 6 * 8 * 3 and msg.header.frame_id == "cam_optical"


def test_a_window_that_carries_no_cloud_publishes_none():
    """The inference process frames a window's cloud only when it has views to publish; a result
    without that message and without point arrays (the node's view of the settings ran ahead of
    the inference process's) publishes no cloud instead of failing, and one with it sends it."""
    from types import SimpleNamespace

    node = _Node()
    out = OutputPublishers(node, ["cam"], "odom")
    out._publish_points(SimpleNamespace(messages={}, points_world=None, colors=None, points_conf=None), 1_000)
    out.pool.flush()
    assert node.pubs["~/points"].sent == []
    framed = np.frombuffer(b"\x00\x01\x00\x00cloud", np.uint8)
    out._publish_points(SimpleNamespace(messages={"cloud": framed}, points_world=None), 1_000)
    out.pool.flush()
    assert len(node.pubs["~/points"].sent) == 1
