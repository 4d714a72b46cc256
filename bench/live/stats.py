"""Pure numbers of the live bench: latency percentiles, rates, frame accounting, diagnostics deltas.

Times are seconds (wall clock, ``time.time()`` of this machine, the clock the camera stamps with);
latencies are reported in milliseconds. A "frame" is one image of one camera: a rig of N cameras
sends N frames per stamp. The node's counts come from its ``/diagnostics`` key/values
(``da3-replay``'s ``node_counts``: ``received``, ``processed``, ``drops`` by reason,
``pending``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from da3_ros.tools.replay.report import node_counts

__all__ = ["account", "drop_fraction", "drops_delta", "latency_summary", "node_counts", "rate_hz",
           "receipt_latencies"]


def latency_summary(values_s: Iterable[float]) -> dict:
    """``{"n", "mean", "p50", "p90", "max"}`` in ms of latencies given in seconds (NaN when none)."""
    a = np.asarray([v for v in values_s if math.isfinite(v)], dtype=float) * 1e3
    if a.size == 0:
        return {"n": 0, "mean": math.nan, "p50": math.nan, "p90": math.nan, "max": math.nan}
    p50, p90 = np.percentile(a, [50, 90])
    return {"n": int(a.size), "mean": float(a.mean()), "p50": float(p50), "p90": float(p90),
            "max": float(a.max())}


def rate_hz(times_s: Iterable[float]) -> float:
    """Messages per second over the span of their receipt times: ``(n - 1) / span`` (NaN for < 2)."""
    t = sorted(times_s)
    if len(t) < 2 or t[-1] <= t[0]:
        return math.nan
    return (len(t) - 1) / (t[-1] - t[0])


def receipt_latencies(receipts: Iterable[tuple[int, float]], first_only: bool = True,
                      min_stamp_ns: int = 0) -> list[float]:
    """Receipt time minus header stamp (s) of ``(stamp_ns, receipt_s)`` pairs.

    Args:
        receipts: one pair per message received.
        first_only: count each stamp once (its first receipt), as a consumer would see it.
        min_stamp_ns: ignore stamps before this (the warm-up).
    """
    seen: set[int] = set()
    out = []
    for stamp, t in receipts:
        if stamp < min_stamp_ns or (first_only and stamp in seen):
            continue
        seen.add(stamp)
        out.append(t - stamp * 1e-9)
    return out


def drops_delta(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, int]:
    """Drops by reason that grew between two diagnostics key/value snapshots (``drops.<reason>``)."""
    def drops(diag):
        return {k: int(float(v)) for k, v in diag.items() if k.startswith("drops.") and _is_number(v)}

    b, a = drops(before), drops(after)
    return {k[len("drops."):]: n - b.get(k, 0) for k, n in sorted(a.items()) if n - b.get(k, 0)}


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def account(sent: int, published: int, node: Mapping) -> dict:
    """Every frame sent in exactly one bucket, from the recorder's count and the node's final counts.

    Buckets: ``published`` (depth received by the recorder), ``processed_not_recorded`` (the node
    processed it, the recorder never got its depth), ``dropped.<reason>`` (the node's drops),
    ``pending_in_node`` (received, neither processed nor dropped yet: queued, or in the windower's
    history waiting for the next stride), ``not_received_by_node`` (lost between camera and node:
    best-effort DDS, a full subscription queue). Without node counts (no /diagnostics) the rest is
    ``unexplained``.

    Args:
        sent: frames sent (sets x cameras).
        published: distinct (camera, stamp) pairs seen on ``~/<camera>/depth``.
        node: :func:`node_counts` of the final diagnostics (may be empty).

    Returns:
        ``{"sent", "buckets": {...}, "adds_up": bool, "published_pct"}``; ``adds_up`` is True when
        every bucket is >= 0 and they sum to ``sent``.
    """
    if node:
        buckets = {"published": published,
                   "processed_not_recorded": node["processed"] - published,
                   **{f"dropped.{r}": int(n) for r, n in sorted(node.get("drops", {}).items()) if n},
                   "pending_in_node": node["pending"],
                   "not_received_by_node": sent - node["received"]}
        # node_counts clamps pending at 0: keep the identity honest when the node over-counts
        over = node["processed"] + node["drops_total"] + node["pending"] - node["received"]
        if over:
            buckets["node_overcount"] = -over
    else:
        buckets = {"published": published, "unexplained": sent - published}
    ok = all(v >= 0 for v in buckets.values()) and sum(buckets.values()) == sent
    if not node:
        ok = ok and buckets["unexplained"] == 0
    return {"sent": sent, "buckets": buckets, "adds_up": bool(ok),
            "published_pct": 100.0 * published / sent if sent else math.nan}


def drop_fraction(sent: int, published: int, pending: int) -> float:
    """Share of ``sent`` frames neither published nor still pending in the node (0 when none sent)."""
    if sent <= 0:
        return 0.0
    return max(0, sent - published - max(pending, 0)) / sent
