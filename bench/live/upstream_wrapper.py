"""``--node upstream``: what a typical DA3 ROS 2 wrapper does with the upstream API (comparison row).

One rclpy node, single-threaded: each camera's image callback converts the message to numpy,
buffers ``num_view`` frames (stride = ``num_view``: windows do not overlap) and then, in the
callback, calls ``DepthAnything3.inference(images, process_res=...)`` (upstream's own
preprocessing, fp32 weights under its bf16/fp16 autocast, reference view ``saddle_balanced``,
outputs as numpy at the processed size), resizes each depth to the source size and publishes it
as ``~/<camera>/depth`` (32FC1, the source stamp), then an empty ``~/points`` (PointCloud2 header
with the window's newest stamp) so the bench scores windows the same way. One warm-up inference
on 640x480 black images runs before subscribing, as ``da3_node`` warms up. Frames that arrive
while inference runs wait in the subscription queue (``input_queue_depth``) or are lost there, as
in such wrappers. ``/diagnostics`` carries ``state``, ``input_count.<camera>``,
``frames_processed`` and ``drops_total`` (0: this wrapper never drops a frame it received).

Parameters come from the bench's params file: ``model`` (an upstream preset: ``da3-large``,
``da3-small``, ...; random weights built from upstream's config, no hub), ``device`` (auto: cuda
when available), ``process_res`` (0: 504), ``num_view``, ``cameras`` with
``camera.<name>.image_topic``, ``input_qos``, ``input_queue_depth``, ``diagnostics_period_s``.
The upstream import and its stand-ins: :mod:`bench.live.upstream_shims`.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import Image, PointCloud2

from bench.live.sink import status_message
from bench.live.upstream_shims import import_depth_anything_3
from da3_ros.ros.inputs import input_qos


class UpstreamWrapper(Node):
    """The wrapper node (see module docstring)."""

    def __init__(self) -> None:
        super().__init__("da3_upstream_wrapper", automatically_declare_parameters_from_overrides=True)
        p = {k: v.value for k, v in self.get_parameters_by_prefix("").items()}
        DepthAnything3, registry, self.stand_ins = import_depth_anything_3()
        model = p.get("model", "da3-large")
        if model not in registry:
            raise ValueError(f"model {model!r} is not an upstream preset: {', '.join(registry)}")
        device = p.get("device", "auto")
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.model = DepthAnything3(model_name=model).to(device).eval()  # random weights
        self.res, self.n = int(p.get("process_res", 0)) or 504, int(p.get("num_view", 1))
        self.model.inference([np.zeros((480, 640, 3), np.uint8)] * self.n, process_res=self.res)  # warm-up
        self.cams = list(p.get("cameras", ["camera"]))
        self.buffers = {c: [] for c in self.cams}
        self.counts, self.processed = dict.fromkeys(self.cams, 0), 0
        qos = input_qos(p.get("input_qos", "sensor_data"), int(p.get("input_queue_depth", 5)))
        self.depth_pubs = {c: self.create_publisher(Image, f"~/{c}/depth", 10) for c in self.cams}
        self.points = self.create_publisher(PointCloud2, "~/points", 10)
        self.diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        for c in self.cams:
            self.create_subscription(Image, p[f"camera.{c}.image_topic"], lambda m, c=c: self.on_image(c, m),
                                     qos)
        self.create_timer(float(p.get("diagnostics_period_s", 1.0)), self.publish_diagnostics)
        self.info = {"model": model, "device": device, "stand_ins": ",".join(self.stand_ins) or "none"}

    def on_image(self, cam: str, msg: Image) -> None:
        """Buffer; every ``num_view`` frames run upstream inference and publish each view's depth."""
        self.counts[cam] += 1
        buf = self.buffers[cam]
        buf.append(msg)
        if len(buf) < self.n:
            return
        frames, self.buffers[cam] = buf, []
        images = [np.frombuffer(m.data, np.uint8).reshape(m.height, m.width, 3) for m in frames]
        pred = self.model.inference(images, process_res=self.res)
        for m, d in zip(frames, pred.depth):
            d = cv2.resize(d.astype(np.float32), (m.width, m.height), interpolation=cv2.INTER_LINEAR)
            self.depth_pubs[cam].publish(Image(header=m.header, height=m.height, width=m.width,
                                               encoding="32FC1", step=4 * m.width, data=d.tobytes()))
        self.points.publish(PointCloud2(header=frames[-1].header))
        self.processed += len(frames)

    def publish_diagnostics(self) -> None:
        """The keys the bench reads."""
        self.diag.publish(status_message(self, {
            "state": "active", **self.info, **{f"input_count.{c}": n for c, n in self.counts.items()},
            "frames_processed": self.processed, "drops_total": 0, "queue_len": 0, **_gpu_memory()}))


def _gpu_memory() -> dict:
    if not torch.cuda.is_available():
        return {}
    return {"gpu_mem_allocated_mb": f"{torch.cuda.memory_allocated() / 2**20:.1f}",
            "gpu_mem_peak_mb": f"{torch.cuda.max_memory_allocated() / 2**20:.1f}"}


def main() -> int:
    """Spin the wrapper until SIGINT."""
    rclpy.init(args=sys.argv)
    node = None
    try:
        node = UpstreamWrapper()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
