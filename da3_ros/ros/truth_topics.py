"""TEST AID: the ground-truth stand-in predictor (``model: truth``) fed from topics.

For each camera, ``truth.depth_topic`` (32FC1 z-depth, metres) and ``truth.pose_topic``
(PoseStamped camera-to-world optical pose), both stamped like the image, feed
:class:`da3_ros.sim.standin.GroundTruthPredictor`. Never use it on a robot.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image

from da3_ros.core.frames import CameraIntrinsics, Frame
from da3_ros.inference.settings import PredictorInfo
from da3_ros.ros import conversions as conv
from da3_ros.sim.standin import GroundTruthPredictor, truth_capacity


class TruthTopics:
    """TEST AID: caches ground-truth depth and poses from topics, keyed by (camera, stamp).

    Subscribes, for each camera, ``truth.depth_topic`` (32FC1 z-depth, metres) and
    ``truth.pose_topic`` (PoseStamped, camera optical frame to world); ``{camera}``
    in the names is replaced by the camera name. The test publishes truth before
    (or with) each image; :meth:`lookup` waits up to ``wait_s`` for late truth, and for a
    frame without intrinsics, up to ``wait_s`` for the camera's first CameraInfo from
    ``intrinsics_source(camera)`` (set by the node). Each table keeps the newest
    ``capacity`` entries (see :func:`node_truth_capacity`).
    """

    def __init__(self, node, cameras: list[str], depth_topic: str, pose_topic: str, qos,
                 wait_s: float = 1.0, capacity: int = 512) -> None:
        self._node = node
        self.wait_s = wait_s
        self._capacity = capacity
        self._depth: OrderedDict = OrderedDict()
        self._pose: OrderedDict = OrderedDict()
        self._cond = threading.Condition()
        self.intrinsics_source: Callable[[str], CameraIntrinsics | None] | None = None
        self._subs = []
        for cam in cameras:
            self._subs.append(node.create_subscription(
                Image, depth_topic.format(camera=cam),
                lambda m, c=cam: self._store(self._depth, c, m, conv.image_to_numpy(m)[0].copy()), qos))
            self._subs.append(node.create_subscription(
                PoseStamped, pose_topic.format(camera=cam),
                lambda m, c=cam: self._store(self._pose, c, m, conv.pose_to_matrix(m.pose)), qos))

    def _store(self, table: OrderedDict, camera: str, msg, value) -> None:
        with self._cond:
            table[(camera, conv.stamp_to_ns(msg.header.stamp))] = value
            while len(table) > self._capacity:
                table.popitem(last=False)
            self._cond.notify_all()

    def lookup(self, frame: Frame):
        """``(depth (H, W) float32 metres, world_from_cam (4, 4), CameraIntrinsics)`` of a frame.

        Raises:
            LookupError: no truth (or no CameraInfo) for this frame within ``wait_s``.
        """
        key = (frame.camera, frame.stamp_ns)
        with self._cond:
            ok = self._cond.wait_for(lambda: key in self._depth and key in self._pose, self.wait_s)
            if not ok:
                raise LookupError(f"no ground truth for {key} within {self.wait_s} s")
            depth, pose = self._depth[key], self._pose[key]
        return depth, pose, self._intrinsics(frame)

    def _intrinsics(self, frame: Frame) -> CameraIntrinsics:
        """The frame's intrinsics, else the camera's CameraInfo (waiting up to ``wait_s`` for it)."""
        intr, deadline = frame.intrinsics, time.monotonic() + self.wait_s
        while intr is None and self.intrinsics_source is not None:
            intr = self.intrinsics_source(frame.camera)
            if intr is None and time.monotonic() >= deadline:
                break
            if intr is None:
                time.sleep(0.01)
        if intr is None:
            raise LookupError(f"truth stand-in needs CameraInfo for camera {frame.camera!r} "
                              f"(none within {self.wait_s} s)")
        if (intr.width, intr.height) != (frame.width, frame.height):
            raise LookupError(f"CameraInfo of {frame.camera!r} is {intr.width}x{intr.height}, "
                              f"image {frame.width}x{frame.height}")
        return intr

    def destroy(self) -> None:
        """Remove the truth subscriptions."""
        for sub in self._subs:
            self._node.destroy_subscription(sub)
        self._subs.clear()


def node_truth_capacity(settings) -> int:
    """:func:`~da3_ros.sim.standin.truth_capacity` for the node.

    Frames ahead of a window wait in the pipeline queue (``queue_size``) or the image
    subscription (``input_queue_depth``).
    """
    ahead = int(settings["queue_size"]) + int(settings["input_queue_depth"])
    return truth_capacity(settings["num_view"], settings["dilations"], ahead, len(settings.cameras))


def build_truth(node, settings, qos) -> tuple[object, PredictorInfo, TruthTopics]:
    """TEST AID: the ground-truth stand-in predictor fed by :class:`TruthTopics`."""
    cams = [c.name for c in settings.cameras]
    topics = TruthTopics(node, cams, settings["truth.depth_topic"], settings["truth.pose_topic"], qos,
                         wait_s=float(settings["truth.wait_s"]), capacity=node_truth_capacity(settings))
    predictor = GroundTruthPredictor(
        topics.lookup, scale_range=tuple(settings["truth.scale_range"]),
        depth_noise=float(settings["truth.depth_noise"]), pose_noise=float(settings["truth.pose_noise"]),
        seed=int(settings["truth.seed"]), metric=bool(settings["truth.metric"]))
    info = PredictorInfo(name="truth (TEST AID: ground-truth stand-in)",
                         is_metric=bool(settings["truth.metric"]))
    return predictor, info, topics
