"""Recorder of the bench: the receipt time of every node output, by header stamp, and /diagnostics.

Subscriptions are ``raw=True`` (serialised bytes; the stamp is read from the CDR header with
``da3-replay``'s ``header_stamp_ns``), so a message costs the recorder a copy and a
few Python operations, not a deserialisation. Topics (relative to ``/<node name>/``):
``<camera>/{depth,confidence,camera_info,depth_colored,pose}`` per camera, ``points``,
``odometry``, ``path``, plus ``/diagnostics``. Each is subscribed once a publisher exists, with
its reliability (best effort where the node publishes best effort). ``/diagnostics`` is
deserialised (once per period): the node's status key/values are kept with their receipt time.
"""

from __future__ import annotations

import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message

from da3_ros.tools.replay.ros_io import header_stamp_ns, message_class

VIEW_OUTPUTS = ("depth", "confidence", "camera_info", "depth_colored", "pose")
WINDOW_OUTPUTS = ("points", "odometry", "path")


def output_topics(node_name: str, cameras: list[str]) -> list[str]:
    """Every output topic of the node (absolute names), per camera first, then per window."""
    base = f"/{node_name.strip('/')}"
    return ([f"{base}/{c}/{k}" for c in cameras for k in VIEW_OUTPUTS]
            + [f"{base}/{k}" for k in WINDOW_OUTPUTS])


class Recorder:
    """Receipt times of the node's outputs (see module docstring).

    Args:
        node: the bench's rclpy node (spun by its executor).
        node_name: name of the measured node (its topics are ``/<node_name>/...``).
        cameras: camera names.
        depth: history depth of the subscriptions.
    """

    def __init__(self, node, node_name: str, cameras: list[str], depth: int = 100) -> None:
        self.node, self.node_name, self.cameras = node, node_name.strip("/"), list(cameras)
        self.topics = output_topics(self.node_name, self.cameras) + ["/diagnostics"]
        self.lock = threading.Lock()
        self.receipts: dict[str, list[tuple[int, float]]] = {t: [] for t in self.topics}
        self.diagnostics: list[tuple[float, dict[str, str]]] = []
        self._subs: dict[str, object] = {}
        self._qos = {r: QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST, reliability=r)
                     for r in (ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT)}

    def discover(self) -> list[str]:
        """Subscribe to topics that now have a publisher; returns the topics still without one."""
        missing = []
        types = dict(self.node.get_topic_names_and_types())
        for topic in self.topics:
            if topic in self._subs:
                continue
            infos = self.node.get_publishers_info_by_topic(topic) if topic in types else []
            if not infos:
                missing.append(topic)
                continue
            reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
            qos = self._qos[ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT]
            callback = self._on_diagnostics if topic == "/diagnostics" else (
                lambda raw, t=topic: self._on_output(t, raw))
            self._subs[topic] = self.node.create_subscription(message_class(types[topic][0]), topic,
                                                              callback, qos, raw=True)
        return missing

    def subscribed(self) -> list[str]:
        """Topics subscribed so far."""
        return list(self._subs)

    def _on_output(self, topic: str, raw: bytes) -> None:
        t = time.time()
        stamp = header_stamp_ns(raw)
        if stamp is not None:
            with self.lock:
                self.receipts[topic].append((stamp, t))

    def _on_diagnostics(self, raw: bytes) -> None:
        t = time.time()
        msg = deserialize_message(raw, DiagnosticArray)
        for status in msg.status:
            if status.name.split(":")[0].strip().strip("/").endswith(self.node_name):
                values = {kv.key: kv.value for kv in status.values}
                values["_message"] = status.message
                with self.lock:
                    self.diagnostics.append((t, values))

    # -- reading ---------------------------------------------------------------------------
    def latest_diagnostics(self) -> tuple[float, dict[str, str]]:
        """Receipt time and key/values of the node's newest status (``(0.0, {})`` before any)."""
        with self.lock:
            return self.diagnostics[-1] if self.diagnostics else (0.0, {})

    def diagnostics_before(self, t: float) -> dict[str, str]:
        """The node's last status received at or before wall time ``t`` (``{}`` if none)."""
        with self.lock:
            before = [d for ti, d in self.diagnostics if ti <= t]
        return before[-1] if before else {}

    def topic_receipts(self, topic: str) -> list[tuple[int, float]]:
        """Copy of ``(stamp_ns, receipt_s)`` of every message on ``topic``."""
        with self.lock:
            return list(self.receipts.get(topic, ()))

    def depth_topic(self, camera: str) -> str:
        """``/<node>/<camera>/depth``."""
        return f"/{self.node_name}/{camera}/depth"

    def published(self) -> set[tuple[str, int]]:
        """``(camera, stamp)`` of every view whose depth arrived."""
        with self.lock:
            return {(c, s) for c in self.cameras for s, _ in self.receipts[self.depth_topic(c)]}

    def received_count(self) -> int:
        """Messages received on every output topic (diagnostics excluded)."""
        with self.lock:
            return sum(len(v) for v in self.receipts.values())
