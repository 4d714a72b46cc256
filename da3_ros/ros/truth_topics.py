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

from da3_ros.core.config import queue_capacity
from da3_ros.core.frames import CameraIntrinsics, Frame
from da3_ros.inference.settings import PredictorInfo
from da3_ros.ros import conversions as conv
from da3_ros.ros.node_parameters import declare_spec, overrides_of
from da3_ros.ros.overrides import closest_hint
from da3_ros.ros.parameters import EXTRA_SPECS, UNBOUNDED, ParamSpec, check_values, plain_value
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

    Frames ahead of a window wait in the pipeline queue (``queue_size``; 0 resolved as
    :func:`~da3_ros.core.config.queue_capacity`; every camera counted, a bound) or the image subscription
    (``input_queue_depth``).
    """
    queue = queue_capacity(int(settings["queue_size"]), int(settings["stride"]), len(settings.cameras))
    ahead = queue + int(settings["input_queue_depth"])
    return truth_capacity(settings["num_view"], settings["dilations"], ahead, len(settings.cameras))


#: The stand-in's parameters, declared only when ``model`` is ``truth`` (never on a robot).
TRUTH_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("truth.depth_topic", "{camera}/depth_gt", "TEST AID: ground-truth depth topic"),
    ParamSpec("truth.pose_topic", "{camera}/pose_gt", "TEST AID: ground-truth pose topic"),
    ParamSpec("truth.wait_s", 1.0, "TEST AID: wait for truth of a frame", lo=0.0, hi=60.0),
    ParamSpec("truth.scale_range", [1.0, 1.0], "TEST AID: random per-window scale range",
              lo=1e-6, hi=UNBOUNDED, array_of=float),
    ParamSpec("truth.depth_noise", 0.0, "TEST AID: relative depth noise", lo=0.0, hi=10.0),
    ParamSpec("truth.pose_noise", 0.0, "TEST AID: pose noise", lo=0.0, hi=10.0),
    ParamSpec("truth.seed", 0, "TEST AID: noise seed", lo=0, hi=2**31 - 1),
    ParamSpec("truth.metric", False, "TEST AID: report metric depth"),
)
EXTRA_SPECS.update({spec.name: spec for spec in TRUTH_SPECS})


def read_truth_parameters(node) -> dict:
    """Declare the ``truth.*`` parameters (params-file values apply) and return their values.

    Raises:
        ValueError: an invalid value (a descriptor range or ``truth.scale_range`` order).
    """
    names = [spec.name for spec in TRUTH_SPECS]
    for name in sorted(overrides_of(node)):
        if name.startswith("truth.") and name not in names:
            node.get_logger().warning(f"unknown parameter {name} (ignored)" + closest_hint(name, names))
    values = {}
    for spec in TRUTH_SPECS:
        if not node.has_parameter(spec.name):
            declare_spec(node, spec)
        values[spec.name] = plain_value(node.get_parameter(spec.name).value)
    reason = check_values(values)
    sr = values["truth.scale_range"]
    if reason is None and (len(sr) != 2 or sr[0] > sr[1]):
        reason = f"truth.scale_range must be [lo, hi] with lo <= hi; got {list(sr)}"
    if reason:
        raise ValueError(reason)
    return values


def build_truth(node, settings, qos) -> tuple[object, PredictorInfo, TruthTopics]:
    """TEST AID: the ground-truth stand-in predictor fed by :class:`TruthTopics`."""
    t = read_truth_parameters(node)
    cams = [c.name for c in settings.cameras]
    topics = TruthTopics(node, cams, t["truth.depth_topic"], t["truth.pose_topic"], qos,
                         wait_s=float(t["truth.wait_s"]), capacity=node_truth_capacity(settings))
    predictor = GroundTruthPredictor(
        topics.lookup, scale_range=tuple(t["truth.scale_range"]),
        depth_noise=float(t["truth.depth_noise"]), pose_noise=float(t["truth.pose_noise"]),
        seed=int(t["truth.seed"]), metric=bool(t["truth.metric"]))
    info = PredictorInfo(name="truth (TEST AID: ground-truth stand-in)", is_metric=bool(t["truth.metric"]))
    return predictor, info, topics
