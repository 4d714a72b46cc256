"""The one object the node and the tools feed frames into.

Data flow::

    Frame ──► Pipeline.push / AsyncPipeline.submit (seq assigned, counted as received)
          ──► [AsyncPipeline: bounded queue; overflow dropped as "queue_full" per queue_policy]
          ──► windowing.FrameWindower (validate, order/duplicates, multi-camera sync within
              slop_s, keyframes, temporal windows of num_view items every stride, dilations)
          ──► memory plan (predictor.plan, if it has one: fewer views, never a split window)
          ──► predictor.predict(frames) with OOM retry (memory.run_with_oom_retry)
          ──► [AsyncPipeline with finish_thread: the started window goes to the finishing
              thread (core.finishing), in order, and the worker starts the next window's network]
          ──► alignment.WindowChainer (Sim(3)/SE(3) onto published frames, or known poses;
              pose_check.PoseCheck holds static or jumping windows)
          ──► WindowResult (global poses, depth in global units, is_new per view, fused cloud)

Accounting: every received frame ends as exactly one of ``processed`` (ran in at least one
successful window) or ``dropped[reason]``; until then it is ``pending`` (queued, of which there
are ``queue_len``, in the windower's history, or in a window still being finished). So
``received == processed + sum(dropped) + pending`` at every moment, and after ``flush()`` /
``close()`` pending and queue_len are 0.
Reasons: see ``windowing`` plus ``queue_full``, ``closed``, ``not_in_window`` (no window covered
it: stride > num_view or dilation gaps), ``memory`` (left out of a shrunk window and never
covered again), ``window_failed`` (the predictor raised), ``error`` (an unexpected bug).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from da3_ros.core import memory
from da3_ros.core.alignment import WindowChainer, frame_key
from da3_ros.core.cloud import window_cloud, window_cloud_torch
from da3_ros.core.config import PipelineConfig
from da3_ros.core.finishing import FinishingThread
from da3_ros.core.frames import Frame, WindowPrediction
from da3_ros.core.pose_check import PoseCheck
from da3_ros.core.results import PipelineStats, WindowResult, check_prediction
from da3_ros.core.rig import RigCalibration
from da3_ros.core.visualize import colorize_depth, colorize_depths_torch
from da3_ros.core.windowing import FrameWindower, Window, WindowerOutput

__all__ = ["AsyncPipeline", "Pipeline", "StartedWindow"]

LOG = logging.getLogger("da3_ros.core.pipeline")


@dataclass
class StartedWindow:
    """A window whose network ran, waiting to be finished (:meth:`Pipeline.finish_window`).

    Attributes:
        window: as the windower made it (all its frames, in flight until finished).
        prediction: the predictor's output for ``used``.
        used: the frames the network ran (fewer than the window's after a memory shrink).
        predict_s: seconds the first half took (memory plan, network, the prediction's maps).
    """

    window: Window
    prediction: WindowPrediction
    used: list[Frame]
    predict_s: float


class Pipeline:
    """Synchronous pipeline: ``push(frame)`` runs whatever windows the frame completes.

    Args:
        config: PipelineConfig (validated here).
        predictor: anything with ``predict(frames) -> WindowPrediction``, ``is_metric``, ``name``;
            optional ``plan(frames, min_views, group) -> memory.MemoryPlan``.
        on_error: called with each exception a window raised (the pipeline carries on).
    """

    def __init__(self, config: PipelineConfig, predictor,
                 on_error: Callable[[BaseException], None] | None = None):
        config.validate()
        self.config, self.predictor, self.on_error = config, predictor, on_error
        self.group = len(config.cameras) if config.mode == "multicam" else 1
        self.windower = self._make_windower()
        self.chainer = self._make_chainer()
        self.stats = PipelineStats()
        self.lock = threading.RLock()
        self._pending: dict[int, str | None] = {}
        self._arrival: dict[int, float] = {}
        self._seq = 0
        self._latency_sum = self._window_time_sum = 0.0
        self._events: Counter = Counter()
        self._rng = np.random.default_rng(0)
        self._in_flight: Counter = Counter()  # seq -> started windows not finished yet holding it
        self._evicted: set[int] = set()  # seqs the windower let go while in flight
        #: Where started windows go to be finished (:class:`~da3_ros.core.finishing.FinishingThread`,
        #: set by AsyncPipeline); None: each window is finished at once, on the caller's thread.
        self.finisher = None

    def wait_finished(self) -> None:
        """Return once every started window has been finished (at once without a finisher)."""
        if self.finisher is not None:
            self.finisher.wait_idle()

    def _make_windower(self) -> FrameWindower:
        c = self.config
        return FrameWindower(c.mode, c.cameras, c.num_view, c.stride, c.dilations, c.slop_s,
                             c.keyframe_min_dt_s, c.keyframe_min_change)

    def _make_chainer(self) -> WindowChainer:
        mode, rig = self.config.align, RigCalibration(self.config.rig_extrinsics)
        if mode == "auto":  # a calibrated rig puts relative windows in metres (core.rig)
            metric_rig = rig.is_metric(self.config.cameras)
            mode = "se3" if getattr(self.predictor, "is_metric", False) else "mixed" if metric_rig else "sim3"
        # A window only holds frames of the windower's history (span items of `group` frames),
        # so the chainer never needs more published frames than that (at least two items, for
        # the constant-velocity extrapolation of windows that share no frame).
        span = max(self.windower.windower.span, 2)
        return WindowChainer(mode, keep_frames=min(self.config.keep_frames, span * self.group),
                             check=PoseCheck(self.config), rig=rig or None)

    # -- accounting -------------------------------------------------------------------------
    def admit(self, frame: Frame) -> Frame:
        """Count a frame as received; returns a shallow copy with its arrival ``seq`` set."""
        with self.lock:
            frame = replace(frame, seq=self._seq)
            self._seq += 1
            self.stats.received += 1
            self._pending[frame.seq] = None
            self._arrival[frame.seq] = time.perf_counter()
            self.stats.pending = len(self._pending)
            return frame

    def drop(self, frame: Frame, reason: str) -> None:
        """Resolve a pending frame as dropped with ``reason`` (no-op if already resolved)."""
        self._drop_seq(frame.seq, reason)

    def _drop_seq(self, seq: int, reason: str) -> None:
        with self.lock:
            if self._pending.pop(seq, "resolved") == "resolved":
                return
            self._arrival.pop(seq, None)
            self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + 1
            self.stats.pending = len(self._pending)

    def _mark_processed(self, frames: list[Frame]) -> None:
        with self.lock:
            for f in frames:
                if self._pending.pop(f.seq, "resolved") != "resolved":
                    self._arrival.pop(f.seq, None)
                    self.stats.processed += 1
            self.stats.pending = len(self._pending)

    def _note_failure(self, frames: list[Frame], reason: str) -> None:
        with self.lock:
            for f in frames:
                if f.seq in self._pending:
                    self._pending[f.seq] = reason

    def _error(self, exc: BaseException) -> None:
        self.note_error(exc)
        LOG.warning("window failed: %s", self.stats.last_error)
        if self.on_error is not None:
            self.on_error(exc)

    def note_error(self, exc: BaseException) -> None:
        """Count a failed window in ``stats.errors`` / ``last_error`` (its frames stay as they are)."""
        with self.lock:
            self.stats.errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next admitted frame gets."""
        return self._seq

    def restart(self, before_seq: int, reason: str) -> None:
        """Fresh windowing and chaining; pending frames admitted before ``before_seq`` drop (``reason``).

        Statistics (counts, latencies) carry on. Call between windows (the worker does); started
        windows are finished first, on the old chain.
        """
        self.wait_finished()
        with self.lock:
            for seq in [q for q in self._pending if q < before_seq]:
                self._drop_seq(seq, reason)
            self._events.update(self.windower.events)  # keep the old windower's counts
            self.windower = self._make_windower()
            self.chainer = self._make_chainer()
            self._events["restarts"] += 1

    def discard_pending(self, reason: str) -> None:
        """Drop every pending frame with ``reason`` (a pipeline that will never run again)."""
        with self.lock:
            for seq in list(self._pending):
                self._drop_seq(seq, reason)

    # -- public API ---------------------------------------------------------------------------
    def push(self, frame: Frame) -> list[WindowResult]:
        """Feed one frame (synchronously); returns the windows it completed, in order."""
        return self.process_admitted(self.admit(frame))

    def process_admitted(self, frame: Frame) -> list[WindowResult]:
        """Run an already-admitted frame through windowing, prediction and alignment."""
        try:
            out = self.windower.push(frame)
        except Exception as exc:  # noqa: BLE001 - a bug here must not stop the stream
            self._error(exc)
            self.drop(frame, "error")
            return []
        return self._handle(out)

    def flush(self) -> list[WindowResult]:
        """End of stream: run a last window over pending frames; resolves every pending frame."""
        self.wait_finished()  # frames of windows still finishing are not left over
        out = self.windower.flush(lambda f: f.seq in self._pending)
        results = self._handle(out)
        self.wait_finished()
        with self.lock:
            for seq in list(self._pending):  # safety net: nothing stays pending after a flush
                self._drop_seq(seq, "not_in_window")
        return results

    def _handle(self, out: WindowerOutput) -> list[WindowResult]:
        for f, reason in out.dropped:
            self.drop(f, reason)
        results = []
        for window in out.windows:
            started = self.start_window(window)
            if started is None:
                continue
            if self.finisher is None or not self.finisher.submit(started):  # closed: finish here
                result = self.finish_window(started)
                if result is not None:
                    results.append(result)
        for f in out.evicted:
            with self.lock:
                if self._in_flight.get(f.seq):  # its window is still finishing: resolved there
                    self._evicted.add(f.seq)
                    continue
                reason = self._pending.get(f.seq)
            self.drop(f, reason or "not_in_window")
        with self.lock:
            self.stats.events = dict(self._events + self.windower.events)
        return results

    # -- one window ---------------------------------------------------------------------------
    def _shrink_for_memory(self, frames: list[Frame], shared: list[bool]) -> list[int]:
        plan_fn = getattr(self.predictor, "plan", None)
        if not self.config.memory_planning or plan_fn is None:
            return list(range(len(frames)))
        plan = plan_fn(frames, min_views=self.config.min_views, group=self.group)
        if not plan.shrunk:
            return list(range(len(frames)))
        if not self._events["memory_shrunk"]:
            LOG.warning("%s (further shrinks counted in stats.events['memory_shrunk'])", plan.message)
        self._events["memory_shrunk"] += 1
        return memory.select_views(len(frames), plan.num_views, shared, self.group)

    def _predict(self, window: Window) -> tuple[WindowPrediction, list[Frame]]:
        frames = window.frames
        shared = [frame_key(f) in self.chainer.published for f in frames]
        keep = self._shrink_for_memory(frames, shared)
        frames, shared = [frames[i] for i in keep], [shared[i] for i in keep]

        def on_retry(n_from: int, n_to: int, exc: BaseException) -> None:
            self._events["oom_retries"] += 1
            LOG.warning("out of memory with %d views, retrying with %d", n_from, n_to)

        pred, kept = memory.run_with_oom_retry(self.predictor.predict, frames, shared, self.group,
                                               self.config.min_views, on_retry=on_retry)
        used = [frames[i] for i in kept]
        check_prediction(pred, used)
        return pred, used

    def start_window(self, window: Window) -> StartedWindow | None:
        """A window's first half: the memory plan and the network (None: it failed, accounted).

        Its frames count as in flight until :meth:`finish_window`: the windower may evict them
        meanwhile (the finishing thread is a window behind), and they are resolved only then.
        """
        t0 = time.perf_counter()
        try:
            pred, used = self._predict(window)
        except memory.WindowTooLargeError as exc:
            self._note_failure(window.frames, "memory")
            self._error(exc)
            return None
        except Exception as exc:  # noqa: BLE001 - the stream goes on; frames are accounted
            self._note_failure(window.frames, "window_failed")
            self._error(exc)
            return None
        with self.lock:
            self._in_flight.update(f.seq for f in window.frames)
        return StartedWindow(window, pred, used, time.perf_counter() - t0)

    def finish_window(self, started: StartedWindow) -> WindowResult | None:
        """A window's second half: chaining, cloud, colours and counters (None: it failed, accounted).

        Windows must be finished in the order they started (chaining builds on the previous one).
        """
        try:
            return self._finish(started)
        finally:
            self._land(started.window.frames)

    def _finish(self, started: StartedWindow) -> WindowResult | None:
        window, pred, used = started.window, started.prediction, started.used
        t1 = time.perf_counter()
        try:
            aligned, al, is_new = self.chainer.chain(pred, in_place=True)  # pred is not used again
        except Exception as exc:  # noqa: BLE001 - the stream goes on; frames are accounted
            self._note_failure(window.frames, "window_failed")
            self._error(exc)
            return None
        used_seq = {f.seq for f in used}
        self._note_failure([f for f in window.frames if f.seq not in used_seq], "memory")
        t2 = time.perf_counter()
        views = list(range(len(used))) if self.config.publish_all_views else list(np.nonzero(is_new)[0])
        cloud = self._cloud(aligned, views)
        t_cloud = time.perf_counter()
        colored = self._colored(aligned, views) if self.config.colorize else {}
        t3 = time.perf_counter()
        with self.lock:
            arrival = max(self._arrival.get(f.seq, -math.inf) for f in used)
        self._mark_processed(used)
        timings = dict(pred.timings_s, predict=started.predict_s, align=t2 - t1, cloud=t_cloud - t2,
                       colour=t3 - t_cloud, finish=t3 - t1, total=started.predict_s + t3 - t1)
        result = self._result(aligned, al, is_new, cloud, timings, used, len(window.frames), arrival)
        result.colored = colored
        return result

    def _land(self, frames: list[Frame]) -> None:
        """``frames``' window is done: those the windower evicted meanwhile are resolved now."""
        with self.lock:
            for f in frames:
                self._in_flight[f.seq] -= 1
                if self._in_flight[f.seq] <= 0:
                    del self._in_flight[f.seq]
                    if f.seq in self._evicted:
                        self._evicted.discard(f.seq)
                        self._drop_seq(f.seq, self._pending.get(f.seq) or "not_in_window")

    def _cloud(self, pred: WindowPrediction, views: list[int]):
        """The window's cloud: on the predictor's device when its maps live there, else numpy."""
        if pred.device_maps is not None:
            return window_cloud_torch(pred, views, self.config)
        return window_cloud(pred, views, self.config, self._rng)

    def _colored(self, pred: WindowPrediction, views: list[int]) -> dict[int, np.ndarray]:
        """Viewing images of ``views``' depth (on the device when the maps are there)."""
        near, far = self.config.colorize_range
        maps = pred.device_maps
        if maps is None:
            return {i: colorize_depth(pred.depth[i], near, far) for i in views}
        groups: dict[tuple[int, int], list[int]] = {}
        for i in views:
            groups.setdefault(tuple(maps.depth[i].shape), []).append(i)
        out = {}
        for idx in groups.values():  # one pass and one host copy per size, not per view
            rgb = colorize_depths_torch(torch.stack([maps.depth[i] for i in idx]) * maps.depth_scale,
                                        near, far).cpu().numpy()
            out.update({i: rgb[j] for j, i in enumerate(idx)})
        return {i: out[i] for i in views}

    def _result(self, aligned, al, is_new, cloud, timings, used, requested, arrival) -> WindowResult:
        pts, cols, conf = cloud
        with self.lock:
            s = self.stats
            now = time.perf_counter()
            lat = max(0.0, now - arrival) if np.isfinite(arrival) else 0.0
            s.windows += 1
            self._latency_sum += lat
            self._window_time_sum += timings["total"]
            s.latency_last_s, s.latency_max_s = lat, max(s.latency_max_s, lat)
            s.latency_mean_s = self._latency_sum / s.windows
            s.window_time_mean_s = self._window_time_sum / s.windows
            s.add_stage_times(timings)
            if al.held:
                s.pose_held[al.held] = s.pose_held.get(al.held, 0) + 1
                s.last_pose_jump = al.held_reason if al.held == "jump" else s.last_pose_jump
            index = s.windows - 1
        return WindowResult(prediction=aligned, world_from_cam=aligned.world_from_cam, scale=al.scale,
                            residual=al.residual, drift=al.drift, is_new=is_new, points_world=pts,
                            colors=cols, points_conf=conf, window_index=index, timings_s=timings,
                            alignment=al, shrunk_from=requested if len(used) < requested else 0)


class AsyncPipeline:
    """A Pipeline on a worker thread behind a bounded queue; ``submit`` never blocks.

    The owner starts the worker explicitly (:meth:`start`) and stops it with :meth:`close`;
    :meth:`reset` (stamps jumped back: a looping bag) restarts windowing and chaining on the
    same worker, and :meth:`update_config` changes the dynamic settings under the lock. With
    ``config.finish_thread`` the worker runs each window's network and a finishing thread
    (:mod:`da3_ros.core.finishing`, started with the worker) chains it, builds its cloud and
    colours and delivers it, while the worker runs the next network.

    Args:
        config, predictor: as for :class:`Pipeline`.
        on_result: called with each WindowResult of the current epoch, in window order, on the
            finishing thread (on the worker without ``finish_thread``).
        on_error: called on either thread with exceptions from windows or ``on_result``.
    """

    def __init__(self, config: PipelineConfig, predictor, on_result: Callable[[WindowResult], None],
                 on_error: Callable[[BaseException], None] | None = None):
        self.pipeline = Pipeline(config, predictor, on_error=on_error)
        self.config, self.on_result, self.on_error = config, on_result, on_error
        self._finisher = None
        if config.finish_thread:  # chaining, cloud and colours beside the next window's network
            self._finisher = FinishingThread(self._finish, self.pipeline._error)
            self.pipeline.finisher = self._finisher
        self._queue: deque[Frame] = deque()
        self._cond = threading.Condition(self.pipeline.lock)
        self._closed = False
        self._reset_before_seq: int | None = None  # frames admitted before this seq belong to the old epoch
        self._thread: threading.Thread | None = None

    def start(self, name: str = "da3_inference") -> None:
        """Start the worker thread (once), and the finishing thread with ``finish_thread``."""
        if self._thread is None:
            if self._finisher is not None:
                self._finisher.start(f"{name}_finish")
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    @property
    def stats(self) -> PipelineStats:
        """Live statistics (``queue_len`` is current)."""
        with self._cond:
            self.pipeline.stats.queue_len = len(self._queue)
            return self.pipeline.stats

    def update_config(self, updates: dict) -> None:
        """Set config fields (the dynamic ones: read by the next window or submit) under the lock."""
        with self._cond:
            for key, value in updates.items():
                setattr(self.config, key, value)

    def submit(self, frame: Frame) -> bool:
        """Queue a frame without blocking; returns False when it was dropped at once (closed)."""
        with self._cond:
            frame = self.pipeline.admit(frame)
            if self._closed:
                self.pipeline.drop(frame, "closed")
                return False
            if len(self._queue) >= self.config.queue_capacity:
                if self.config.queue_policy == "drop_oldest":
                    self.pipeline.drop(self._queue.popleft(), "queue_full")
                else:  # keep_latest: the worker's next frame is the newest one
                    while self._queue:
                        self.pipeline.drop(self._queue.popleft(), "queue_full")
            self._queue.append(frame)
            self.pipeline.stats.queue_len = len(self._queue)
            self._cond.notify()
            return True

    def reset(self, reason: str = "reset") -> None:
        """Start over (windows, chaining) with the frames submitted from now on.

        Queued frames are dropped with ``reason``; the worker drops the frames still in its
        window history the same way before it takes the next frame, and a window already
        running finishes (its frames count as processed) without being delivered.
        """
        with self._cond:
            while self._queue:
                self.pipeline.drop(self._queue.popleft(), reason)
            self._reset_before_seq = self.pipeline.next_seq
            self._reset_reason = reason
            self._cond.notify()

    def _finish(self, started: StartedWindow) -> None:
        """The finishing thread's work for one window: finish it and deliver its result."""
        result = self.pipeline.finish_window(started)
        self._deliver([] if result is None else [result])

    def _deliver(self, results: list[WindowResult]) -> None:
        for r in results:
            with self._cond:
                stale = self._reset_before_seq is not None
            if stale:
                continue  # started before a reset: its frames are processed, its output is not wanted
            try:
                self.on_result(r)
            except Exception as exc:  # noqa: BLE001 - a consumer bug must not kill the worker
                self.pipeline._error(exc)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed and self._reset_before_seq is None:
                    self._cond.wait()
                before = self._reset_before_seq
                reset = None if before is None else (before, self._reset_reason)
                if reset is None and not self._queue:
                    break
                if reset is None:
                    frame = self._queue.popleft()
                    self.pipeline.stats.queue_len = len(self._queue)
            if reset is not None:  # outside the lock: the finishing thread needs it to finish
                self.pipeline.restart(*reset)
                with self._cond:
                    if self._reset_before_seq == reset[0]:  # not reset again meanwhile
                        self._reset_before_seq = None
                continue
            self._deliver(self.pipeline.process_admitted(frame))
        self._deliver(self.pipeline.flush())
        if self._finisher is not None:
            self._finisher.close()

    def close(self, timeout_s: float = 10.0, drain: bool = True) -> bool:
        """Stop accepting frames, process (``drain``) or drop (``closed``) the queue, flush, join.

        Returns:
            True when the worker finished within ``timeout_s`` (or was never started; then the
            queue is dropped here).
        """
        with self._cond:
            self._closed = True
            if not drain or self._thread is None:
                while self._queue:
                    self.pipeline.drop(self._queue.popleft(), "closed")
            self._cond.notify_all()
        if self._thread is None:
            self.pipeline.discard_pending("closed")
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()
