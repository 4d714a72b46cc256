"""What rclpy costs to publish one depth image: a message object against CDR bytes built here.

    python bench/publish_raw.py [--n 200] [--domain-id N]

DDS stays on loopback (``config/fastdds_localhost.xml``, set here unless a profile is already
set) in a domain of its own (``--domain-id``, else ``ROS_DOMAIN_ID``, else from the process id).

The node's publish thread sends 3 images a view (depth, confidence, colours), 24 a window of 8
views, and shares the GIL with the inference worker (bench/RESULTS.md, "second session"). Here a
640x480 32FC1 image goes to one subscriber on loopback DDS either as a ``sensor_msgs/Image``
built by ``numpy_to_image`` or as its serialised CDR bytes (``Publisher.publish`` takes
``bytes`` and sends them as they are). The bytes are first checked to deserialise into the same
message. Prints milliseconds per image, wall and CPU. Not wired into the node.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when run as a file


def _cdr_string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return struct.pack("<I", len(data)) + data


def _pad4(buf: bytes) -> bytes:
    return buf + b"\0" * (-len(buf) % 4)  # the 4-byte encapsulation header keeps offsets aligned


def image_cdr(arr: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> bytes:
    """Serialised ``sensor_msgs/Image`` (little-endian CDR) of a C-contiguous ``(H, W[, C])`` array."""
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    head = b"\x00\x01\x00\x00" + struct.pack("<iI", stamp_ns // 10**9, stamp_ns % 10**9)
    head = _pad4(head + _cdr_string(frame_id)) + struct.pack("<II", h, w)
    head = _pad4(head + _cdr_string(encoding) + b"\x00")  # is_bigendian: uint8, no alignment before it
    head += struct.pack("<II", arr.strides[0], arr.nbytes)
    return b"".join((head, memoryview(arr).cast("B")))


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
    from sensor_msgs.msg import Image

    from da3_ros.ros.conversions.images import numpy_to_image
    from da3_ros.ros.conversions.stamps import make_header

    rclpy.init()
    node = rclpy.create_node("publish_raw_bench")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    pub = node.create_publisher(Image, "/publish_raw_bench", qos)
    node.create_subscription(Image, "/publish_raw_bench", lambda _m: None, qos, raw=True)
    deadline = time.time() + 5
    while pub.get_subscription_count() == 0 and time.time() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    depth = np.random.default_rng(0).uniform(1, 5, (480, 640)).astype(np.float32)
    ref = numpy_to_image(depth, "32FC1", make_header(1_234_567_890_123, "cam_optical"))
    back = deserialize_message(image_cdr(depth, "32FC1", 1_234_567_890_123, "cam_optical"), Image)
    assert back.header == ref.header and (back.height, back.width, back.encoding, back.step) == (
        ref.height, ref.width, ref.encoding, ref.step) and bytes(back.data) == bytes(ref.data)
    ways = {"message object": lambda: pub.publish(numpy_to_image(depth, "32FC1", make_header(1, "cam"))),
            "CDR bytes": lambda: pub.publish(image_cdr(depth, "32FC1", 1, "cam"))}
    for label, publish in ways.items():
        for _ in range(10):
            publish()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.n):
            publish()
            rclpy.spin_once(node, timeout_sec=0)
        print(f"{label}: {1e3 * (time.perf_counter() - wall) / args.n:.3f} ms wall, "
              f"{1e3 * (time.process_time() - cpu) / args.n:.3f} ms CPU per 640x480 32FC1 image")
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
