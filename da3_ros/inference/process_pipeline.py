"""The pipeline in a process of its own: the ROS process keeps only ROS work under its GIL.

On a GPU the node's own Python is the limit, not the network (bench/RESULTS.md, "Live node on
the GPU, second session"): the executor, the inference worker and the publish thread need
about 1.1 cores of Python under one GIL, and the worker spent 27 of its 74 ms a window waiting
for it. :class:`ProcessPipeline` has the interface of :class:`~da3_ros.core.pipeline.AsyncPipeline`
(``submit``, ``stats``, ``reset``, ``update_config``, ``close``) and runs the same pipeline (model,
windows, alignment, cloud, colours) in an inference process (:mod:`da3_ros.inference.worker_process`)
while the node's process decodes, publishes and serves ROS. Images and results cross in shared
memory (:mod:`da3_ros.inference.shm_ring`); only small messages cross the pipe.

Threads here: the caller's (``submit``: one copy of the image into a free input slot, a message),
and the receiver (:meth:`ProcessPipeline._receive`): results to ``on_result``, the worker's log
records to this process's ``logging``, its counters to :attr:`ProcessPipeline.stats`.

Accounting: every submitted frame is counted here as received. Frames that cannot be handed over
(every input slot taken: the inference process is far behind) drop here as ``queue_full``, those
that find no room in ``/dev/shm`` as ``shm_full`` (logged once, with the fix); after
:meth:`ProcessPipeline.close` as ``closed``; frames the inference process had when it died (killed,
crashed) as ``worker_lost``. The others are the worker's: its counters, merged, so
``received == processed + dropped + pending`` holds here as it does in-process (frames on their
way to the worker are pending).
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import fields, replace

from da3_ros.core.config import PipelineConfig
from da3_ros.core.frames import Frame
from da3_ros.core.results import PipelineStats, WindowResult
from da3_ros.inference.settings import InferenceSettings, PredictorInfo
from da3_ros.inference.shm_ring import SHM_HINT, SlotRing, ring_name, sweep_stale
from da3_ros.inference.worker_process import WorkerSpec, join_result, unframe, worker_main

LOG = logging.getLogger("da3_ros.inference.process")
#: Results in flight between the inference process and the publisher (written, not yet published):
#: the node's publish hand-over holds up to 3 (one publishing, two waiting), plus one being written.
OUT_SLOTS = 4
#: Input slots beyond the pipeline's queue (the worker copies each image out at once).
EXTRA_IN_SLOTS = 4
#: How often :meth:`ProcessPipeline.launch` looks for a stop request while the model loads, s.
LAUNCH_POLL_S = 0.1
_PIPELINE_STAT_FIELDS = {f.name for f in fields(PipelineStats)}


def use_process(setting: str, model: str, device: str) -> bool:
    """Whether the pipeline runs in an inference process: ``inference_process`` resolved.

    ``on`` / ``off`` as said; ``auto``: on when ``device`` (the first of ``devices``, or ``device``)
    is CUDA (``auto`` is resolved, which imports torch), off on the CPU, where the network itself
    is the limit and a second process would only add its start-up and memory. The ``truth``
    stand-in reads ROS topics, so it always runs in the node.
    """
    if setting == "off" or model == "truth":
        return False
    if setting == "on":
        return True
    if device == "auto":
        from da3_ros.inference.build import resolve_device

        device = resolve_device(device)
    return str(device).startswith("cuda")


class WorkerFailed(RuntimeError):
    """The inference process could not load or warm up the model (the message says why)."""


class ProcessPipeline:
    """An :class:`~da3_ros.core.pipeline.AsyncPipeline` whose worker is a process (module docstring).

    Args:
        config: the pipeline's configuration (sent to the worker; ``update_config`` forwards changes).
        inference: the model to build there.
        on_result: called on the receiver thread with each :class:`WindowResult`. Its depth,
            confidence, colour and cloud arrays are views of shared memory, valid while the
            result object lives (its slot is freed when the result is garbage): copy what must
            outlive it. Frames carry no pixels (``image`` of shape (H, W, 0)); views not to be
            published have None depth and confidence. May be set after construction.
        warmup_views: views of the warm-up window run after loading (0: none).
        fixed_frame: when set, each result also carries its published maps and cloud as the
            serialised messages to publish (``result.messages``, views of shared memory like
            the arrays; the cloud in this frame): built in the worker, the ROS process only
            sends them.
    """

    def __init__(self, config: PipelineConfig, inference: InferenceSettings,
                 on_result: Callable[[WindowResult], None] | None = None, warmup_views: int = 0,
                 fixed_frame: str | None = None) -> None:
        config.validate()
        self.config, self.on_result = config, on_result
        sweep_stale()
        uid = f"{id(self):x}"
        self._in = SlotRing(ring_name(f"in{uid}"), config.queue_capacity + EXTRA_IN_SLOTS)
        self._out = SlotRing(ring_name(f"out{uid}"), OUT_SLOTS)
        self._spec = WorkerSpec(inference, config, warmup_views, (self._in.name, self._in.slots),
                                (self._out.name, self._out.slots), sys.getswitchinterval(), fixed_frame)
        self._conn = None
        self._process = None
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()  # counters below, and the worker's latest stats
        self._submitted = 0
        self._shm_warned = False
        self._dropped: Counter = Counter()  # drops decided here
        self._worker_stats: dict = {}
        self._closing = False  # no more frames are taken
        self._discard = False  # results that still come are dropped (a close without drain)
        self._lost = False
        self._ready = threading.Event()
        self._closed = threading.Event()  # the worker sent its final counters
        self._ended = threading.Event()  # the receiver has stopped (closed, or the process is gone)
        self._load_result: PredictorInfo | str | None = None
        self._receiver: threading.Thread | None = None
        self.runtime: dict = {"gpu": None, "compile": None}  # the worker's GPU memory and compile state

    # -- start --------------------------------------------------------------------------
    def launch(self, should_stop: Callable[[], bool] = lambda: False) -> PredictorInfo:
        """Start the inference process and wait until its model is loaded and warmed up.

        Args:
            should_stop: polled every :data:`LAUNCH_POLL_S` (a stop signal); True ends the
                process and raises InterruptedError.

        Returns:
            What the worker reports about its predictor.

        Raises:
            WorkerFailed: the model could not be loaded (or the process died while loading).
        """
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: CUDA is safe there
        self._conn, child = ctx.Pipe(duplex=True)
        self._process = ctx.Process(target=worker_main, args=(child, self._spec), name="da3_inference",
                                    daemon=False)  # not daemonic: a sharded engine starts processes
        self._process.start()
        child.close()
        self._receiver = threading.Thread(target=self._receive, name="da3_results", daemon=True)
        self._receiver.start()
        try:
            while not self._ready.wait(LAUNCH_POLL_S):
                if should_stop():
                    raise InterruptedError("stopped while the inference process was loading the model")
        except BaseException:  # a stop request, or a signal handler's exception (StopRequested)
            self.close(timeout_s=5.0, drain=False)
            raise
        if not isinstance(self._load_result, PredictorInfo):
            reason = self._load_result or "the inference process ended while loading"
            self.close(timeout_s=5.0, drain=False)
            raise WorkerFailed(reason)
        return self._load_result

    @property
    def pid(self) -> int | None:
        """The inference process's id (None before :meth:`launch`)."""
        return self._process.pid if self._process is not None else None

    def start(self, name: str = "") -> None:
        """Nothing to do (the worker runs once :meth:`launch` returned); AsyncPipeline's interface."""

    # -- the AsyncPipeline interface --------------------------------------------------------
    def submit(self, frame: Frame) -> bool:
        """Hand a frame to the worker without blocking; False when it was dropped here (counted)."""
        with self._lock:
            self._submitted += 1
            reason = "closed" if self._closing else "worker_lost" if self._lost else None
            slot = None if reason else self._in.acquire()
            if slot is None:
                reason = reason or "queue_full"
                self._dropped[reason] += 1
                return False
        try:
            layout = self._in.write(slot, {"image": frame.image})
        except OSError as exc:  # no room in /dev/shm for the slot
            self._in.release(slot)
            with self._lock:
                self._dropped["shm_full"] += 1
            if not self._shm_warned:
                self._shm_warned = True
                LOG.error("%s: frames drop as shm_full. %s", exc, SHM_HINT)
            return False
        if not self._send(("frame", replace(frame, image=None), layout)):
            self._in.release(slot)
            with self._lock:
                self._dropped["worker_lost"] += 1
            return False
        return True

    def reset(self, reason: str = "reset") -> None:
        """Start windows and chaining over (see AsyncPipeline.reset); done by the worker in order."""
        self._send(("reset", reason))

    def update_config(self, updates: dict) -> None:
        """Set dynamic config fields here and in the worker (its next window reads them)."""
        for key, value in updates.items():
            setattr(self.config, key, value)
        self._send(("config", dict(updates)))

    @property
    def stats(self) -> PipelineStats:
        """The worker's counters merged with the drops decided here (see module docstring)."""
        with self._lock:
            worker = dict(self._worker_stats)
            submitted, dropped_here, lost = self._submitted, Counter(self._dropped), self._lost
            closed = self._closed.is_set()
        stats = PipelineStats(**{k: v for k, v in worker.items() if k in _PIPELINE_STAT_FIELDS})
        in_transit = submitted - sum(dropped_here.values()) - stats.received
        if lost:  # what the dead worker held, and what was on its way, is gone
            dropped_here["worker_lost"] += stats.pending + in_transit
            stats.pending = in_transit = 0
        elif closed and in_transit:  # sent while the close was on its way: never read
            dropped_here["closed"] += in_transit
            in_transit = 0
        stats.received = submitted
        stats.dropped = dict(Counter(stats.dropped) + dropped_here)
        stats.pending += in_transit
        return stats

    def close(self, timeout_s: float = 10.0, drain: bool = True) -> bool:
        """Stop the worker (``drain``: finish the queued frames first), end the process, free the rings.

        Returns:
            True when the process ended within ``timeout_s`` (else it was killed).
        """
        with self._lock:
            self._closing = True
            self._discard = not drain
        clean = True
        if self._process is not None:
            if not self._ready.is_set():  # still loading: nothing to finish, and it reads no message
                self._process.terminate()
            self._send(("close", drain, max(0.1, timeout_s - 1.0)))
            self._ended.wait(timeout_s)
            self._process.join(max(0.1, timeout_s / 4))
            if self._process.is_alive():
                clean = False
                self._process.kill()
                self._process.join(5.0)
            with self._lock:
                if not self._closed.is_set():
                    self._lost = True
            if self._receiver is not None:  # it sees the end of the pipe now that the process ended
                self._receiver.join(2.0)
            self._conn.close()
        self._in.close()
        self._out.close()
        return clean

    # -- the receiver thread ----------------------------------------------------------------
    def _send(self, msg) -> bool:
        with self._send_lock:
            try:
                self._conn.send(msg)
                return True
            except (OSError, ValueError, AttributeError):  # the process is gone (or never started)
                return False

    def _receive(self) -> None:
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                break
            kind = msg[0]
            if kind == "result":
                self._deliver(msg[1], msg[2])
            elif kind == "stats" or kind == "closed":
                self._take_stats(msg[1])
                if kind == "closed":
                    self._closed.set()
                    break
            elif kind == "log":
                logging.getLogger(msg[2]).log(msg[1], msg[3])
            elif kind in ("ready", "failed"):
                self._load_result = msg[1]
                self._ready.set()
        with self._lock:
            self._lost = not self._closed.is_set()
        if self._lost and not self._closing:
            LOG.error("the inference process ended unexpectedly (exit code %s); frames now drop as "
                      "worker_lost", self._process.exitcode if self._process else None)
        self._ready.set()
        self._ended.set()

    def _take_stats(self, stats: dict) -> None:
        self.runtime = {"gpu": stats.pop("gpu", None), "compile": stats.pop("compile", None)}
        with self._lock:
            self._worker_stats = stats

    def _deliver(self, light: WindowResult, layout) -> None:
        if self._discard or self.on_result is None:
            if not isinstance(layout, dict):
                self._out.release(layout.slot)
            return
        if isinstance(layout, dict):  # sent through the pipe (no room in /dev/shm)
            result = join_result(light, *unframe(layout))
        else:
            result = join_result(light, self._out.arrays(layout), self._out.messages(layout))
            weakref.finalize(result, self._out.release, layout.slot)  # the slot is reused once it is gone
        try:
            self.on_result(result)
        except Exception:  # noqa: BLE001 - a consumer bug must not stop the receiver
            LOG.exception("on_result raised")
        del result
