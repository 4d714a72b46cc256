"""DEBUG aid: periodic ``tracemalloc`` / object-count reports of the running node.

Enabled by the environment variable ``DA3_MEMTRACE=<report file>[:<period_s>]`` (period
default 30 s), read by ``da3_node``'s ``main``. Tracing starts one period after start-up (so
the heavy imports are not traced) and the second report is the baseline; every period after
that appends: the process RSS, the Python heap traced by ``tracemalloc``, the allocation sites
(file:line, one frame) that grew the most since the baseline, and the object types whose live
count grew the most (``gc.get_objects``, objgraph style). Growth of RSS without growth of the
traced heap points at native memory (DDS, malloc fragmentation).

It costs CPU (every allocation is traced): never enable it in production.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import tracemalloc
from collections import Counter

ENV = "DA3_MEMTRACE"


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of process ``pid`` (default: this one), MiB, from ``/proc/<pid>/status``.

    Raises:
        OSError: the process does not exist (any more).
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def type_counts() -> Counter:
    """Live objects tracked by the garbage collector, by type name."""
    return Counter(type(o).__name__ for o in gc.get_objects())


class MemTrace:
    """Writes a growth report to ``path`` every ``period_s`` on a daemon thread.

    Args:
        path: report file (appended).
        period_s: seconds between reports.
        top: allocation sites / types listed per report.
    """

    def __init__(self, path: str, period_s: float = 30.0, top: int = 15) -> None:
        self.path, self.period_s, self.top = path, float(period_s), int(top)
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._base = None
        self._base_types: Counter | None = None
        self._thread = threading.Thread(target=self._run, name="da3_memtrace", daemon=True)
        self._thread.start()

    def _snapshot(self):
        return tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)])

    def report(self) -> str:
        """One report (the first one only records the baseline)."""
        snap, types = self._snapshot(), type_counts()
        cur, peak = tracemalloc.get_traced_memory()
        lines = [f"=== t={time.monotonic() - self._t0:.1f}s rss={rss_mb():.1f}MiB "
                 f"traced={cur / 2**20:.1f}MiB (peak {peak / 2**20:.1f}) objects={sum(types.values())}"]
        if self._base is None:
            self._base, self._base_types = snap, types
            return "\n".join(lines + ["(baseline)"])
        for stat in snap.compare_to(self._base, "lineno")[: self.top]:
            lines.append(f"  {stat.size_diff / 2**10:+10.1f} KiB {stat.count_diff:+7d}  {stat.traceback[0]}")
        growth = types.copy()
        growth.subtract(self._base_types)
        lines.append("  -- object counts, growth since baseline:")
        lines.extend(f"  {n:+8d} {name} (now {types[name]})"
                     for name, n in growth.most_common(self.top) if n > 0)
        return "\n".join(lines)

    def _run(self) -> None:
        if self._stop.wait(self.period_s):
            return
        tracemalloc.start(1)
        while not self._stop.wait(self.period_s):
            text = self.report()
            with open(self.path, "a") as f:
                f.write(text + "\n")

    def stop(self) -> None:
        """Stop reporting and tracing."""
        self._stop.set()
        self._thread.join(timeout=self.period_s + 5)
        tracemalloc.stop()


def start_from_env() -> MemTrace | None:
    """A MemTrace when ``DA3_MEMTRACE`` is set, else None."""
    spec = os.environ.get(ENV, "")
    if not spec:
        return None
    path, _, period = spec.partition(":")
    return MemTrace(path, float(period) if period else 30.0)
