"""The garbage collector in a live node: how many full collections, for ``/diagnostics``.

A full (generation 2) collection walks every tracked object while holding the GIL, so every
thread of the node stops for it: with torch, rclpy and a model loaded that is about 200,000
objects and 120-150 ms on the 2-core development machine. Measured there (bench/RESULTS.md, "The
garbage collector"): the one full collection of a run comes while the model loads; 60 s of
streaming at 15 Hz had none, so ``gc.freeze()`` after loading (which would shorten later full
collections to what was created since) changed nothing measurable and is not done. A
``gc.full_collections`` that grows while a robot streams is the case for it.

The counts come from ``gc.get_stats()`` (process-wide, since start), not from ``gc.callbacks``: a
callback is Python code run inside the collector, and an exception raised there (the stop
signal handler's :class:`~da3_ros.ros.stopping.StopRequested`, if SIGTERM lands then) is
printed and dropped, so the node would miss its stop.
"""

from __future__ import annotations

import gc


def gc_values() -> dict[str, str]:
    """``gc.full_collections`` (generation 2) and ``gc.collections`` (all generations), as strings."""
    stats = gc.get_stats()
    return {"gc.full_collections": str(stats[2]["collections"]),
            "gc.collections": str(sum(s["collections"] for s in stats))}
