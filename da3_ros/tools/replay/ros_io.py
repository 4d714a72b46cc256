"""The DDS side of ``da3-replay``: publish raw bag messages, record the node's outputs.

One rclpy context and node (``da3_replay``) spun on a background thread. Inputs are
published as raw CDR bytes (no decode); outputs under ``/<node name>/`` and ``/diagnostics``
are discovered by polling the graph, subscribed with ``raw=True`` and written to a bag
with their receive time as log time. The first receipt of each header stamp per
``.../depth`` topic is kept for latency and drop accounting, and the node's latest
diagnostics key/values.
"""

from __future__ import annotations

import importlib
import struct
import threading
import time

from da3_ros.tools.bag.io import IMAGE_TYPES, BagWriter


def message_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Name``."""
    pkg, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def header_stamp_ns(raw: bytes) -> int | None:
    """Header stamp (ns) of a serialised message whose first field is std_msgs/Header."""
    if len(raw) < 12:
        return None
    endian = "<" if raw[1] == 1 else ">"
    sec, nsec = struct.unpack_from(f"{endian}iI", raw, 4)
    return sec * 1_000_000_000 + nsec


def set_header_stamp(raw: bytes, stamp_ns: int) -> bytes:
    """A copy of ``raw`` (first field std_msgs/Header) with its header stamp replaced."""
    endian = "<" if raw[1] == 1 else ">"
    out = bytearray(raw)
    struct.pack_into(f"{endian}iI", out, 4, int(stamp_ns // 1_000_000_000), int(stamp_ns % 1_000_000_000))
    return bytes(out)


class ReplayRos:
    """Publishers for the played topics and a recorder of the node's outputs.

    Args:
        node_name: the node whose ``/<node_name>/...`` topics are recorded.
        writer: bag for the recorded outputs, or None.
        qos_depth: history depth of publishers (reliable) and subscriptions (reliable, or best effort
            where the node publishes best effort).
    """

    def __init__(self, node_name: str, writer: BagWriter | None, qos_depth: int = 100):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        self.node_name = node_name.strip("/")
        self.writer = writer
        self._reliable = ReliabilityPolicy.RELIABLE
        self._reliable_qos, self._best_effort_qos = (
            QoSProfile(depth=qos_depth, history=HistoryPolicy.KEEP_LAST, reliability=r)
            for r in (ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT))
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("da3_replay", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True, name="da3_replay_spin")
        self._thread.start()
        self.lock = threading.Lock()
        self.pubs: dict[str, object] = {}
        self.subs: dict[str, object] = {}
        self.first_receipt: dict[str, dict[int, float]] = {}  # topic -> stamp -> wall time (s)
        self.counts: dict[str, int] = {}
        self.diagnostics: dict[str, str] = {}
        self.diagnostics_time = 0.0
        self.diagnostics_count = 0

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - context shut down while spinning
            pass

    # -- playing ---------------------------------------------------------------------------
    def add_publisher(self, topic: str, msgtype: str) -> None:
        """A reliable publisher for ``topic`` (raw bytes of ``msgtype``)."""
        self.pubs[topic] = self.node.create_publisher(message_class(msgtype), topic, self._reliable_qos)

    def subscribers_ready(self, topics: list[str]) -> bool:
        """True when every topic's publisher has at least one matched subscription."""
        return all(self.pubs[t].get_subscription_count() > 0 for t in topics)

    def _graph_nodes(self) -> list[tuple[str, str]]:
        """(name, namespace) of the recorded node's instances in the ROS graph."""
        base = self.node_name.rsplit("/", 1)[-1]
        return [(n, ns) for n, ns in self.node.get_node_names_and_namespaces() if n == base]

    def node_seen(self) -> bool:
        """True when the recorded node is in the ROS graph."""
        return bool(self._graph_nodes())

    def node_image_subscriptions(self) -> list[str]:
        """Image topics (Image or CompressedImage) the recorded node subscribes to (empty if unseen)."""
        found = []
        for name, ns in self._graph_nodes():
            try:
                subs = self.node.get_subscriber_names_and_types_by_node(name, ns)
            except Exception:  # noqa: BLE001 - the node left the graph between the two calls
                continue
            found += [t for t, types in subs if any(x in IMAGE_TYPES for x in types)]
        return sorted(set(found))

    def publish(self, topic: str, raw: bytes) -> float:
        """Publish raw CDR bytes; returns the wall time (s) just before the call."""
        t = time.time()
        self.pubs[topic].publish(raw)
        return t

    # -- recording -------------------------------------------------------------------------
    def discover(self) -> None:
        """Subscribe to new ``/<node>/...`` topics and ``/diagnostics`` (QoS matched to the publisher)."""
        prefix = f"/{self.node_name}/"
        for topic, types in self.node.get_topic_names_and_types():
            if topic in self.subs or not types or not (topic.startswith(prefix) or topic == "/diagnostics"):
                continue
            infos = self.node.get_publishers_info_by_topic(topic)
            if not infos:
                continue
            reliable = all(i.qos_profile.reliability == self._reliable for i in infos)
            qos = self._reliable_qos if reliable else self._best_effort_qos
            msgtype = types[0]
            if self.writer is not None:
                with self.lock:
                    self.writer.add_topic(topic, msgtype)
            self.first_receipt[topic] = {}
            self.counts[topic] = 0
            self.subs[topic] = self.node.create_subscription(
                message_class(msgtype), topic, lambda raw, t=topic, m=msgtype: self._on_message(t, m, raw),
                qos, raw=True)

    def _on_message(self, topic: str, msgtype: str, raw: bytes) -> None:
        now = time.time()
        stamp = header_stamp_ns(raw)
        with self.lock:
            self.counts[topic] += 1
            if stamp is not None and topic.endswith("/depth"):  # latency / accounting topics only
                self.first_receipt[topic].setdefault(stamp, now)
            if self.writer is not None:
                self.writer.write(topic, int(now * 1e9), raw, msgtype)
        if topic == "/diagnostics":
            self._on_diagnostics(raw, now)

    def _on_diagnostics(self, raw: bytes, now: float) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.serialization import deserialize_message

        msg = deserialize_message(raw, DiagnosticArray)
        for status in msg.status:
            if status.name.split(":")[0].strip().strip("/").endswith(self.node_name):
                with self.lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}
                    self.diagnostics["_message"] = status.message
                    self.diagnostics_time = now
                    self.diagnostics_count += 1

    def snapshot(self) -> tuple[dict[str, dict[int, float]], dict[str, int], dict[str, str]]:
        """Copies of first receipts, counts and the latest diagnostics."""
        with self.lock:
            return ({t: dict(d) for t, d in self.first_receipt.items()}, dict(self.counts),
                    dict(self.diagnostics))

    def close(self) -> None:
        """Stop spinning, destroy the node, shut the context down (idempotent)."""
        if self.context is None:
            return
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=5.0)
        self.node.destroy_node()
        self.context.try_shutdown()
        self.context = None
