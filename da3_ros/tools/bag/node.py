"""A stand-in for an rclpy node whose publishers write into a bag (``da3-eval``'s output bag).

:class:`BagNode` gives the node's own :class:`~da3_ros.ros.publishers.OutputPublishers` what it
needs, so every output message is built exactly as on the robot; each ``publish`` is serialised
with ``rclpy.serialization`` into the bag under the node's topic names (``/da3_node/...``),
stamped with the message's header stamp.
"""

from __future__ import annotations

from rclpy.serialization import serialize_message

from da3_ros.ros.conversions import cdr_stamp_ns, stamp_to_ns
from da3_ros.tools.bag.io import BagWriter

NODE_NAME = "da3_node"


def _type_name(msg_type) -> str:
    """``sensor_msgs/msg/Image`` for an rclpy message class."""
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"


class _BagPublisher:
    def __init__(self, writer: BagWriter, topic: str, msgtype: str):
        self.writer, self.topic, self.msgtype = writer, topic, msgtype
        writer.add_topic(topic, msgtype)

    def publish(self, msg) -> None:
        """Write ``msg`` (a message, or its CDR bytes as ``Publisher.publish`` also takes them)."""
        if isinstance(msg, bytes | bytearray | memoryview):
            self.writer.write(self.topic, cdr_stamp_ns(msg), bytes(msg), self.msgtype)
        else:
            self.writer.write(self.topic, stamp_to_ns(msg.header.stamp), serialize_message(msg), self.msgtype)

    def get_subscription_count(self) -> int:
        """The bag records every output it is given: one subscriber, always (``publishers.listened``)."""
        return 1


class BagNode:
    """The part of an rclpy node that ``OutputPublishers`` uses, writing to a bag.

    ``~/x`` topics resolve to ``/da3_node/x``, as on the live node.
    """

    def __init__(self, writer: BagWriter, name: str = NODE_NAME):
        self.writer, self.name = writer, name

    def create_publisher(self, msg_type, topic: str, qos) -> _BagPublisher:  # noqa: ARG002 - rclpy API
        """A publisher writing ``msg_type`` messages on the resolved ``topic``."""
        resolved = f"/{self.name}/{topic[2:]}" if topic.startswith("~/") else topic
        return _BagPublisher(self.writer, resolved, _type_name(msg_type))

    def destroy_publisher(self, pub) -> None:
        """Nothing to release."""


