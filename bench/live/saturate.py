"""Saturation search: the highest camera rate at which at most ``max_drop`` of the frames are lost.

One node process for the whole search (:class:`LiveSession`). Each step sends at one rate for
``step_duration`` seconds, lets the outputs settle, and scores the frames *of that step* by their
stamps: a frame counts as published when its depth arrived; frames the node still holds at the
end of the step (its ``pending``: waiting in the windower for the next stride) count as neither;
the rest are lost (``drop_fraction``). The node's drop counters between the diagnostics before and
after the step give the reasons, its input counts how many never reached it
(``not_received_by_node``: best-effort DDS, a full subscription queue). Rates: doubling from
``start`` up to ``max`` until a step fails (halving down to ``min`` when the first one fails),
then ``refine`` bisection steps between the highest passing and the lowest failing rate.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.live import stats
from bench.live.report import camera_stats, frames_of, machine_cpu, score


def search(passes: Callable[[float], bool], start_hz: float, max_hz: float, min_hz: float,
           refine: int = 3) -> tuple[float | None, list[tuple[float, bool]]]:
    """Highest passing rate found and every ``(rate, passed)`` step, in the order run.

    ``passes(rate)`` runs one step. Rates are rounded to 0.01 Hz; the result lies in
    ``[min_hz, max_hz]`` or is None when even ``min_hz`` fails.
    """
    if not 0 < min_hz <= start_hz <= max_hz:
        raise ValueError("need 0 < min rate <= start rate <= max rate")
    steps: list[tuple[float, bool]] = []

    def step(rate: float) -> bool:
        ok = passes(rate)
        steps.append((rate, ok))
        return ok

    lo = hi = None
    rate = round(start_hz, 2)
    while True:
        if step(rate):
            lo = rate
            if rate >= max_hz:
                break
            rate = round(min(2 * rate, max_hz), 2)
        else:
            hi = rate
            break
    while lo is None:
        rate = round(max(hi / 2, min_hz), 2)
        if rate >= hi:
            return None, steps
        if step(rate):
            lo = rate
        else:
            hi = rate
    for _ in range(refine if hi is not None else 0):
        mid = round((lo + hi) / 2, 2)
        if mid in (lo, hi):
            break
        if step(mid):
            lo = mid
        else:
            hi = mid
    return lo, steps


def measure_step(session, rate_hz: float, duration_s: float, max_drop: float) -> dict:
    """Send one step at ``rate_hz``, settle, score its frames (see module docstring)."""
    before = session.recorder.latest_diagnostics()[1]
    log, marks = session.send(rate_hz, duration_s)
    session.settle(frames_of(log))
    after = session.recorder.latest_diagnostics()[1]
    sc = score(session.recorder, log)
    node_before, node_after = stats.node_counts(before), stats.node_counts(after)
    pending = node_after.get("pending", 0)
    received = node_after.get("received", 0) - node_before.get("received", 0)
    frac = stats.drop_fraction(sc["sent"], sc["published"], pending)
    return {"rate_hz": rate_hz, "frames_per_s": rate_hz * len(log.cameras), "sent": sc["sent"],
            "published": sc["published"], "pending": pending, "lost": sc["sent"] - sc["published"] - pending,
            "drop_fraction": frac, "passed": frac <= max_drop, "node_drops": stats.drops_delta(before, after),
            "not_received_by_node": sc["sent"] - received if after else None,
            "window_latency_ms": sc["window_latency_ms"], "depth_latency_ms": sc["depth_latency_ms"],
            "camera": camera_stats(log), "cpu": machine_cpu(marks[0], marks[-1])}


def saturate(session, start_hz: float, max_hz: float, min_hz: float, step_s: float, refine: int,
             max_drop: float, warmup_s: float = 0.0, progress: Callable[[dict], None] | None = None) -> dict:
    """Run the search on ``session`` (ready); returns ``{"rate_found_hz", "frames_per_s", "steps"}``."""
    if warmup_s > 0:
        log, _ = session.send(start_hz, warmup_s)
        session.settle(frames_of(log))
    rows: list[dict] = []

    def passes(rate: float) -> bool:
        row = measure_step(session, rate, step_s, max_drop)
        rows.append(row)
        if progress is not None:
            progress(row)
        return row["passed"]

    found, _ = search(passes, start_hz, max_hz, min_hz, refine)
    cams = len(session.cameras)
    return {"rate_found_hz": found, "frames_per_s": None if found is None else found * cams,
            "max_drop": max_drop, "step_s": step_s, "start_hz": start_hz, "max_hz": max_hz, "min_hz": min_hz,
            "refine": refine, "warmup_s": warmup_s, "steps": rows}
