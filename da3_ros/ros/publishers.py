"""Output publishers and message building from a :class:`WindowResult`.

Topics (relative to the node, so ``~/``; all remappable):

- ``~/<camera>/depth``          sensor_msgs/Image 32FC1, REP-118: metres for a metric model,
  model units for a relative one (see /diagnostics ``depth_units``); NaN where no estimate.
- ``~/<camera>/confidence``     sensor_msgs/Image 32FC1, larger is more confident.
- ``~/<camera>/camera_info``    sensor_msgs/CameraInfo (given or estimated) at source resolution.
- ``~/<camera>/depth_colored``  sensor_msgs/Image rgb8, turbo colormap of depth, for viewing.
- ``~/<camera>/pose``           geometry_msgs/PoseStamped: the camera optical frame in the fixed frame.
- ``~/points``                  sensor_msgs/PointCloud2 (x, y, z, rgb, confidence) in the fixed frame.
- ``~/odometry``                nav_msgs/Odometry of the reference camera (the first camera).
- ``~/path``                    nav_msgs/Path of the reference camera (at most every ``path_period_s``).
- TF ``fixed_frame -> <optical frame>`` when ``tf2_ros`` imports.

Every per-view message carries the source image's stamp; ``~/points`` carries
the stamp of the window's newest view. Frames: per-view images use the view's
optical frame id; poses, path, odometry and points use ``fixed_frame``.

The fixed frame follows REP-103 (x forward, y left, z up), anchored at the
first published reference camera pose; see :func:`fixed_from_model_world`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from geometry_msgs.msg import PoseStamped, TransformStamped
from nav_msgs.msg import Odometry, Path
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from da3_ros.core.geometry import fixed_from_model_world
from da3_ros.core.visualize import colorize_depth
from da3_ros.inference.worker_process import window_cloud_message
from da3_ros.ros import conversions as conv
from da3_ros.ros.publish_pool import PublishPool
from da3_ros.ros.topics import CAMERA_OUTPUTS, HEAVY_OUTPUTS, NODE_OUTPUTS

try:  # tf2_ros is not on PyPI; a real ROS install has it.
    from tf2_ros import TransformBroadcaster  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the install
    TransformBroadcaster = None

def pose_stamped(fixed_from_cam: np.ndarray, stamp_ns: int, fixed_frame: str) -> PoseStamped:
    """PoseStamped of a camera optical frame (``fixed_from_cam`` (4, 4)) in ``fixed_frame``."""
    return PoseStamped(header=conv.make_header(stamp_ns, fixed_frame),
                       pose=conv.matrix_to_pose(fixed_from_cam))


@dataclass
class PublishToggles:
    """Which outputs are published (dynamic parameters ``publish.*``)."""

    depth: bool = True
    confidence: bool = True
    camera_info: bool = True
    depth_colored: bool = True
    pose: bool = True
    points: bool = True
    odometry: bool = True
    path: bool = True
    tf: bool = True


def listened(pub) -> bool:
    """Whether a subscription is matched to ``pub``: an image or cloud nobody reads is not built.

    The outputs' QoS is volatile, so a message published with no subscription matched reaches
    nobody, not even one that matches later: skipping it changes nothing a subscriber sees and
    saves the conversion and the copy into DDS (3.3 MB a 640x480 view for depth, confidence and
    colours), Python time the publish thread shares with the worker under one GIL.
    """
    return pub.get_subscription_count() > 0


def reliable_qos(depth: int = 10) -> QoSProfile:
    """Reliable, keep-last QoS used for outputs."""
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


def best_effort_qos(depth: int = 5) -> QoSProfile:
    """Best-effort, keep-last QoS (optional for the heavy viewing outputs)."""
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT,
                      history=HistoryPolicy.KEEP_LAST)


class OutputPublishers:
    """Creates the node's output publishers and publishes each :class:`WindowResult`.

    Args:
        node: the (lifecycle) node; publishers are created with
            ``create_lifecycle_publisher`` when available, so they only publish while active.
        cameras: camera names (topic tokens); the first is the reference camera.
        fixed_frame: frame id of poses, path, odometry and points.
        heavy_best_effort: best-effort QoS for ~/points and depth_colored.
        on_published: called with each published view's stamp (ns), for latency statistics (once
            its depth image is out).
        publish_threads: threads sending the images and the cloud
            (:class:`~da3_ros.ros.publish_pool.PublishPool`); 0: sent by the caller of
            :meth:`publish_result` before it returns.
        on_error: called with the exception of a message that failed on a publishing thread.
    """

    def __init__(self, node, cameras: list[str], fixed_frame: str, heavy_best_effort: bool = False,
                 on_published: Callable[[int], None] | None = None, publish_threads: int = 0,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self._node = node
        self.cameras = list(cameras)
        self.fixed_frame = fixed_frame
        self.toggles = PublishToggles()
        self.publish_all_views = False
        self.colored_range = (0.0, 0.0)
        self._on_published = on_published or (lambda _ns: None)
        create = getattr(node, "create_lifecycle_publisher", node.create_publisher)
        rel = reliable_qos()
        heavy = best_effort_qos() if heavy_best_effort else reliable_qos(5)
        self._pubs: list = []

        def make(msg_type, topic, qos):
            pub = create(msg_type, topic, qos)
            self._pubs.append(pub)
            return pub

        self.per_camera = {cam: {key: make(msg_type, f"~/{cam}/{key}", heavy if key in HEAVY_OUTPUTS else rel)
                                 for key, (msg_type, _) in CAMERA_OUTPUTS.items()}
                           for cam in self.cameras}
        self.points, self.odometry, self.path = (
            make(msg_type, f"~/{key}", heavy if key in HEAVY_OUTPUTS else rel)
            for key, (msg_type, _) in NODE_OUTPUTS.items())
        self._path_poses: deque[PoseStamped] = deque(maxlen=10000)
        self.path_period_s = 0.0
        self._path_lock = threading.Lock()  # worker thread appends, the diagnostics timer flushes
        self._path_dirty = False
        self._path_sent = -math.inf  # monotonic time of the last ~/path message
        self._last_odom: tuple[int, np.ndarray] | None = None
        self._tf = TransformBroadcaster(node) if TransformBroadcaster is not None else None
        self.pool = PublishPool(publish_threads, on_error or _raise)

    def set_path_max_length(self, n: int) -> None:
        """Keep at most ``n`` poses in ~/path (oldest dropped)."""
        with self._path_lock:
            self._path_poses = deque(self._path_poses, maxlen=int(n))

    def reset(self) -> None:
        """Forget the path and odometry history (pipeline reset, e.g. a bag loop)."""
        with self._path_lock:
            self._path_poses.clear()
            self._path_dirty = False
        self._last_odom = None

    def publish_path_if_due(self) -> bool:
        """Publish ~/path when it has new poses and ``path_period_s`` has passed since the last one.

        Called after each reference pose and by the node's diagnostics timer (the newest pose
        goes out within about ``path_period_s`` + ``diagnostics_period_s``). A Path message is
        O(length) to build and serialise (~20 us a pose), so sending a long path with every
        pose would grow the cost per view without bound; ``path_period_s`` caps it. Returns
        True when it published.
        """
        with self._path_lock:
            now = time.monotonic()
            if not self._path_dirty or now - self._path_sent < self.path_period_s or not self._path_poses:
                return False
            if self.toggles.path:
                latest = self._path_poses[-1]
                self.path.publish(Path(header=latest.header, poses=list(self._path_poses)))
            self._path_dirty, self._path_sent = False, now
            return True

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every image and cloud handed to the publishing threads is out."""
        return self.pool.flush(timeout_s)

    def destroy(self) -> None:
        """Stop the publishing threads (what waits is dropped), then destroy every publisher."""
        self.pool.close(drain=False)
        destroy = getattr(self._node, "destroy_lifecycle_publisher", self._node.destroy_publisher)
        for pub in self._pubs:
            destroy(pub)
        self._pubs.clear()

    def publish_result(self, result) -> int:
        """Publish one window's outputs; returns the number of views published.

        Args:
            result: a ``WindowResult`` (poses aligned in the pipeline's world frame).
        """
        pred = result.prediction
        fixed_from_cam = fixed_from_model_world(result.world_from_cam)
        is_new = np.asarray(result.is_new, dtype=bool)
        published = 0
        newest_ns = max(f.stamp_ns for f in pred.frames)
        for i, frame in enumerate(pred.frames):
            if not (is_new[i] or self.publish_all_views) or frame.camera not in self.per_camera:
                continue
            self._publish_view(frame, pred.depth[i], pred.confidence[i], pred.intrinsics[i],
                               fixed_from_cam[i], result.colored.get(i), _view_messages(result.messages, i),
                               keep=result)
            if frame.camera == self.cameras[0]:
                self._publish_reference(frame, fixed_from_cam[i])
            published += 1
        if published and self.toggles.points and listened(self.points):
            self._publish_points(result, newest_ns)
        return published

    def _publish_view(self, frame, depth, conf, intr, fixed_from_cam, colored=None, messages=None,
                      keep=None) -> None:
        """Publish one view's outputs (the images through :attr:`pool`, holding ``keep``).

        ``messages``: the view's maps already serialised (``depth``, ``conf``, ``col``: the
        inference process frames them); those missing are serialised here.
        """
        pubs, t, ready = self.per_camera[frame.camera], self.toggles, messages or {}
        header = conv.make_header(frame.stamp_ns, frame.frame_id)
        stamp_ns = frame.stamp_ns

        def send(kind: str, pub, arr, encoding: str, after=None) -> None:  # serialised: no message object
            message = ready.get(kind)
            if message is None:
                message = conv.numpy_to_image_cdr(arr, encoding, frame.stamp_ns, frame.frame_id)
            self.pool.send(pub, message, keep, after)

        if t.depth and listened(pubs["depth"]):
            send("depth", pubs["depth"], np.asarray(depth, np.float32), "32FC1",
                 lambda: self._on_published(stamp_ns))
        else:
            self._on_published(stamp_ns)
        if t.confidence and listened(pubs["confidence"]):
            send("conf", pubs["confidence"], np.asarray(conf, np.float32), "32FC1")
        if t.camera_info and intr is not None:
            pubs["camera_info"].publish(conv.intrinsics_to_camera_info(intr, header))
        if t.depth_colored and listened(pubs["depth_colored"]):
            if colored is None and "col" not in ready:
                colored = colorize_depth(np.asarray(depth, np.float32), *self.colored_range)
            send("col", pubs["depth_colored"], colored, "rgb8")
        if t.pose:
            pubs["pose"].publish(pose_stamped(fixed_from_cam, frame.stamp_ns, self.fixed_frame))
        if t.tf and self._tf is not None:
            tf = TransformStamped(header=conv.make_header(frame.stamp_ns, self.fixed_frame),
                                  child_frame_id=frame.frame_id)
            tf.transform = conv.matrix_to_transform(fixed_from_cam)
            self._tf.sendTransform(tf)

    def _publish_reference(self, frame, fixed_from_cam: np.ndarray) -> None:
        pose = pose_stamped(fixed_from_cam, frame.stamp_ns, self.fixed_frame)
        if self.toggles.odometry:
            odom = Odometry(header=pose.header, child_frame_id=frame.frame_id)
            odom.pose.pose = pose.pose
            self._fill_twist(odom, frame.stamp_ns, fixed_from_cam)
            self.odometry.publish(odom)
        self._last_odom = (frame.stamp_ns, fixed_from_cam)
        with self._path_lock:
            self._path_poses.append(pose)
            self._path_dirty = True
        self.publish_path_if_due()

    def _fill_twist(self, odom: Odometry, stamp_ns: int, fixed_from_cam: np.ndarray) -> None:
        """Finite-difference twist in the child (optical) frame; unknown (-1 covariance) at start."""
        if self._last_odom is None or stamp_ns <= self._last_odom[0]:
            odom.twist.covariance[0] = -1.0
            return
        dt = (stamp_ns - self._last_odom[0]) * 1e-9
        prev = self._last_odom[1]
        delta = np.linalg.inv(prev) @ fixed_from_cam  # motion expressed in the previous camera frame
        v = delta[:3, 3] / dt
        rvec, _ = cv2.Rodrigues(delta[:3, :3])
        w = rvec.ravel() / dt
        odom.twist.twist.linear.x, odom.twist.twist.linear.y, odom.twist.twist.linear.z = map(float, v)
        odom.twist.twist.angular.x, odom.twist.twist.angular.y, odom.twist.twist.angular.z = map(float, w)

    def _publish_points(self, result, stamp_ns: int) -> None:
        message = result.messages.get("cloud")
        if message is None and result.points_world is None:
            return  # the inference process framed no cloud (no view of its own to publish)
        if message is None:  # not serialised by the producer: here, as the inference process does
            message = window_cloud_message(
                np.asarray(result.points_world, np.float32).reshape(-1, 3),
                np.asarray(result.colors, np.uint8).reshape(-1, 3),
                np.asarray(result.points_conf, np.float32).reshape(-1), stamp_ns, self.fixed_frame).tobytes()
        self.pool.send(self.points, message, result)


def _raise(exc: BaseException) -> None:
    raise exc


def _view_messages(messages: dict, i: int) -> dict:
    """View ``i``'s serialised maps among a result's ``messages``, by kind (``depth``, ``conf``, ``col``)."""
    if not messages:
        return {}
    return {kind: messages[f"{kind}{i}"] for kind in ("depth", "conf", "col") if f"{kind}{i}" in messages}
