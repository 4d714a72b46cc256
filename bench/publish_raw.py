"""What rclpy costs to publish a depth image and a window's cloud: message, CDR bytes or a buffer.

    python bench/publish_raw.py [--n 200] [--domain-id N]

DDS stays on loopback (``config/fastdds_localhost.xml``, set here unless a profile is already
set) in a domain of its own (``--domain-id``, else ``ROS_DOMAIN_ID``, else from the process id).

The node's publish thread sends 3 images a view (depth, confidence, colours), 24 a window of 8
views, and one cloud a window. Here a 640x480 32FC1 image and a cloud of 8 views of 640x480 at the
default ``cloud_pixel_step`` (x, y, z, rgb, confidence) go to one subscriber on loopback DDS
(a process of its own), either as the message ``numpy_to_image`` / ``points_to_cloud`` builds
or as the CDR bytes ``numpy_to_image_cdr`` / ``points_to_cloud_cdr`` build
(``Publisher.publish`` sends ``bytes`` as they are), or as those bytes in a numpy buffer (as the
inference process leaves them in shared memory) published with
``serialized_publish.publish_serialized``: rcl's C call through ctypes, the GIL released. The
bytes are first checked to deserialise into the same message.

Prints the publishing thread's CPU milliseconds per message (messages 20 ms apart, so the
reliable writer never waits for the subscriber) and, for the image, how fast a second Python
thread that wants the GIL all the time ran, against its speed alone, while images went out back
to back: what publishing leaves to the node's other threads.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when run as a file


class Spinner:
    """A Python thread counting as fast as it can: how much of the GIL the measured thread leaves."""

    def __init__(self) -> None:
        self.count, self.stop = 0, False
        time.sleep(0.3)  # DDS settles after the last burst
        self.alone_rate = self._rate_alone()

    def _spin(self) -> None:
        while not self.stop:
            self.count += 1

    def _rate_alone(self) -> float:
        self.__enter__()
        time.sleep(1.0)
        self.__exit__()
        rate = self.count / 1.0
        self.count, self.stop = 0, False
        return rate

    def __enter__(self):
        self.count, self.stop = 0, False
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop = True
        self.thread.join()

    def share(self, seconds: float) -> float:
        """The spinner's rate over the last ``seconds`` against its rate alone."""
        return self.count / seconds / self.alone_rate


def _compare(what: str, pub, as_message, as_bytes, n: int) -> None:
    """Time the three ways of publishing one kind of message (one line each)."""
    from da3_ros.ros.serialized_publish import publish_serialized

    framed = np.frombuffer(as_bytes(1), np.uint8).copy()  # as the inference process leaves it
    ways = (("message object", lambda: pub.publish(as_message(1))),
            ("CDR bytes", lambda: pub.publish(as_bytes(1))),
            ("CDR in a buffer, rcl (GIL released)", lambda: publish_serialized(pub, framed)))
    for label, publish in ways:
        for _ in range(10):
            publish()
        start, cpu = time.perf_counter(), time.thread_time()
        for _ in range(n):
            publish()
            time.sleep(0.02)  # paced: a reliable writer would block on the subscriber
        cpu = time.thread_time() - cpu
        line = f"{what}, {label}: {1e3 * cpu / n:.3f} ms CPU per message"
        if "image" in what:  # back to back, with another thread that wants the GIL all the time
            with Spinner() as spinner:
                start = time.perf_counter()
                for _ in range(n):
                    publish()
                share = spinner.share(time.perf_counter() - start)
            line += f"; another Python thread ran at {share:.0%} of its speed alone meanwhile"
        print(line)


def main() -> int:
    """Check the bytes, then time both ways of publishing."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="images per way")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID")
    p.add_argument("--subscriber", action="store_true", help=argparse.SUPPRESS)  # the other process
    args = p.parse_args()
    from da3_ros.tools.replay.cli import prepare_dds

    domain = prepare_dds(args.domain_id)  # before rclpy: loopback-only Fast DDS, our own domain
    if args.subscriber:
        return _subscribe()
    subscriber = subprocess.Popen([sys.executable, __file__, "--subscriber", "--domain-id", str(domain)])
    sys.setswitchinterval(1e-3)  # as da3_node (ros.entry)
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image, PointCloud2

    from da3_ros.core.config import PipelineConfig
    from da3_ros.ros.conversions import (
        make_header,
        numpy_to_image,
        numpy_to_image_cdr,
        points_to_cloud,
        points_to_cloud_cdr,
    )

    rclpy.init()
    node = rclpy.create_node("publish_raw_bench")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    rng = np.random.default_rng(0)
    depth = rng.uniform(1, 5, (480, 640)).astype(np.float32)
    step = PipelineConfig().cloud_pixel_step
    n = 8 * (480 // step) * (640 // step)
    pts, rgb, conf = (rng.uniform(-5, 5, (n, 3)).astype(np.float32), rng.integers(0, 255, (n, 3), np.uint8),
                      rng.uniform(1, 3, n).astype(np.float32))
    cases = {  # what: (type, message builder, bytes builder)
        "640x480 32FC1 image": (Image, lambda s: numpy_to_image(depth, "32FC1", make_header(s, "cam")),
                                lambda s: numpy_to_image_cdr(depth, "32FC1", s, "cam")),
        f"cloud of {n} points": (
            PointCloud2, lambda s: points_to_cloud(pts, make_header(s, "odom"), rgb=rgb, confidence=conf),
            lambda s: points_to_cloud_cdr(pts, s, "odom", rgb=rgb, confidence=conf)),
    }
    for what, (msg_type, as_message, as_bytes) in cases.items():
        topic = TOPICS[msg_type.__name__]
        pub = node.create_publisher(msg_type, topic, qos)
        deadline = time.time() + 15
        while pub.get_subscription_count() == 0 and time.time() < deadline:
            time.sleep(0.05)
        assert deserialize_message(as_bytes(1_234_567_890_123), msg_type) == as_message(1_234_567_890_123)
        _compare(what, pub, as_message, as_bytes, args.n)
    node.destroy_node()
    rclpy.shutdown()
    subscriber.terminate()
    subscriber.wait(10)
    return 0


TOPICS = {"Image": "/publish_raw_bench_image", "PointCloud2": "/publish_raw_bench_pointcloud2"}


def _subscribe() -> int:
    """The subscriber process: takes both topics' messages as bytes until terminated."""
    import signal

    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, PointCloud2

    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
    rclpy.init()
    node = rclpy.create_node("publish_raw_bench_subscriber")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    for msg_type in (Image, PointCloud2):
        node.create_subscription(msg_type, TOPICS[msg_type.__name__], lambda _m: None, qos, raw=True)
    try:
        rclpy.spin(node)
    except Exception:  # noqa: BLE001 - shut down by the signal
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
