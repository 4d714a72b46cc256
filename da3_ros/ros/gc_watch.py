"""The garbage collector's pauses in a live node, for ``/diagnostics``.

A full (generation 2) collection walks every tracked object while holding the GIL, so every
thread of the node stops for it: with torch, rclpy and a model loaded that is about 200,000
objects and 120-150 ms on the 2-core development machine. :class:`GcWatch` times every
collection (``gc.callbacks``): ``gc.full_collections``, ``gc.pause_max_ms`` (longest collection of
any generation), ``gc.pause_total_ms``, ``gc.full_pause_last_ms`` (the latest full collection).

Measured there (bench/RESULTS.md, "The garbage collector"): the one full collection of a run
comes while the model loads; 60 s of streaming at 15 Hz had none, so ``gc.freeze()`` after
loading (which would shorten later full collections to what was created since) changed nothing
measurable and is not done. The counters say so on a robot too: a ``gc.full_collections`` that
grows while streaming, with ``gc.full_pause_last_ms`` near the latency spikes, is the case for it.
"""

from __future__ import annotations

import gc
import time


class GcWatch:
    """Times the collector's pauses from :meth:`install` to :meth:`remove` (process-wide)."""

    def __init__(self) -> None:
        self.full_collections = 0
        self.pause_max_ms = 0.0
        self.pause_total_ms = 0.0
        self.full_pause_last_ms = 0.0
        self._started: float | None = None

    def install(self) -> None:
        """Start timing collections (idempotent)."""
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def remove(self) -> None:
        """Stop timing collections."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def values(self) -> dict[str, str]:
        """The diagnostics key/values."""
        return {"gc.full_collections": str(self.full_collections),
                "gc.pause_max_ms": f"{self.pause_max_ms:.1f}",
                "gc.pause_total_ms": f"{self.pause_total_ms:.1f}",
                "gc.full_pause_last_ms": f"{self.full_pause_last_ms:.1f}"}

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self._started is None:
            return
        ms = 1000.0 * (time.perf_counter() - self._started)
        self._started = None
        self.pause_total_ms += ms
        self.pause_max_ms = max(self.pause_max_ms, ms)
        if info.get("generation") == 2:
            self.full_collections += 1
            self.full_pause_last_ms = ms
