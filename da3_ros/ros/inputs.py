"""Image and CameraInfo subscriptions: decode, check, stamp, hand over to the pipeline.

Callbacks only decode and enqueue (the sink is ``AsyncPipeline.submit``, which
never blocks); inference runs on the pipeline's worker thread. Images are
subscribed raw (``raw=True``): the callback gets the serialised bytes and
:mod:`da3_ros.ros.conversions.cdr` reads the fields and views the pixels without
building a Python message or copying them. Every callback of the cameras runs on one
thread (the node's executor, or with ``own_thread`` a
:class:`~da3_ros.ros.intake.SubscriptionThread`), so one camera's state needs no lock;
what timers on the executor touch (held frames) is under ``_hold_lock``.

Frame ids: the ``camera.<name>.frame_id`` parameter when set, else the input
header's ``frame_id`` when non-empty, else ``<name>_optical_frame``.

Bad input never raises out of a callback: it is logged (throttled per camera, reason and kind
of message: :func:`~da3_ros.ros.logs.message_kind`)
and counted by reason through ``on_bad_input(camera, reason)`` (diagnostics count
``camera_info_mismatch``, ``camera_info_invalid`` and the time-jump reset as events, not
drops: no image is lost to them).
Reasons:
``lost`` (images DDS lost before the callback, from its sample-lost events: a best-effort
subscription that cannot keep up or large images that do not fit the transport; counted, never
received), ``decode_error`` (wrong/unsupported encoding, corrupt data), ``empty_image``
(0 x 0), ``zero_stamp``, ``stamp_backwards`` (older than the last frame of that
camera, or a duplicate), ``camera_info_mismatch`` (CameraInfo of another size;
the frame goes on without intrinsics), ``camera_info_invalid`` (a CameraInfo that cannot be
converted, or whose distortion cannot be undone: :func:`da3_ros.core.undistortion.supported`;
it is ignored). A jump back by more than
``time_jump_reset_s`` (a looping bag, a restarted simulator) is not dropped:
``on_time_jump(camera)`` lets the node reset the pipeline.

Start-up with CameraInfo: a camera's first image usually arrives before its first CameraInfo
(two subscriptions; nothing orders them). When a camera has a ``camera_info_topic`` and the
node uses intrinsics (``uses_intrinsics``, the default: ``condition_on_intrinsics``), images
arriving before that camera's first CameraInfo are held (in order, at most
``camera_info_wait_s`` seconds and ``MAX_HELD`` frames) and released with the intrinsics as
soon as it arrives. If it does not arrive in time (checked on each image and by
:meth:`CameraInputs.check_held`, which the node calls with its diagnostics) they go on
without intrinsics and the camera stops waiting. When intrinsics are used, every frame of a
camera with a CameraInfo topic that goes on without them is counted through
``on_no_intrinsics(camera)`` (a count, not a drop: the frame is still processed); when they
are not used nothing is held or counted.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from da3_ros.core import undistortion
from da3_ros.core.frames import CameraIntrinsics, Frame
from da3_ros.ros import conversions as conv
from da3_ros.ros.conversions import cdr
from da3_ros.ros.intake import SubscriptionThread
from da3_ros.ros.logs import Throttle, message_kind
from da3_ros.ros.parameters import CameraSettings


def input_qos(kind: str, depth: int) -> QoSProfile:
    """QoS for image subscriptions: ``sensor_data`` (best effort) or ``reliable``, keep-last ``depth``."""
    if kind == "sensor_data":
        qos = QoSProfile(**{k: getattr(qos_profile_sensor_data, k)
                            for k in ("reliability", "durability", "history")}, depth=depth)
        return qos
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


def _subscribe_counting_losses(node, msg_type, topic: str, callback, qos: QoSProfile, on_lost,
                               callback_group=None):
    """A raw subscription whose DDS sample-lost events go to ``on_lost(info)``.

    Best-effort readers lose samples that arrive faster than the reader takes them or do not fit
    the transport (large images); Fast DDS reports them as message-lost events. A middleware
    without that event gets the subscription without it (losses then go uncounted).
    """
    kwargs = {"raw": True, "callback_group": callback_group}
    try:
        return node.create_subscription(msg_type, topic, callback, qos, **kwargs,
                                        event_callbacks=SubscriptionEventCallbacks(message_lost=on_lost))
    except UnsupportedEventTypeError:
        return node.create_subscription(msg_type, topic, callback, qos, **kwargs)


#: Most frames one camera holds while waiting for its first CameraInfo.
MAX_HELD = 100


@dataclass
class _CameraState:
    settings: CameraSettings
    last_stamp_ns: int | None = None
    info: CameraIntrinsics | None = None
    waiting: bool = False  # holding images until the first CameraInfo
    held: deque = field(default_factory=deque)  # Frames waiting for it, oldest first
    held_since: float = 0.0  # monotonic time the oldest held frame arrived
    large_sizes_logged: set = field(default_factory=set)  # (w, h) logged as over max_input_pixels


class CameraInputs:
    """Subscriptions of every camera; each decoded, checked image becomes a :class:`Frame`.

    Args:
        node: the node to subscribe on.
        cameras: per-camera settings (topics, frame id override, transport).
        sink: receives each good frame; must not block (``AsyncPipeline.submit``).
        on_bad_input: ``(camera, reason, count)`` for rejected (or lost) messages.
        on_input: ``(camera, stamp_ns)`` for each message received (rates).
        on_time_jump: ``(camera)`` when stamps jump back by more than the reset threshold.
        qos: image subscription QoS; camera_info uses the same reliability.
        time_jump_reset_s: backward jump that resets instead of dropping (0: never reset).
        log_throttle_s: warning period of each camera, reason and kind of message.
        camera_info_wait_s: how long images wait for a camera's first CameraInfo (0: never
            wait; see the module docstring).
        on_no_intrinsics: ``(camera)`` for each frame of a camera with a CameraInfo topic that
            goes on without intrinsics (only when ``uses_intrinsics``).
        uses_intrinsics: whether the node uses CameraInfo intrinsics at all; without a use,
            frames are neither held nor counted.
        max_input_pixels: images larger than this are logged once per camera and size (0: never).
        own_thread: serve the subscriptions (images and CameraInfo) on a thread of their own
            (:class:`~da3_ros.ros.intake.SubscriptionThread`) instead of the node's executor.
    """

    def __init__(self, node, cameras: list[CameraSettings], sink: Callable[[Frame], None],
                 on_bad_input: Callable[..., None], on_input: Callable[[str, int], None],
                 on_time_jump: Callable[[str], None], qos: QoSProfile,
                 time_jump_reset_s: float = 1.0, log_throttle_s: float = 5.0,
                 camera_info_wait_s: float = 0.0,
                 on_no_intrinsics: Callable[[str], None] | None = None,
                 uses_intrinsics: bool = True, max_input_pixels: int = 0, own_thread: bool = False) -> None:
        self._node = node
        self._thread = (SubscriptionThread(node.context, on_error=self._callback_failed)
                        if own_thread else None)
        self._sink = sink
        self._on_bad_input = on_bad_input
        self._on_input = on_input
        self._on_time_jump = on_time_jump
        self._on_no_intrinsics = on_no_intrinsics or (lambda _camera: None)
        self.time_jump_reset_s = time_jump_reset_s
        self.camera_info_wait_s = float(camera_info_wait_s)
        self.uses_intrinsics = bool(uses_intrinsics)
        self.max_input_pixels = int(max_input_pixels)
        self.throttle = Throttle(log_throttle_s)
        self._hold_lock = threading.RLock()  # held frames: camera callbacks vs check_held / destroy
        self._subs: list = []
        #: per camera, the topics subscribed, as resolved (namespace, remaps): image, then info
        self.topics: dict[str, list[str]] = {c.name: [] for c in cameras}
        self.states = {c.name: _CameraState(c) for c in cameras}
        for cam in cameras:
            self._subscribe(cam, qos)

    def _subscribe(self, cam: CameraSettings, qos: QoSProfile) -> None:
        compressed = cam.transport == "compressed"
        msg_type = CompressedImage if compressed else Image
        decode = cdr.decode_compressed_image if compressed else cdr.decode_image
        group = self._thread.group if self._thread is not None else None
        subs = [_subscribe_counting_losses(
            self._node, msg_type, cam.image_topic,
            lambda raw, c=cam.name, d=decode: self._on_raw_image(c, raw, d), qos,
            lambda info, c=cam.name: self._on_lost(c, info.total_count_change), group)]
        if cam.camera_info_topic:
            subs.append(self._node.create_subscription(
                CameraInfo, cam.camera_info_topic, lambda msg, c=cam.name: self._on_info(c, msg), qos,
                callback_group=group))
        self._subs += subs
        if self._thread is not None:
            self._thread.add(subs)
        self.topics[cam.name] = [sub.topic_name for sub in subs]
        if cam.camera_info_topic and self.uses_intrinsics and self.camera_info_wait_s > 0:
            self.states[cam.name].waiting = True

    def destroy(self) -> None:
        """Remove every subscription (deactivate); held frames go to the sink first."""
        if self._thread is not None and not self._thread.close():
            self._node.get_logger().warning("the camera subscription thread did not stop within 5 s")
        for sub in self._subs:
            self._node.destroy_subscription(sub)
        self._subs.clear()
        for camera in self.states:
            self._stop_waiting(camera)

    def intrinsics(self, camera: str) -> CameraIntrinsics | None:
        """The latest CameraInfo intrinsics of ``camera`` (None before the first one)."""
        state = self.states.get(camera)
        return state.info if state is not None else None

    def held_count(self) -> int:
        """Frames currently waiting for a first CameraInfo, all cameras."""
        return sum(len(s.held) for s in self.states.values())

    def reset_stamps(self) -> None:
        """Forget the last stamp of every camera (after a pipeline reset)."""
        for state in self.states.values():
            state.last_stamp_ns = None

    def _callback_failed(self, exc: BaseException) -> None:
        """A callback raised on the subscription thread (they catch bad input: this is a bug)."""
        if self.throttle.ready(f"callback/{type(exc).__name__}"):
            self._node.get_logger().error(f"camera callback failed: {type(exc).__name__}: {exc} "
                                          "(repeats are throttled)")

    def _bad(self, camera: str, reason: str, detail: str) -> None:
        self._on_bad_input(camera, reason)
        if self.throttle.ready(f"{camera}/{reason}/{message_kind(detail)}"):
            self._node.get_logger().warning(f"[{camera}] {reason}: {detail} (repeats are throttled)")

    def _on_lost(self, camera: str, count: int) -> None:
        """DDS reported ``count`` images of ``camera`` lost before they reached the callback."""
        if count <= 0:
            return
        self._on_bad_input(camera, "lost", count)
        if self.throttle.ready(f"{camera}/lost"):
            self._node.get_logger().warning(
                f"[{camera}] lost: {count} image(s) lost in transport (DDS sample lost: best-effort QoS "
                "drops images that arrive faster than they are taken or do not fit the transport; "
                "input_qos reliable keeps them) (repeats are throttled)")

    def _check_size(self, camera: str, state: _CameraState, width: int, height: int) -> None:
        """Log once per camera and size when images exceed ``max_input_pixels``."""
        if not self.max_input_pixels or width * height <= self.max_input_pixels or \
                (width, height) in state.large_sizes_logged:
            return
        state.large_sizes_logged.add((width, height))
        self._node.get_logger().warning(
            f"[{camera}] {width}x{height} images ({width * height / 1e6:.1f} MP) exceed max_input_pixels "
            f"({self.max_input_pixels / 1e6:.1f} MP): each costs {width * height * 3 / 2**20:.0f} MiB "
            "wherever it waits for a window, and depth + confidence at source size are 8 bytes a pixel. Set "
            "output_resolution (network, or a long side in pixels), use input_qos reliable (best effort "
            "loses large images), or lower the camera's resolution")

    def _on_info(self, camera: str, msg: CameraInfo) -> None:
        try:
            intr = conv.camera_info_to_intrinsics(msg)
        except Exception as exc:  # noqa: BLE001 - bad input must never kill the node
            self._bad(camera, "camera_info_invalid", str(exc))
            return
        if not undistortion.supported(intr):
            self._bad(camera, "camera_info_invalid", f"distortion model {intr.distortion_model!r} with "
                      f"{len(intr.D)} coefficients cannot be undone (supported: plumb_bob, "
                      "rational_polynomial, equidistant); CameraInfo ignored")
            return
        self.states[camera].info = intr
        if self.states[camera].waiting:
            self._stop_waiting(camera)

    def _on_raw_image(self, camera: str, raw: bytes, decode) -> None:
        try:
            msg = decode(raw)
        except Exception as exc:  # noqa: BLE001 - bad input must never kill the node
            self._on_input(camera, 0)
            self._bad(camera, "decode_error", f"{type(exc).__name__}: {exc}")
            return
        self._on_image(camera, msg)

    def _on_image(self, camera: str, msg) -> None:
        try:
            frame = self._to_frame(camera, msg)
        except Exception as exc:  # noqa: BLE001 - bad input must never kill the node
            self._bad(camera, "decode_error", f"{type(exc).__name__}: {exc}")
            return
        if frame is None:
            return
        state = self.states[camera]
        with self._hold_lock:
            if state.waiting:
                if not state.held:
                    state.held_since = time.monotonic()
                state.held.append(frame)
                if len(state.held) >= MAX_HELD:
                    self._stop_waiting(camera)
                else:
                    self._check_held(camera)
                return
        self._deliver(camera, frame)

    def _deliver(self, camera: str, frame: Frame) -> None:
        if (frame.intrinsics is None and self.uses_intrinsics
                and self.states[camera].settings.camera_info_topic):
            self._on_no_intrinsics(camera)
        self._sink(frame)

    def check_held(self) -> None:
        """Release the frames of cameras whose wait ran out (the node calls this periodically)."""
        for camera in self.states:
            self._check_held(camera)

    def _check_held(self, camera: str) -> None:
        """Stop waiting once the oldest held frame has waited ``camera_info_wait_s``."""
        state = self.states[camera]
        with self._hold_lock:
            if not (state.waiting and state.held
                    and time.monotonic() - state.held_since >= self.camera_info_wait_s):
                return
            self._node.get_logger().warning(
                f"[{camera}] no CameraInfo within {self.camera_info_wait_s:.2f} s of the first image: "
                "frames go on without intrinsics until it arrives")
            self._stop_waiting(camera)

    def _stop_waiting(self, camera: str) -> None:
        """Release held frames in order (with the intrinsics when they fit) and stop waiting."""
        state = self.states[camera]
        with self._hold_lock:
            state.waiting = False
            while state.held:
                frame = state.held.popleft()
                intr = self._fitting_info(camera, frame.width, frame.height)
                self._deliver(camera, replace(frame, intrinsics=intr) if intr is not None else frame)

    def _fitting_info(self, camera: str, width: int, height: int) -> CameraIntrinsics | None:
        """The camera's latest intrinsics when they are for a ``width`` x ``height`` image.

        None before the first CameraInfo, or (counted as ``camera_info_mismatch``) when the
        CameraInfo is of another size.
        """
        intr = self.states[camera].info
        if intr is not None and (intr.width, intr.height) != (width, height):
            self._bad(camera, "camera_info_mismatch",
                      f"CameraInfo is {intr.width}x{intr.height}, image {width}x{height}; intrinsics ignored")
            return None
        return intr

    def _to_frame(self, camera: str, msg) -> Frame | None:
        """Decode and check one image message; None (counted) when rejected."""
        state = self.states[camera]
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        self._on_input(camera, stamp_ns)
        if hasattr(msg, "encoding") and (msg.width == 0 or msg.height == 0):
            self._bad(camera, "empty_image", f"{msg.width}x{msg.height} image")
            return None
        if stamp_ns <= 0:
            self._bad(camera, "zero_stamp", "header stamp is zero")
            return None
        if not self._stamp_ok(camera, state, stamp_ns):
            return None
        rgb = conv.image_to_rgb(msg)
        if rgb.size == 0:
            self._bad(camera, "empty_image", f"decoded shape {rgb.shape}")
            return None
        state.last_stamp_ns = stamp_ns
        h, w = rgb.shape[:2]
        self._check_size(camera, state, w, h)
        intr = self._fitting_info(camera, w, h)
        frame_id = state.settings.frame_id or msg.header.frame_id or f"{camera}_optical_frame"
        return Frame(image=rgb, stamp_ns=stamp_ns, camera=camera, intrinsics=intr, frame_id=frame_id)

    def _stamp_ok(self, camera: str, state: _CameraState, stamp_ns: int) -> bool:
        last = state.last_stamp_ns
        if last is None or stamp_ns > last:
            return True
        back_s = (last - stamp_ns) * 1e-9
        if self.time_jump_reset_s > 0 and back_s > self.time_jump_reset_s:
            self._node.get_logger().warning(
                f"[{camera}] stamps jumped back {back_s:.2f} s: resetting the pipeline")
            self._stop_waiting(camera)  # held (older) frames go to the old pipeline first
            self._on_time_jump(camera)
            return True
        self._bad(camera, "stamp_backwards", f"stamp {stamp_ns} not after last {last} ({back_s:.3f} s back)")
        return False
