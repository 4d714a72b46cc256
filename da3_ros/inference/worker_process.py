"""The inference process: model, windows, alignment, cloud and colours away from the ROS process.

:class:`da3_ros.inference.process_pipeline.ProcessPipeline` starts :func:`worker_main` in a
process of its own (``spawn``: a fresh interpreter, the only one that touches CUDA). There it
builds the predictor, warms it up and runs an :class:`~da3_ros.core.pipeline.AsyncPipeline`
exactly as the node's in-process worker would; only the way frames come in and results go out
differs:

- frames: the parent writes each image into the input :class:`~da3_ros.inference.shm_ring.SlotRing`
  and sends ``("frame", frame without image, layout)``; :func:`_control_loop` copies the image
  out, frees the slot at once and submits the frame (the pipeline's bounded queue, accounting and
  drop reasons are the in-process ones);
- results: :class:`ResultSender` (on a thread of its own, so the worker starts the next window
  at once) writes the arrays the node publishes (depth, confidence and colours of the views to
  publish, the cloud) into the output ring and sends ``("result", light result, layout)``; a
  full output ring (the ROS process publishes slower than windows come) blocks the sender and
  then the worker, so frames wait and drop at the pipeline's queue, counted, as in-process;
- everything else is messages on the same pipe: ``reset``, ``config``, ``close`` from the parent;
  ``ready`` / ``failed`` (model load), ``log`` (the package's log records), ``stats`` (every
  :data:`STATS_PERIOD_S`: the pipeline's counters, GPU memory, the background compile's state)
  and a last ``closed`` with the final counters.

The process ignores SIGINT (Ctrl-C reaches the whole process group; the parent decides when
the worker stops) and ends by itself when the pipe to its parent closes (the parent died).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace

import numpy as np

from da3_ros.core import wire
from da3_ros.core.config import PipelineConfig
from da3_ros.core.geometry import FIXED_AXES
from da3_ros.core.handoff import HandoffThread
from da3_ros.core.results import WindowResult
from da3_ros.inference.allocator import keep_large_allocations
from da3_ros.inference.settings import InferenceSettings
from da3_ros.inference.shm_ring import SHM_HINT, SlotRing

LOG = logging.getLogger("da3_ros.inference.worker")

#: Seconds between two ``stats`` messages to the parent.
STATS_PERIOD_S = 0.2
#: How often a worker waiting for a free output slot looks again, in seconds.
SLOT_POLL_S = 0.001


@dataclass
class WorkerSpec:
    """Everything the inference process needs to start (pickled to it).

    Attributes:
        inference: what model to build and how.
        config: the pipeline's configuration (windows, alignment, cloud, colours).
        warmup_views: views of the warm-up window (0: no warm-up).
        in_ring, out_ring: names of the rings the parent created, and their slot counts.
        switch_interval_s: the parent's GIL switch interval, used here too (``da3_node`` sets
            it, :mod:`da3_ros.ros.entry`).
        fixed_frame: when set, results also carry their published maps and cloud as serialised
            messages (:func:`split_result`), the cloud in this frame.
    """

    inference: InferenceSettings
    config: PipelineConfig
    warmup_views: int
    in_ring: tuple[str, int]
    out_ring: tuple[str, int]
    switch_interval_s: float
    fixed_frame: str | None = None


class PipeLogHandler(logging.Handler):
    """Sends each log record of the package to the parent as ``("log", level, logger, message)``."""

    def __init__(self, send) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        """Send ``record`` (dropped quietly once the parent is gone)."""
        try:
            self._send(("log", record.levelno, record.name, record.getMessage()))
        except Exception:  # noqa: BLE001 - the parent is gone; nothing to log to
            pass


class ResultSender:
    """The pipeline's ``on_result``: a result's published arrays into the output ring, a message out.

    Only what the node publishes travels: every view's metadata, poses and intrinsics, and the
    maps of the views it publishes (new views, or all with ``publish_all_views``); the others'
    depth and confidence arrive as None.
    """

    def __init__(self, ring: SlotRing, send, config: PipelineConfig, closing: threading.Event,
                 fixed_frame: str | None = None) -> None:
        self.ring, self.send, self.config, self.closing = ring, send, config, closing
        self.fixed_frame = fixed_frame
        self.warned = False

    def __call__(self, result: WindowResult) -> None:
        """Write ``result`` into the next free slot (waiting for one) and tell the parent."""
        slot = self.ring.acquire()
        while slot is None:  # the ROS process is behind: wait (frames queue and drop upstream)
            if self.closing.is_set():
                return
            time.sleep(SLOT_POLL_S)
            slot = self.ring.acquire()
        light, arrays = split_result(result, self.config.publish_all_views, self.fixed_frame)
        try:
            layout = self.ring.write(slot, arrays)
        except OSError as exc:  # no room in /dev/shm: this result goes through the pipe instead
            self.ring.release(slot)
            if not self.warned:
                LOG.warning("%s; results go through the pipe (slower). %s", exc, SHM_HINT)
                self.warned = True
            self.send(("result", light, arrays))  # pickled: copies
            return
        self.send(("result", light, layout))


def split_result(result: WindowResult, all_views: bool,
                 fixed_frame: str | None = None) -> tuple[WindowResult, dict[str, np.ndarray | wire.Framed]]:
    """A result without its large arrays (pickled) and those arrays by key (shared memory).

    Keys: ``depth{i}``, ``conf{i}``, ``col{i}`` for each view i to publish, ``points``,
    ``colors``, ``points_conf``. With ``fixed_frame``, the maps are framed as the
    sensor_msgs/Image the node publishes (32FC1 depth and confidence, rgb8 colours; the view's
    stamp and optical frame) and the cloud travels only as ``cloud``, the window's PointCloud2 in
    ``fixed_frame`` (REP-103 axes, stamp of the newest view; none when no view is published),
    instead of the three arrays, so the ROS process publishes them as they lie.
    :func:`join_result` puts them back.
    """
    pred = result.prediction
    views = [i for i in range(len(pred.frames)) if all_views or result.is_new[i]]
    arrays: dict[str, np.ndarray | wire.Framed] = {}

    def framed(arr: np.ndarray, encoding: str, i: int):
        if fixed_frame is None:
            return arr
        return wire.image_message(arr, encoding, pred.frames[i].stamp_ns, pred.frames[i].frame_id)

    for i in views:
        arrays[f"depth{i}"] = framed(np.ascontiguousarray(pred.depth[i], dtype=np.float32), "32FC1", i)
        arrays[f"conf{i}"] = framed(np.ascontiguousarray(pred.confidence[i], dtype=np.float32), "32FC1", i)
        if i in result.colored:
            arrays[f"col{i}"] = framed(np.ascontiguousarray(result.colored[i], dtype=np.uint8), "rgb8", i)
    points = np.asarray(result.points_world, np.float32).reshape(-1, 3)
    colors = np.asarray(result.colors, np.uint8).reshape(-1, 3)
    conf = np.asarray(result.points_conf, np.float32).reshape(-1)
    if fixed_frame is None:
        arrays.update(points=points, colors=colors, points_conf=conf)
    elif views:  # the message alone: the node publishes it and reads nothing else of the cloud
        arrays["cloud"] = window_cloud_message(points, colors, conf, max(f.stamp_ns for f in pred.frames),
                                               fixed_frame)
    frames = [replace(f, image=np.empty((f.height, f.width, 0), np.uint8)) for f in pred.frames]
    light_pred = replace(pred, frames=frames, depth=[None] * len(frames), confidence=[None] * len(frames),
                         depth_thumbs=None, device_maps=None)
    light = replace(result, prediction=light_pred, points_world=None, colors=None, points_conf=None,
                    colored={}, messages={})
    return light, arrays


def window_cloud_message(points_world: np.ndarray, colors: np.ndarray, confidence: np.ndarray,
                         stamp_ns: int, fixed_frame: str) -> wire.Framed:
    """A window's cloud as the ``~/points`` PointCloud2, framed (the inference process and the node).

    Args:
        points_world: (N, 3) points in the pipeline's world frame (OpenCV axes).
        colors: (N, 3) uint8 RGB.
        confidence: (N,) float32.
        stamp_ns: the header stamp (the window's newest view).
        fixed_frame: the header frame; the points are packed in its REP-103 axes in one pass.
    """
    cloud, names = wire.pack_cloud(points_world, colors, confidence, axes=FIXED_AXES)
    return wire.cloud_message(cloud, names, stamp_ns, fixed_frame)


def unframe(parts: dict) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """:func:`split_result`'s arrays (as they came through the pipe) as ``(arrays, messages)``."""
    framed = {k: v for k, v in parts.items() if isinstance(v, wire.Framed)}
    arrays = {k: framed[k].array if k in framed else v for k, v in parts.items()}
    return arrays, {k: np.frombuffer(v.tobytes(), np.uint8) for k, v in framed.items()}


def join_result(light: WindowResult, arrays: dict[str, np.ndarray],
                messages: dict[str, np.ndarray] | None = None) -> WindowResult:
    """The result :func:`split_result` took apart (arrays are used as given: views, no copy).

    Frames keep their size but carry no pixels (``image`` has 0 channels); views not published
    have None for depth and confidence; ``messages`` (the framed ones, whole) become
    ``result.messages``; a cloud sent only as its message leaves ``points_world``, ``colors`` and
    ``points_conf`` None.
    """
    pred = light.prediction
    for i in range(len(pred.frames)):
        pred.depth[i] = arrays.get(f"depth{i}")
        pred.confidence[i] = arrays.get(f"conf{i}")
        if f"col{i}" in arrays:
            light.colored[i] = arrays[f"col{i}"]
    light.points_world, light.colors = arrays.get("points"), arrays.get("colors")
    light.points_conf = arrays.get("points_conf")
    light.messages = dict(messages or {})
    return light


def worker_main(conn, spec: WorkerSpec) -> None:
    """Entry of the inference process (see module docstring); returns when told to close or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.setswitchinterval(spec.switch_interval_s)
    keep_large_allocations()  # each frame's copy out of its slot reuses heap memory
    send_lock = threading.Lock()

    def send(msg) -> None:
        with send_lock:
            conn.send(msg)

    log = logging.getLogger("da3_ros")
    log.addHandler(PipeLogHandler(send))
    log.setLevel(logging.INFO)
    log.propagate = False
    in_ring, out_ring = SlotRing.attach(*spec.in_ring), SlotRing.attach(*spec.out_ring)
    try:
        predictor, info = _load(spec, log)
    except Exception as exc:  # noqa: BLE001 - the parent reports it and stays inactive
        send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    send(("ready", info))
    from da3_ros.core.pipeline import AsyncPipeline

    closing = threading.Event()
    counted = []  # the pipeline whose errors count a failed send (created just below)
    # results go into shared memory on a thread of their own: the worker starts the next window
    sender = HandoffThread(ResultSender(out_ring, send, spec.config, closing, spec.fixed_frame),
                           lambda exc: sender_failed(exc, counted), depth=1)
    sender.start("da3_send")
    pipeline = AsyncPipeline(spec.config, predictor, on_result=sender.submit)
    counted.append(pipeline.pipeline)
    pipeline.start()
    final = None
    try:
        final = _control_loop(conn, pipeline, in_ring, predictor, send, closing)
    finally:
        pipeline.close(timeout_s=10.0, drain=False)
        sender.close(timeout_s=10.0, drain=not closing.is_set())
        closing.set()
        stats = _stats(pipeline, predictor) if final is None else final
        del pipeline
        from da3_ros.inference.build import release

        release(predictor)  # a sharded engine's own processes end here, not at interpreter exit
    try:
        send(("closed", stats))
    except OSError:
        pass  # the parent is gone


def sender_failed(exc: BaseException, pipelines: list) -> None:
    """A result could not be handed to the node: logged, and counted as a window error.

    Its frames ran (they stay processed) but nothing of the window is published; the node shows
    the count in ``window_errors`` and the reason in ``last_error`` (``/diagnostics``).
    """
    LOG.warning("sending a result failed: %s: %s", type(exc).__name__, exc)
    for pipeline in pipelines:
        pipeline.note_error(RuntimeError(f"the window's result could not be handed to the node: "
                                         f"{type(exc).__name__}: {exc}"))


def _load(spec: WorkerSpec, log: logging.Logger):
    from da3_ros.inference import build

    predictor, info = build.build_engine(spec.inference, log)
    if spec.warmup_views > 0:
        build.warm_up(predictor, spec.warmup_views, log)
    return predictor, info


def _control_loop(conn, pipeline, in_ring: SlotRing, predictor, send,
                  closing: threading.Event) -> dict | None:
    """Serve the parent's messages until ``close`` (returns the final stats) or a closed pipe (None)."""
    next_stats = 0.0
    copy_out = image_copier(predictor)
    while True:
        now = time.monotonic()
        try:
            if now >= next_stats:
                send(("stats", _stats(pipeline, predictor)))
                next_stats = now + STATS_PERIOD_S
            if not conn.poll(STATS_PERIOD_S):
                continue
            msg = conn.recv()
        except (EOFError, OSError):
            closing.set()
            return None  # the parent is gone
        kind = msg[0]
        if kind == "frame":
            _, frame, layout = msg
            image = copy_out(in_ring.arrays(layout)["image"])  # a copy: the slot is free at once
            in_ring.release(layout.slot)
            pipeline.submit(replace(frame, image=image))
        elif kind == "reset":
            pipeline.reset(msg[1])
        elif kind == "config":
            pipeline.update_config(msg[1])
        elif kind == "close":
            drain = bool(msg[1])
            if not drain:
                closing.set()
            pipeline.close(timeout_s=float(msg[2]), drain=drain)
            return _stats(pipeline, predictor)


def image_copier(predictor):
    """How the control loop copies an image out of its slot: into pinned memory for a CUDA engine.

    The engine's device path then uploads it from there without another copy
    (:func:`~da3_ros.core.resampling.pinned_tensor`); elsewhere a plain numpy copy.
    """
    on_cuda = str(getattr(predictor, "device", "cpu")).startswith("cuda")
    if not on_cuda or not getattr(predictor, "device_io", False):
        return np.array
    from da3_ros.core.resampling import pinned_image

    def copy(src: np.ndarray) -> np.ndarray:
        out = pinned_image(src.shape)
        np.copyto(out, src)
        return out

    return copy


def _stats(pipeline, predictor) -> dict:
    """The pipeline's counters (one consistent snapshot) plus :func:`runtime_state`'s keys."""
    with pipeline.pipeline.lock:
        stats = pipeline.stats.as_dict()
    return stats | runtime_state(predictor)


def runtime_state(predictor) -> dict:
    """What ``/diagnostics`` reports of a loaded predictor besides the counters.

    Returns:
        ``{"gpu": {"allocated_mb", "peak_mb"} of this process, or None off CUDA,
        "compile": the background compile's state (``accelerate: auto``) in a line, or None}``.
    """
    gpu = None
    device = str(getattr(predictor, "device", "cpu"))
    if device.startswith("cuda"):
        from da3_ros.core.memory import cuda_memory_mb  # torch: only for a CUDA predictor

        gpu = cuda_memory_mb(device)
    status = getattr(getattr(predictor, "model", None), "status", None)
    return {"gpu": gpu, "compile": status.describe() if status is not None else None}
