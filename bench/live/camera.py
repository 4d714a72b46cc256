"""Synthetic camera (or rig) for the live bench: pre-serialised images, drift-free schedule.

Each camera ``<name>`` publishes ``/<name>/image_raw`` (sensor_msgs/Image ``rgb8``, ``width`` x
``height``) and ``/<name>/camera_info`` (a pinhole CameraInfo, 60 degrees horizontal field of
view) with the same stamp. ``textures`` distinct smooth random images per camera are built and
serialised once; per frame only the header stamp is written into the CDR bytes, which are
published raw, so the cost of a frame is two copies of its bytes and the DDS write.

Schedule: set ``k`` is due at ``t0 + k / rate`` (monotonic, absolute deadlines, so no drift) and
carries the wall-clock stamp ``wall0 + k / rate``; every camera of a set has that stamp. The
wall time just before a set's first publish is its send time; ``send - stamp`` is the camera's
own lag (reported, so a camera that falls behind is visible instead of counted as node latency).

Run in the bench process (:class:`CameraThread`) or as a child process (``python -m
bench.live.camera ...``, :func:`main`), which writes its :class:`SendLog` as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CameraInfo, Image

from da3_ros.core.frames import CameraIntrinsics
from da3_ros.inference.allocator import keep_large_allocations
from da3_ros.ros import conversions as conv
from da3_ros.ros.inputs import input_qos
from da3_ros.tools.replay.ros_io import set_header_stamp


@dataclass
class SendLog:
    """What a camera sent: one entry per set (all cameras share the stamp)."""

    cameras: list[str]
    stamps_ns: list[int] = field(default_factory=list)
    send_s: list[float] = field(default_factory=list)  # wall time before the set's first publish
    rate_hz: float = 0.0
    duration_s: float = 0.0

    @property
    def frames(self) -> int:
        """Images sent (sets x cameras)."""
        return len(self.stamps_ns) * len(self.cameras)

    def lags_s(self) -> list[float]:
        """Send time minus stamp of each set (the camera's own lateness)."""
        return [t - s * 1e-9 for s, t in zip(self.stamps_ns, self.send_s)]


def texture(width: int, height: int, seed: int) -> np.ndarray:
    """(height, width, 3) uint8 smooth random texture (upscaled noise, never flat)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(height // 16, 2), max(width // 16, 2), 3), dtype=np.uint8)
    return np.ascontiguousarray(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC))


def serialised_frames(name: str, width: int, height: int, textures: int,
                      seed: int) -> tuple[list[bytes], bytes]:
    """CDR bytes of ``textures`` rgb8 images and of one CameraInfo for camera ``name`` (stamp 0)."""
    header = conv.make_header(0, f"{name}_optical_frame")
    images = [serialize_message(conv.numpy_to_image(texture(width, height, seed * 1000 + i), "rgb8", header))
              for i in range(textures)]
    f = width / (2 * math.tan(math.radians(30)))
    K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]])
    info = serialize_message(conv.intrinsics_to_camera_info(CameraIntrinsics(K, width, height), header))
    return images, info


class SyntheticCamera:
    """Publishers of one camera or a rig on ``node`` (see module docstring).

    Args:
        node: an rclpy node of the bench.
        names: camera names (topics ``/<name>/image_raw`` and ``/<name>/camera_info``).
        width, height: image size, pixels.
        qos: publisher QoS; must match the node's input QoS (``input_qos`` parameter).
        textures: distinct images per camera, cycled.
    """

    def __init__(self, node, names: list[str], width: int, height: int, qos, textures: int = 4) -> None:
        self.names = list(names)
        self._images, self._infos, self._pubs = [], [], []
        for i, name in enumerate(self.names):
            images, info = serialised_frames(name, width, height, textures, seed=i)
            self._images.append(images)
            self._infos.append(info)
            self._pubs.append((node.create_publisher(Image, f"/{name}/image_raw", qos),
                               node.create_publisher(CameraInfo, f"/{name}/camera_info", qos)))

    def subscribed(self) -> bool:
        """True when every image topic has a matched subscription (the node subscribes to its
        camera_info topics at the same moment; stand-ins may not subscribe to them at all)."""
        return all(image_pub.get_subscription_count() > 0 for image_pub, _ in self._pubs)

    def run(self, rate_hz: float, duration_s: float, stop: threading.Event | None = None,
            log: SendLog | None = None) -> SendLog:
        """Send sets at ``rate_hz`` for ``duration_s`` (or until ``stop``); returns (and fills) ``log``."""
        log = log or SendLog(cameras=self.names)
        log.rate_hz, log.duration_s = rate_hz, duration_s
        period = 1.0 / rate_hz
        n = int(math.floor(duration_s * rate_hz + 1e-9))
        t0, wall0 = time.monotonic(), time.time_ns()
        for k in range(n):
            delay = t0 + k * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if stop is not None and stop.is_set():
                break
            stamp = wall0 + round(k * period * 1e9)
            log.send_s.append(time.time())
            log.stamps_ns.append(stamp)
            for images, info, (img_pub, info_pub) in zip(self._images, self._infos, self._pubs):
                img_pub.publish(set_header_stamp(images[k % len(images)], stamp))
                info_pub.publish(set_header_stamp(info, stamp))
        return log


class CameraThread:
    """A :class:`SyntheticCamera` run on a thread of the bench process: ``start`` then ``join``."""

    def __init__(self, camera: SyntheticCamera) -> None:
        self.camera = camera
        self.log: SendLog | None = None
        self._thread: threading.Thread | None = None
        self.stop = threading.Event()

    def start(self, rate_hz: float, duration_s: float) -> None:
        """Begin sending now, in the background."""
        self.log = SendLog(cameras=self.camera.names)
        self.stop.clear()
        self._thread = threading.Thread(target=self.camera.run, name="bench_camera", daemon=True,
                                        args=(rate_hz, duration_s, self.stop, self.log))
        self._thread.start()

    def join(self) -> SendLog:
        """Wait for the end of sending; the log."""
        self._thread.join()
        return self.log


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the camera child process."""
    p = argparse.ArgumentParser(prog="python -m bench.live.camera", description=__doc__.split("\n\n")[0])
    p.add_argument("--names", required=True, help="comma-separated camera names")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--qos", default="sensor_data", choices=("sensor_data", "reliable"))
    p.add_argument("--qos-depth", type=int, default=5)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--start-at", type=float, default=0.0, help="wall time (s) to start sending")
    p.add_argument("--wait-subscribers", type=float, default=30.0, help="seconds to wait for the node")
    p.add_argument("--out", required=True, help="JSON file for the SendLog")
    return p


def main(argv: list[str] | None = None) -> int:
    """Camera child process: wait for subscribers and ``--start-at``, send, write the log."""
    a = build_parser().parse_args(argv)
    keep_large_allocations(respect_env=False)  # as the node does, whatever an A/B sets for it
    rclpy.init()
    node = rclpy.create_node("da3_bench_camera")
    try:
        cam = SyntheticCamera(node, a.names.split(","), a.width, a.height, input_qos(a.qos, a.qos_depth))
        deadline = time.monotonic() + a.wait_subscribers
        while not cam.subscribed() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(max(0.0, a.start_at - time.time()))
        log = cam.run(a.rate, a.duration)
        Path(a.out).write_text(json.dumps(asdict(log)))
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
