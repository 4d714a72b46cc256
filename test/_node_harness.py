"""Helpers for the multi-process node tests: the node in its own process, a synthetic
camera and a recorder in the test process, talking over real DDS on loopback.

Every wait has a timeout; every process is stopped (SIGINT first) and every rclpy
context shut down, so a failing test never hangs or leaks participants.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from da3_ros.tools.replay.node_runner import NodeRunner

REPO = Path(__file__).resolve().parents[1]
NODE_EXE = Path(sys.executable).parent / "da3_node"
_domain_counter = itertools.count()


def unique_domain_id() -> int:
    """A ROS_DOMAIN_ID in 1..100 for one test, different for consecutive tests of this process."""
    return 1 + (os.getpid() * 13 + next(_domain_counter) * 37) % 100


@contextlib.contextmanager
def isolated_node(name: str, node_cls=None):
    """``(node, executor)`` in a context of their own (a unique domain id), torn down after.

    ``node_cls``: rclpy's ``Node`` (default) or e.g. ``LifecycleNode``; the executor is a
    ``SingleThreadedExecutor`` the test spins as it needs.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=unique_domain_id(), signal_handler_options=SignalHandlerOptions.NO)
    node = (node_cls or Node)(name, context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def unique_namespace() -> str:
    """A namespace for one test's topics and node, so a run sharing the domain cannot cross-talk."""
    return f"/t{os.getpid()}_{next(_domain_counter)}"


class NodeProcess(NodeRunner):
    """``da3_node --ros-args --params-file <yaml>`` as a child process on loopback DDS.

    Args:
        tmp_path: directory for the params file and logs.
        params: node parameters (flat dotted names or nested dicts), written under ``/**``.
        domain_id: ROS_DOMAIN_ID of the child.
        extra_args: more ROS arguments (``-r`` remaps, ``-p`` overrides).
        params_file: an existing params file to use instead of ``params``.
        ns: run the node in this namespace (``__ns`` remap); its relative topics follow.
        extra_env: more environment variables for the node (e.g. another DDS profile).
    """

    def __init__(self, tmp_path: Path, params: dict | None, domain_id: int, extra_args=(),
                 params_file: Path | None = None, ns: str = "",
                 extra_env: dict[str, str] | None = None) -> None:
        self.tmp_path = Path(tmp_path)
        if params_file is None:
            params_file = self.tmp_path / "node_params.yaml"
            params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        remap_ns = ["-r", f"__ns:={ns}"] if ns else []
        cmd = [str(NODE_EXE), "--ros-args", "--params-file", str(params_file), *remap_ns, *extra_args]
        super().__init__(cmd, domain_id, self.tmp_path, cwd=REPO,
                         extra_env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                                    **(extra_env or {})})

    def log(self) -> str:
        """Everything the node printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc) -> None:
        if self.alive():
            self.stop()


class RosHarness:
    """An rclpy context of its own (domain ``domain_id``) with one node spun in a thread."""

    def __init__(self, domain_id: int, name: str = "da3_test_harness") -> None:
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Shut the executor down, destroy the node, join the thread, shut rclpy down."""
        import rclpy

        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()
        self._thread.join(timeout=10.0)
        rclpy.shutdown(context=self.context)

    def __enter__(self) -> RosHarness:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Recorder:
    """Subscribes to topics and keeps every message (thread-safe).

    Topic names are given without the test's namespace ``ns`` (``/da3_node/points``) and
    subscribed under it; ``/diagnostics`` stays global, and only the statuses of the node
    ``<ns>/da3_node`` are kept.
    """

    def __init__(self, node, topics: dict[str, type], qos=None, ns: str = "") -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        qos = qos or QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self._lock = threading.Lock()
        self._diag_name = f"{ns}/da3_node: pipeline"
        self.msgs: dict[str, list] = defaultdict(list)
        self._subs = [node.create_subscription(t, name if name == "/diagnostics" else ns + name,
                                               lambda m, n=name: self._store(n, m), qos)
                      for name, t in topics.items()]

    def _store(self, name: str, msg) -> None:
        if name == "/diagnostics" and msg.status[0].name != self._diag_name:
            return  # another node's diagnostics (a run sharing this domain)
        with self._lock:
            self.msgs[name].append(msg)

    def get(self, name: str) -> list:
        """Messages received on ``name`` so far (a copy)."""
        with self._lock:
            return list(self.msgs[name])

    def count(self, name: str) -> int:
        """Number of messages received on ``name``."""
        with self._lock:
            return len(self.msgs[name])


def wait_until(predicate, timeout_s: float, period_s: float = 0.05, alive=None) -> bool:
    """Poll ``predicate`` until true or ``timeout_s``; stop early when ``alive()`` turns false."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        if alive is not None and not alive():
            return bool(predicate())
        time.sleep(period_s)
    return bool(predicate())


@dataclass
class SynthFrame:
    """One rendered camera frame with its truth."""

    camera: str
    stamp_ns: int
    rgb: np.ndarray          # (H, W, 3) uint8
    depth: np.ndarray        # (H, W) float32 metres, inf where nothing
    world_from_cam: np.ndarray  # (4, 4) optical camera-to-world
    K: np.ndarray            # (3, 3)


def render_sequence(cameras: list[str], n_frames: int, width: int, height: int, rate_hz: float = 15.0,
                    kind: str = "room", seed: int = 0, rig_jitter_ns: int = 300_000,
                    sizes: dict[str, tuple[int, int]] | None = None) -> list[list[SynthFrame]]:
    """Render ``n_frames`` time steps of a (rig of) camera(s) moving through a synthetic scene.

    Stamps start at 0 here; :meth:`SyntheticCamera.play` moves them to the wall clock when it
    starts (so the node's latency figures are real). Rig camera ``c`` is stamped
    ``c * rig_jitter_ns`` after camera 0 (inside any sane slop).

    ``sizes`` gives some cameras another (width, height).

    Returns:
        per time step, one SynthFrame per camera.
    """
    from da3_ros.sim.scene import default_intrinsics, make_scene, make_trajectory, rig_offsets

    scene = make_scene(kind, seed)
    stamps, body = make_trajectory(kind, n_frames, rate_hz, seed)
    offsets = rig_offsets(len(cameras)) if len(cameras) > 1 else np.eye(4)[None]
    sizes = sizes or {}
    stamps = np.asarray(stamps, dtype=np.int64) - int(stamps[0])
    steps = []
    for t in range(n_frames):
        views = []
        for c, cam in enumerate(cameras):
            w, h = sizes.get(cam, (width, height))
            K = default_intrinsics(w, h).K
            pose = body[t] @ offsets[c]
            rgb, depth = scene.render(pose, K, w, h)
            stamp = int(stamps[t]) + c * rig_jitter_ns
            views.append(SynthFrame(cam, stamp, rgb, depth.astype(np.float32), pose, K))
        steps.append(views)
    return steps


def restamp_to_now(steps: list[list[SynthFrame]]) -> None:
    """Move relative stamps (as rendered) to the wall clock, in place; no-op when already absolute."""
    if steps and steps[0][0].stamp_ns < 10**18:
        base = time.time_ns()
        for views in steps:
            for frame in views:
                frame.stamp_ns += base


class SyntheticCamera:
    """Publishes rendered frames (truth first, then CameraInfo and the image) at a fixed rate.

    Topics per camera ``c``, under the namespace ``ns``: ``/c/image_raw`` (rgb8;
    ``/c/image_raw/compressed`` png for the cameras in ``png``), ``/c/camera_info``,
    ``/c/depth_gt`` (32FC1 metres, NaN where nothing) and ``/c/pose_gt`` (PoseStamped,
    optical camera-to-world in frame ``world``), as ``da3-synth`` writes them.
    """

    def __init__(self, node, cameras: list[str], frame_id_of=lambda cam: f"{cam}_optical_frame",
                 png: tuple[str, ...] = (), ns: str = "") -> None:
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.node = node
        self.frame_id_of = frame_id_of
        self.png = set(png)

        def image_pub(cam):
            if cam in self.png:  # lossless compressed transport: values stay exact
                return node.create_publisher(CompressedImage, f"{ns}/{cam}/image_raw/compressed", qos)
            return node.create_publisher(Image, f"{ns}/{cam}/image_raw", qos)

        self.pubs = {cam: {"image": image_pub(cam),
                           "info": node.create_publisher(CameraInfo, f"{ns}/{cam}/camera_info", qos),
                           "depth": node.create_publisher(Image, f"{ns}/{cam}/depth_gt", qos),
                           "pose": node.create_publisher(PoseStamped, f"{ns}/{cam}/pose_gt", qos)}
                     for cam in cameras}
        self.published: list[SynthFrame] = []

    def wait_for_subscribers(self, timeout_s: float = 30.0, topics=("image", "info")) -> bool:
        """Wait until the ``topics`` publishers of every camera have a subscriber (the node is up)."""
        return wait_until(lambda: all(p[t].get_subscription_count() > 0 for p in self.pubs.values()
                                      for t in topics), timeout_s)

    def publish(self, frame: SynthFrame, with_truth: bool = True, with_info: bool = True) -> None:
        """Publish one frame (truth, CameraInfo, image) with its stamp."""
        from geometry_msgs.msg import PoseStamped

        from da3_ros.core.frames import CameraIntrinsics
        from da3_ros.ros import conversions as conv

        pubs = self.pubs[frame.camera]
        h, w = frame.rgb.shape[:2]
        header = conv.make_header(frame.stamp_ns, self.frame_id_of(frame.camera))
        if with_truth:
            depth = np.where(np.isfinite(frame.depth), frame.depth, np.nan).astype(np.float32)
            pubs["depth"].publish(conv.numpy_to_image(depth, "32FC1", header))
            pose = PoseStamped(header=conv.make_header(frame.stamp_ns, "world"),
                               pose=conv.matrix_to_pose(frame.world_from_cam))
            pubs["pose"].publish(pose)
        if with_info:
            pubs["info"].publish(conv.intrinsics_to_camera_info(CameraIntrinsics(frame.K, w, h), header))
        if frame.camera in self.png:
            pubs["image"].publish(conv.numpy_to_compressed(frame.rgb, "png", header))
        else:
            pubs["image"].publish(conv.numpy_to_image(frame.rgb, "rgb8", header))
        self.published.append(frame)

    def prime_camera_info(self, steps: list[list[SynthFrame]], settle_s: float = 0.3) -> None:
        """Publish each camera's CameraInfo once before the images (as a running driver would have)."""
        from da3_ros.core.frames import CameraIntrinsics
        from da3_ros.ros import conversions as conv

        for frame in steps[0]:
            h, w = frame.rgb.shape[:2]
            header = conv.make_header(time.time_ns(), self.frame_id_of(frame.camera))
            self.pubs[frame.camera]["info"].publish(
                conv.intrinsics_to_camera_info(CameraIntrinsics(frame.K, w, h), header))
        time.sleep(settle_s)

    def play(self, steps: list[list[SynthFrame]], rate_hz: float = 15.0, with_truth: bool = True) -> None:
        """Publish every time step at ``rate_hz`` (blocking), restamped from now on first use."""
        period = 1.0 / rate_hz
        restamp_to_now(steps)
        t0 = time.monotonic()
        for i, views in enumerate(steps):
            for frame in views:
                self.publish(frame, with_truth)
            time.sleep(max(0.0, t0 + (i + 1) * period - time.monotonic()))
