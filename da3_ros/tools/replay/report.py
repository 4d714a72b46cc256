"""``da3-replay`` report: latency, rates, accounting against the node's diagnostics, memory trend."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from da3_ros.evaluation.report import json_safe, pyplot


def _stats_ms(values_s: list[float]) -> dict[str, float]:
    if not values_s:
        return dict.fromkeys(("mean", "p50", "p90", "p99", "max"), math.nan) | {"n": 0}
    a = np.asarray(values_s) * 1e3
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max()), "n": int(len(a))}


def _rate_hz(times: list[float]) -> float:
    if len(times) < 2:
        return math.nan
    span = max(times) - min(times)
    return (len(times) - 1) / span if span > 0 else math.nan


def node_counts(diag: dict[str, str]) -> dict:
    """The node's accounting from its last /diagnostics key/values (empty when none arrived)."""
    if not diag:
        return {}

    def num(key: str) -> int:
        try:
            return int(float(diag.get(key, "0")))
        except ValueError:
            return 0

    received = sum(num(k) for k in diag if k.startswith("input_count."))
    drops = {k[len("drops."):]: num(k) for k in diag if k.startswith("drops.")}
    processed, total = num("frames_processed"), num("drops_total")
    return {"received": received, "processed": processed, "drops_total": total, "drops": drops,
            "views_published": num("views_published"), "queue_len": num("queue_len"),
            "pending": max(0, received - processed - total), "state": diag.get("state", ""),
            "model": diag.get("model", ""), "message": diag.get("_message", "")}


def memory_trend(rows: list[dict]) -> dict:
    """RSS at start (after warm-up: median of the 2nd tenth) and end (median of the last tenth), slope."""
    rss = np.array([r["rss_mb"] for r in rows], dtype=float)
    t = np.array([r["t_s"] for r in rows], dtype=float)
    ok = np.isfinite(rss)
    out = {"samples": int(len(rows)), "rss_start_mb": math.nan, "rss_end_mb": math.nan,
           "rss_growth_mb": math.nan, "rss_slope_mb_per_min": math.nan,
           "gpu_allocated_max_mb": float(np.nanmax([r["gpu_allocated_mb"] for r in rows]))
           if rows and np.isfinite([r["gpu_allocated_mb"] for r in rows]).any() else math.nan}
    if ok.sum() >= 4:
        rss, t = rss[ok], t[ok]
        k = max(1, len(rss) // 10)
        out["rss_start_mb"] = float(np.median(rss[k:2 * k])) if len(rss) >= 2 * k + 1 else float(rss[0])
        out["rss_end_mb"] = float(np.median(rss[-k:]))
        out["rss_growth_mb"] = out["rss_end_mb"] - out["rss_start_mb"]
        half = len(rss) // 2
        if len(rss) - half >= 2 and np.ptp(t[half:]) > 0:
            out["rss_slope_mb_per_min"] = float(np.polyfit(t[half:] / 60.0, rss[half:], 1)[0])
    return out


def build_report(run, bag: str, node_exit_code: int | None) -> dict:
    """Everything ``da3-replay`` reports about one run (see the module docstring of replay)."""
    receipts = run.output_receipts()
    _, counts, diag = run.ros.snapshot()
    inputs = run.inputs
    stamps_in = {s for _, s, _ in inputs}
    latencies = [receipts[s] - t for _, s, t in inputs if s in receipts]
    matched = len(latencies)
    node = node_counts(diag)
    unmatched = len(set(receipts) - stamps_in)
    if node:
        lost = node["processed"] - matched  # the node published them, the recorder never got them
        accounted = (node["received"] == len(inputs) and lost == 0 and unmatched == 0
                     and node["processed"] + node["drops_total"] + node["pending"] == node["received"])
    else:
        lost, accounted = None, matched == len(inputs) and unmatched == 0
    by_cam: dict[str, int] = {}
    for cam, _, _ in inputs:
        by_cam[cam] = by_cam.get(cam, 0) + 1
    return {
        "bag": bag, "inputs": len(inputs), "inputs_by_camera": by_cam, "outputs_matched": matched,
        "inputs_without_output": len(inputs) - matched, "outputs_unmatched": unmatched,
        "lost_in_transport": lost, "all_accounted": bool(accounted),
        "latency_ms": _stats_ms(latencies), "output_rate_hz": _rate_hz(sorted(receipts.values())),
        "input_rate_hz": _rate_hz([t for _, _, t in inputs]), "played_s": run.play_end - run.play_start,
        "loops": run.loops, "messages_published": run.published_messages, "rate_factor": run.opts.rate,
        "recorded_counts": counts, "record_stride": run.opts.record_stride if run.opts.record else 0,
        "node": node, "node_diagnostics": diag,
        "memory": memory_trend(run.memory), "node_exit_code": node_exit_code,
    }


def write_outputs(out: Path, report: dict, run) -> None:
    """report.json, summary.md, latency.csv, memory.csv and memory.png."""
    (out / "report.json").write_text(json.dumps(json_safe(report), indent=2, sort_keys=True) + "\n")
    receipts = run.output_receipts()
    with open(out / "latency.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["camera", "stamp_ns", "published_wall_s", "output_wall_s", "latency_ms"])
        for cam, s, t in run.inputs:
            r = receipts.get(s)
            w.writerow([cam, s, f"{t:.6f}", "" if r is None else f"{r:.6f}",
                        "" if r is None else f"{(r - t) * 1e3:.3f}"])
    if run.memory:
        with open(out / "memory.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(run.memory[0]))
            w.writeheader()
            w.writerows(run.memory)
        _plot_memory(out / "memory.png", run.memory)
    _write_summary(out / "summary.md", report)


def _plot_memory(path: Path, rows: list[dict]) -> None:
    plt = pyplot()
    t = [r["t_s"] / 60.0 for r in rows]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(t, [r["rss_mb"] for r in rows], label="node RSS (MiB)")
    if any(math.isfinite(r["gpu_allocated_mb"]) for r in rows):
        ax.plot(t, [r["gpu_allocated_mb"] for r in rows], label="GPU allocated (MiB)")
    ax.set_xlabel("time (min)")
    ax.set_ylabel("MiB")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _write_summary(path: Path, r: dict) -> None:
    lat, node, mem = r["latency_ms"], r["node"], r["memory"]

    def f(v, unit=""):
        return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else (
            f"{v:.1f}{unit}" if isinstance(v, float) else f"{v}{unit}")

    lines = [f"# da3-replay of `{r['bag']}`", "",
             f"Played {r['messages_published']} messages ({r['inputs']} images) in {f(r['played_s'], ' s')} "
             f"at rate x{r['rate_factor']}, {r['loops']} loop(s).", "",
             "| | value |", "|---|---|",
             f"| images with output | {r['outputs_matched']} / {r['inputs']} |",
             f"| latency mean / p50 / p90 / max | {f(lat['mean'])} / {f(lat['p50'])} / {f(lat['p90'])} / "
             f"{f(lat['max'])} ms |",
             f"| output rate | {f(r['output_rate_hz'], ' Hz')} (input {f(r['input_rate_hz'], ' Hz')}) |",
             "| node received / processed / dropped / pending | "
             + " / ".join(str(node.get(k, "n/a"))
                          for k in ("received", "processed", "drops_total", "pending"))
             + " |",
             f"| node drops by reason | {node.get('drops', 'n/a')} |",
             f"| lost between node and recorder | {f(r['lost_in_transport'])} |",
             f"| every input accounted for | {r['all_accounted']} |",
             f"| node RSS start / end / growth | {f(mem['rss_start_mb'])} / {f(mem['rss_end_mb'])} / "
             f"{f(mem['rss_growth_mb'])} MiB ({f(mem['rss_slope_mb_per_min'])} MiB/min, 2nd half) |",
             f"| GPU allocated max | {f(mem['gpu_allocated_max_mb'], ' MiB')} |"]
    path.write_text("\n".join(lines) + "\n")
