"""A window's second half on a thread of its own, beside the next window's network.

A window runs in two halves (:class:`~da3_ros.core.pipeline.Pipeline`): ``start_window``
(memory plan, network, the prediction's maps: the GPU's part) and ``finish_window`` (chaining
onto the published frames, the cloud, the viewing colours, the counters: mostly host work).
Run one after the other on one thread, the GPU idles while the host finishes a window: on an
H100 da3-small's worker spent 15 of its 20 ms a window outside the 5.4 ms network
(bench/RESULTS.md, "fifth session"). :class:`FinishingThread` takes each started window off the
worker, which starts the next network at once; the two halves of consecutive windows overlap.

Order and memory: windows are finished one at a time in the order they started (chaining needs
the previous window); at most ``depth`` started windows wait, then the worker blocks (frames wait
and drop at the pipeline's queue, counted). On CUDA the finishing thread queues its kernels on a
high-priority stream of its own, so they neither wait behind the next network on the worker's
stream nor make it wait, and each device map it reads is marked as used there
(``record_stream``) so the caching allocator does not hand its memory to the worker's stream
while a kernel of this thread may still read it. The prediction is complete when it arrives
(the engine waits for its stream before returning).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import torch

from da3_ros.core.handoff import HandoffThread

__all__ = ["FinishingThread"]

LOG = logging.getLogger("da3_ros.core.finishing")


class FinishingThread:
    """Calls ``finish(started)`` for each submitted started window, in order, on a thread of its own.

    Args:
        finish: finishes one :class:`~da3_ros.core.pipeline.StartedWindow` and delivers its
            result (``AsyncPipeline._finish``).
        on_error: called with any exception ``finish`` raises (the thread carries on).
        depth: started windows waiting at most; :meth:`submit` blocks while that many wait.
    """

    def __init__(self, finish: Callable[[object], None], on_error: Callable[[BaseException], None],
                 depth: int = 1) -> None:
        self._finish = finish
        self._handoff = HandoffThread(self._run_one, on_error, depth=depth)
        self._streams: dict[torch.device, torch.cuda.Stream] = {}
        self._started = False
        self._warned = False

    def start(self, name: str = "da3_finish") -> None:
        """Start the thread (once)."""
        self._handoff.start(name)
        self._started = True

    def submit(self, started) -> bool:
        """Hand a started window over (blocks while ``depth`` wait); False: not started or closed."""
        return self._started and self._handoff.submit(started)

    def wait_idle(self) -> None:
        """Return once every submitted window has been finished."""
        self._handoff.wait_idle()

    def close(self, timeout_s: float = 10.0) -> bool:
        """Finish what waits, then stop; True when the thread ended in time."""
        return self._handoff.close(timeout_s, drain=True)

    def _run_one(self, started) -> None:
        try:
            stream = self._side_stream(started.prediction)
        except Exception as exc:  # noqa: BLE001 - the window is still finished, on the current stream
            if not self._warned:
                LOG.warning("no CUDA stream of its own for the finishing thread (%s: %s): its work "
                            "queues behind the next window's network", type(exc).__name__, exc)
                self._warned = True
            stream = contextlib.nullcontext()
        with stream:
            self._finish(started)

    def _side_stream(self, pred):
        """On CUDA: this thread's stream as the current one, the prediction's maps marked for it."""
        maps = pred.device_maps
        tensors = [] if maps is None else [t for t in (*maps.depth, *maps.confidence, *maps.images)
                                           if isinstance(t, torch.Tensor)]
        if not tensors or tensors[0].device.type != "cuda":
            return contextlib.nullcontext()
        device = tensors[0].device
        stream = self._streams.get(device)
        if stream is None:  # a higher priority than the default 0: small kernels, ahead of the network's
            stream = self._streams[device] = torch.cuda.Stream(device, priority=-1)
        for t in tensors:
            t.record_stream(stream)
        return torch.cuda.stream(stream)
