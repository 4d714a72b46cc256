"""``--node sink``: a stand-in node that measures the bench itself (camera, DDS, recorder).

Subscribes to the cameras of its params file (``cameras``, ``camera.<name>.image_topic``,
``input_qos``, ``input_queue_depth``) with ``raw=True`` and, for every image it accepts,
publishes a ``std_msgs/Header`` with the image's stamp on ``~/<camera>/depth`` and on
``~/points`` (so the recorder scores it like the node). ``sink_capacity_hz`` (0: unlimited) makes
it accept at most that many images per second of camera time per camera (a token bucket over the
image stamps, burst 3, so what passes does not depend on how late the stand-in runs) and count
the rest as ``drops.capacity``: a stand-in with a known saturation rate for the search. Its
``/diagnostics`` carries the keys the bench reads (``state``, ``input_count.<camera>``,
``frames_processed``, ``drops_total``, ``drops.<reason>``, ``queue_len``).
"""

from __future__ import annotations

import sys

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from da3_ros.ros.inputs import input_qos
from da3_ros.tools.replay.ros_io import header_stamp_ns


def status_message(node: Node, values: dict) -> DiagnosticArray:
    """A DiagnosticArray with one OK status ``<node fqn>: pipeline`` holding ``values`` as strings."""
    status = DiagnosticStatus(level=DiagnosticStatus.OK, name=f"{node.get_fully_qualified_name()}: pipeline",
                              message="ok", values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = node.get_clock().now().to_msg()
    return msg


class TokenBucket:
    """Accepts at most ``rate_hz`` events per second on average, ``burst`` at once (0 Hz: all)."""

    def __init__(self, rate_hz: float, burst: float = 3.0) -> None:
        self.rate_hz, self.burst, self.tokens, self.last = rate_hz, burst, burst, None

    def accept(self, now_s: float) -> bool:
        """True when an event at time ``now_s`` (seconds, non-decreasing) fits."""
        if self.rate_hz <= 0:
            return True
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now_s - self.last) * self.rate_hz)
        self.last = now_s
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Sink(Node):
    """The stand-in node (see module docstring)."""

    def __init__(self) -> None:
        super().__init__("da3_bench_sink", automatically_declare_parameters_from_overrides=True)
        p = {k: v.value for k, v in self.get_parameters_by_prefix("").items()}
        qos = input_qos(p.get("input_qos", "sensor_data"), int(p.get("input_queue_depth", 5)))
        self.cams = list(p.get("cameras", ["camera"]))
        self.counts = dict.fromkeys(self.cams, 0)
        self.processed = self.dropped = 0
        self.buckets = {c: TokenBucket(float(p.get("sink_capacity_hz", 0.0))) for c in self.cams}
        self.depth = {c: self.create_publisher(Header, f"~/{c}/depth", 100) for c in self.cams}
        self.points = self.create_publisher(Header, "~/points", 100)
        self.diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        for c in self.cams:
            self.create_subscription(Image, p[f"camera.{c}.image_topic"],
                                     lambda raw, c=c: self.on_image(c, raw), qos, raw=True)
        self.create_timer(float(p.get("diagnostics_period_s", 1.0)), self.publish_diagnostics)

    def on_image(self, cam: str, raw: bytes) -> None:
        """Count, accept or drop, echo the stamp."""
        self.counts[cam] += 1
        stamp = header_stamp_ns(raw)
        if not self.buckets[cam].accept(stamp * 1e-9):  # camera time: the same frames pass however late
            self.dropped += 1
            return
        header = Header(frame_id=cam)
        header.stamp.sec, header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        self.depth[cam].publish(header)
        self.points.publish(header)
        self.processed += 1

    def publish_diagnostics(self) -> None:
        """The keys the bench reads."""
        values = {"state": "active", "model": "sink",
                  **{f"input_count.{c}": n for c, n in self.counts.items()},
                  "frames_processed": self.processed, "drops_total": self.dropped, "queue_len": 0}
        if self.dropped:
            values["drops.capacity"] = self.dropped
        self.diag.publish(status_message(self, values))


def main() -> int:
    """Spin the sink until SIGINT."""
    rclpy.init(args=sys.argv)
    node = Sink()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
