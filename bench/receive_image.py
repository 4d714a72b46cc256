"""What receiving a 640x480 rgb8 image costs a Python subscriber (allocator; executor or thread).

    python bench/receive_image.py [--rate 250] [--seconds 6] [--domain-id N] [--arms malloc|intake]

A publisher process sends 640x480 rgb8 ``sensor_msgs/Image`` messages at ``--rate``; a subscriber
process (rclpy ``SingleThreadedExecutor``, one raw subscription as ``da3_node`` has, a callback
that only counts) receives them, once with glibc's allocator defaults (``DA3_MALLOC_TUNING=0``)
and once with :func:`da3_ros.inference.allocator.keep_large_allocations`, twice each in
alternation (``--arms malloc``, the default); or, tuned, with the subscription taken by the executor
against by a :class:`~da3_ros.ros.intake.SubscriptionThread` (``--arms intake``, what ``da3_node``'s
``input_thread`` does). Prints the subscriber process's CPU milliseconds per received image and the
images it received. DDS stays on loopback (``config/fastdds_localhost.xml``) in a domain of its own.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when run as a file

TOPIC = "/receive_image_bench"


def _qos():
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)


def _publish(rate: float, seconds: float) -> int:
    """The publisher process: rgb8 images at ``rate`` for ``seconds`` once a subscriber matched."""
    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image

    from da3_ros.core import wire
    from da3_ros.inference.allocator import keep_large_allocations
    from da3_ros.ros.serialized_publish import publish_serialized

    keep_large_allocations(respect_env=False)
    rclpy.init()
    node = rclpy.create_node("receive_image_bench_camera")
    pub = node.create_publisher(Image, TOPIC, _qos())
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    message = np.frombuffer(wire.image_message(image, "rgb8", 1, "camera").tobytes(), np.uint8)
    deadline = time.monotonic() + 15
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        publish_serialized(pub, message)
        n += 1
        time.sleep(max(0.0, start + n / rate - time.perf_counter()))
    rclpy.shutdown()
    return 0


def _subscribe(rate: float, seconds: float) -> int:
    """The subscriber process: prints ``<images> <cpu seconds>`` over the middle of the stream."""
    from da3_ros.inference.allocator import keep_large_allocations

    keep_large_allocations()  # honours DA3_MALLOC_TUNING, as da3_node does
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from da3_ros.ros.intake import SubscriptionThread

    rclpy.init()
    node = rclpy.create_node("receive_image_bench_subscriber")
    count = [0]
    intake = SubscriptionThread(node.context) if os.environ.get("DA3_BENCH_INTAKE") == "thread" else None
    sub = node.create_subscription(Image, TOPIC, lambda _raw: count.__setitem__(0, count[0] + 1), _qos(),
                                   raw=True, callback_group=intake.group if intake else None)
    if intake is not None:
        intake.add([sub])
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    camera = subprocess.Popen([sys.executable, __file__, "--publisher", "--rate", str(rate),
                               "--seconds", str(seconds + 4)])
    threading.Thread(target=executor.spin, daemon=True).start()
    time.sleep(2.0)  # matched, and the first images in
    n0, cpu0 = count[0], time.process_time()
    time.sleep(seconds)
    print(count[0] - n0, time.process_time() - cpu0, flush=True)
    camera.wait(30)
    os._exit(0)  # no rclpy teardown race with the spinning thread


def main() -> int:
    """Run the two arms in alternation and print one line each."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=250.0, help="images per second")
    p.add_argument("--seconds", type=float, default=6.0, help="measured seconds per run")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID")
    p.add_argument("--arms", choices=("malloc", "intake"), default="malloc",
                   help="malloc: glibc defaults against tuned; intake: executor against SubscriptionThread")
    p.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--subscriber", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    from da3_ros.tools.replay.cli import prepare_dds

    domain = prepare_dds(args.domain_id)
    if args.publisher:
        return _publish(args.rate, args.seconds)
    if args.subscriber:
        return _subscribe(args.rate, args.seconds)
    arms = (("DA3_MALLOC_TUNING", "0", "glibc defaults"),
            ("DA3_MALLOC_TUNING", "1", "tuned (keep_large_allocations)"))
    if args.arms == "intake":
        arms = (("DA3_BENCH_INTAKE", "executor", "executor (tuned)"),
                ("DA3_BENCH_INTAKE", "thread", "SubscriptionThread (tuned)"))
    for var, value, label in arms * 2:
        env = dict(os.environ, **{var: value}, ROS_DOMAIN_ID=str(domain))
        out = subprocess.run([sys.executable, __file__, "--subscriber", "--rate", str(args.rate),
                              "--seconds", str(args.seconds)], env=env, capture_output=True, text=True)
        try:
            images, cpu = out.stdout.split()[-2:]
        except ValueError:
            print(f"run failed: {out.stderr[-500:]}")
            continue
        print(f"{label}: {int(images)} images, {1e3 * float(cpu) / max(1, int(images)):.3f} ms CPU per image "
              f"(subscriber process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
