"""Scores of a send (a whole run, its steady part, or one saturation step) and the run report.

A frame is ``(camera, stamp_ns)``; it is published when its ``~/<camera>/depth`` arrived.
Window latency: receipt of ``~/points`` minus its stamp (the window's newest view), first
receipt per stamp; per-view depth latency: receipt of ``~/<camera>/depth`` minus its stamp.
Both in ms (p50 / p90 / max). Rates are messages per second over the receipt times of the
messages whose stamps fall in the scored span (``/diagnostics``: over the send).
"""

from __future__ import annotations

import math
import os

from bench.live import stats
from bench.live.camera import SendLog
from bench.live.procstat import cpu_percent
from bench.live.recorder import Recorder


def frames_of(log: SendLog, from_ns: int = 0, to_ns: int | None = None) -> set[tuple[str, int]]:
    """``(camera, stamp)`` of every frame of ``log`` with ``from_ns <= stamp < to_ns``."""
    return {(c, s) for s in log.stamps_ns if s >= from_ns and (to_ns is None or s < to_ns)
            for c in log.cameras}


def camera_stats(log: SendLog) -> dict:
    """The camera's own timing: sets, frames, achieved rate, lag (send - stamp) in ms, late sets."""
    lags = log.lags_s()
    period = 1.0 / log.rate_hz if log.rate_hz > 0 else math.inf
    return {"cameras": len(log.cameras), "rate_hz": log.rate_hz, "duration_s": log.duration_s,
            "sets": len(log.stamps_ns), "frames": log.frames, "achieved_rate_hz": stats.rate_hz(log.send_s),
            "lag_ms": stats.latency_summary(lags), "late_sets": sum(lag > period for lag in lags)}


def score(rec: Recorder, log: SendLog, from_ns: int = 0, to_ns: int | None = None) -> dict:
    """Published share, latencies (window; depth over all views and per camera) and output rates of
    the frames of ``log`` stamped in [from, to)."""
    sent = frames_of(log, from_ns, to_ns)
    stamps = {s for _, s in sent}
    published = rec.published() & sent
    by_camera = {c: stats.receipt_latencies([(s, t) for s, t in rec.topic_receipts(rec.depth_topic(c))
                                             if s in stamps]) for c in rec.cameras}
    depth = [lat for lats in by_camera.values() for lat in lats]
    points_topic = f"/{rec.node_name}/points"
    window = stats.receipt_latencies([(s, t) for s, t in rec.topic_receipts(points_topic) if s in stamps])
    rates = {}
    for topic in rec.topics:
        if topic == "/diagnostics":
            continue
        times = [t for s, t in rec.topic_receipts(topic) if s in stamps]
        if topic in rec.subscribed():
            rates[topic] = stats.rate_hz(times) if len(times) > 1 else 0.0
    return {"sent": len(sent), "published": len(published),
            "published_pct": 100.0 * len(published) / len(sent) if sent else math.nan,
            "window_latency_ms": stats.latency_summary(window),
            "depth_latency_ms": stats.latency_summary(depth),
            "depth_latency_ms_by_camera": {c: stats.latency_summary(v) for c, v in by_camera.items()},
            "rates_hz": rates}


def run_report(rec: Recorder, log: SendLog, marks: list, warmup_s: float, final_diag: dict,
               thread_names: dict[int, str]) -> dict:
    """Everything a ``run`` reports but its command and configuration.

    Args:
        rec: the recorder after settling.
        log: the camera's send log.
        marks: session marks at the start of sending, at the end of the warm-up, at the end.
        warmup_s: seconds of frames sent but not scored (``steady``).
        final_diag: the node's diagnostics received after the outputs settled.
        thread_names: Python thread names by OS thread id (may be empty).
    """
    start_ns = log.stamps_ns[0] if log.stamps_ns else 0
    boundary_ns = start_ns + round(warmup_s * 1e9)
    node = stats.node_counts(final_diag)
    whole = score(rec, log)
    steady = score(rec, log, boundary_ns)
    steady["node_drops"] = stats.drops_delta(marks[1].diagnostics if warmup_s > 0 else {}, final_diag)
    unmatched = len(rec.published() - frames_of(log))
    diag_times = [t for t, _ in rec.diagnostics if marks[0].wall_s <= t <= marks[-1].wall_s]
    whole["rates_hz"]["/diagnostics"] = stats.rate_hz(diag_times)
    cpu_from = marks[1] if warmup_s > 0 else marks[0]
    return {
        "camera": camera_stats(log),
        "accounting": stats.account(log.frames, whole["published"], node) | {"outputs_unmatched": unmatched},
        "all": whole, "steady": steady,
        "node_counts": node,
        "gpu_mem_mb": {"allocated": _num(final_diag.get("gpu_mem_allocated_mb")),
                       "peak": _num(final_diag.get("gpu_mem_peak_mb"))},
        "cpu": {"steady": stats_cpu(cpu_from, marks[-1], thread_names),
                "all": stats_cpu(marks[0], marks[-1], thread_names),
                "machine_steady": machine_cpu(cpu_from, marks[-1])},
        "node_info": {k: final_diag.get(k, "") for k in ("model", "device", "dtype", "attention_backend",
                                                         "accelerate", "mode", "state")},
        "node_diagnostics": final_diag,
    }


def stats_cpu(a, b, names: dict[int, str]) -> dict:
    """Node CPU % per thread between two session marks (100 % = one core)."""
    return cpu_percent(a.threads, b.threads, b.wall_s - a.wall_s, names)


def machine_cpu(a, b) -> dict:
    """CPU % (100 = one core) of the whole machine, the node, this bench process and everything else
    between two session marks, and the load average at both: other load spoils a measurement."""
    dt = b.wall_s - a.wall_s
    spent = b.machine_s[1] - a.machine_s[1]
    busy = (b.machine_s[0] - a.machine_s[0]) / spent if spent > 0 else math.nan
    machine = 100.0 * busy * (os.cpu_count() or 1)
    node = cpu_percent(a.threads, b.threads, dt)["total_pct"]
    bench = cpu_percent(a.bench_threads, b.bench_threads, dt)["total_pct"]
    return {"cores": os.cpu_count(), "machine_pct": machine, "node_pct": node, "bench_pct": bench,
            "other_pct": machine - node - bench, "load_1min": [a.load_1min, b.load_1min]}


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def summary_line(r: dict) -> str:
    """One line: sent / published / drops, steady latencies and points rate, CPU, ready time."""
    acc, st, cam, cpu = r["accounting"], r["steady"], r["camera"], r["cpu"]
    buckets = acc["buckets"]
    drops = {k[len("dropped."):]: v for k, v in buckets.items() if k.startswith("dropped.")}
    rest = {k: v for k, v in buckets.items() if v and k != "published" and not k.startswith("dropped.")}
    wl, dl = st["window_latency_ms"], st["depth_latency_ms"]
    pts = st["rates_hz"].get(f"/{r['node_name']}/points", math.nan)
    return (f"{r['node']} {cam['cameras']}x{cam['rate_hz']:g} Hz: sent {acc['sent']} published "
            f"{buckets['published']} ({acc['published_pct']:.1f}%) dropped {drops or 0} other {rest or 0}"
            f" | steady {st['published']}/{st['sent']} ({st['published_pct']:.1f}%), window p50/p90/max "
            f"{wl['p50']:.1f}/{wl['p90']:.1f}/{wl['max']:.1f} ms, depth p50/p90/max {dl['p50']:.1f}/"
            f"{dl['p90']:.1f}/{dl['max']:.1f} ms, points {pts:.2f} Hz"
            f" | node cpu {cpu['steady']['total_pct']:.0f}% (machine "
            f"{cpu['machine_steady']['machine_pct']:.0f}%, other {cpu['machine_steady']['other_pct']:.0f}%)"
            f" | ready {r['time_to_ready_s']:.1f} s"
            f" | accounted {acc['adds_up']}")
