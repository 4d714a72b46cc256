"""What rclpy costs to publish a depth image and a window's cloud: a message object or CDR bytes.

    python bench/publish_raw.py [--n 200] [--domain-id N]

DDS stays on loopback (``config/fastdds_localhost.xml``, set here unless a profile is already
set) in a domain of its own (``--domain-id``, else ``ROS_DOMAIN_ID``, else from the process id).

The node's publish thread sends 3 images a view (depth, confidence, colours), 24 a window of 8
views, and one cloud a window. Here a 640x480 32FC1 image and a cloud of 8 views of 640x480 at the
default ``cloud_pixel_step`` (x, y, z, rgb, confidence) go to one subscriber on loopback DDS,
either as the message ``numpy_to_image`` / ``points_to_cloud`` builds or as the CDR bytes
``numpy_to_image_cdr`` / ``points_to_cloud_cdr`` build (``Publisher.publish`` sends ``bytes`` as
they are; the node publishes bytes). The bytes are first checked to deserialise into the same
message. Prints milliseconds per message, wall and CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when run as a file


def main() -> int:
    """Check the bytes, then time both ways of publishing."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="images per way")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID")
    args = p.parse_args()
    from da3_ros.tools.replay.cli import prepare_dds

    prepare_dds(args.domain_id)  # before rclpy: loopback-only Fast DDS, our own domain
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
        topic = "/publish_raw_bench_" + msg_type.__name__.lower()
        pub = node.create_publisher(msg_type, topic, qos)
        node.create_subscription(msg_type, topic, lambda _m: None, qos, raw=True)
        deadline = time.time() + 5
        while pub.get_subscription_count() == 0 and time.time() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        assert deserialize_message(as_bytes(1_234_567_890_123), msg_type) == as_message(1_234_567_890_123)
        for label, build in (("message object", as_message), ("CDR bytes", as_bytes)):
            for _ in range(10):
                pub.publish(build(1))
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.n):
                pub.publish(build(1))
                rclpy.spin_once(node, timeout_sec=0)
            print(f"{what}, {label}: {1e3 * (time.perf_counter() - wall) / args.n:.3f} ms wall, "
                  f"{1e3 * (time.process_time() - cpu) / args.n:.3f} ms CPU per message")
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
