"""summary.md of a ``da3-eval`` run: every section, and why a section is absent when it is.

Sections: ground truth, depth against the truth, trajectory against the truth, consistency between
windows, the estimated trajectory, rates and latency, counts, notes, outputs. A section that needs
ground truth the bag does not have says which topic it would need instead of showing ``n/a`` rows.
"""

from __future__ import annotations

import math
from pathlib import Path

from da3_ros.evaluation.consistency import percent
from da3_ros.evaluation.report import human_bytes

_SAVE_WHERE = {"bag": "predictions/ (the node's topics)", "depth": "depth/ (16-bit PNG)",
               "cloud": "points.ply", "plots": "PNG plots"}


def fmt(v, unit: str = "") -> str:
    """A number for a table: ``n/a`` for None / NaN, 4 significant digits for floats."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return (f"{v:.4g}" if isinstance(v, float) else str(v)) + unit


def _table(rows: list[tuple[str, str]], head: tuple[str, str] = ("", "value")) -> list[str]:
    return [f"| {head[0]} | {head[1]} |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


_TRUTH_SECTIONS = (
    ("Depth against ground truth", ("abs_rel", "rmse", "delta1"), "frames_evaluated",
     "{} frames scored, depth alignment: {depth_alignment}.",
     "Not scored: no camera has `<ns>/depth_gt` (sensor_msgs/Image 32FC1, metres, NaN = none, the stamps of "
     "the images; `da3-synth` writes it). abs_rel, rmse, delta1, the truth and error columns of samples.png "
     "and per_frame.png need it."),
    ("Trajectory against ground truth", ("ate", "rpe", "rpe_rot_deg", "trajectory_scale"), "poses_evaluated",
     "{} poses, alignment: {trajectory_alignment}.",
     "Not scored: no camera has `<ns>/pose_gt` (geometry_msgs/PoseStamped of the camera's optical frame, the "
     "stamps of the images). ATE, RPE, truth_<camera>.tum and the truth line of trajectory.png need it."),
)


def _truth_sections(m: dict) -> list[str]:
    lines = []
    for title, keys, count, done, absent in _TRUTH_SECTIONS:
        lines += [f"## {title}", ""]
        if m[count]:
            lines += _table([(k, fmt(m.get(k, math.nan))) for k in keys], ("metric", "value"))
            lines += ["", done.format(m[count], **m), ""]
        else:
            lines += [absent, ""]
    return lines[:-1]


def _consistency_section(m: dict) -> list[str]:
    c = m["consistency"]
    d, p, st, wt = c["depth_residual"], c["pose_residual"], c["scale_step"], c["window_time_s"]
    scale = ("n/a: a metric model is aligned in SE(3), its scale is fixed" if m["is_metric"] else
             f"{fmt(percent(st['median']), ' %')} / {fmt(percent(st['max']), ' %')} ({st['n']} steps)")
    lines = ["## Consistency between windows (needs no ground truth)", ""]
    lines += _table([
        ("depth disagreement on re-predicted views, median / p90", f"{fmt(percent(d['median']), ' %')} / "
         f"{fmt(percent(d['p90']), ' %')} ({d['n']} windows)"),
        ("camera-centre disagreement on re-predicted views, median",
         fmt(p["median"], f" {c['trajectory_units']}")),
        ("scale change between consecutive windows, median / max", scale),
        ("windows aligned on shared views / extrapolated (no overlap)",
         f"{c['windows_aligned']} / {c['windows_extrapolated']} of {c['windows']}"),
    ])
    lines += ["", "Each window re-predicts views that earlier windows published. Depth disagreement: median "
              "|log(published / re-predicted depth)| on those views after the window's scale is fitted "
              "(temporal flicker). Scale change: how much the model's own scale jumps from one window to the "
              "next, which the chaining absorbs. Extrapolated windows share no view with the past: the "
              "trajectory is a constant-velocity guess there. Per window: windows.csv, consistency.png.",
              "", "## Estimated trajectory", ""]
    lines += ["| camera | poses | length | duration | speed |", "|---|---|---|---|---|"]
    u = c["trajectory_units"]
    for cam, t in c["trajectory"].items():
        lines.append(f"| {cam} | {t['poses']} | {fmt(t['length'], ' ' + u)} | {fmt(t['duration_s'], ' s')} | "
                     f"{fmt(t['speed'], f' {u}/s')} |")
    lines += ["", "## Rates and latency", ""]
    rates = [(f"{cam} frames published", f"{fmt(t['rate_hz'], ' Hz')} (bag time)")
             for cam, t in c["trajectory"].items()]
    ms = " / ".join(fmt(wt[k] * 1e3 if wt["n"] else math.nan) for k in ("mean", "median", "p90", "max"))
    lines += _table([*rates, ("processing", f"{fmt(c['processing_fps'], ' frames/s')}, "
                                            f"{fmt(c['windows_per_s'], ' windows/s')}"),
                     ("window compute time mean / p50 / p90 / max", f"{ms} ms")])
    lines += ["", "Offline nothing waits in a queue, so a window's compute time is the latency it adds; the "
              "live node's end-to-end latency: `da3-replay`."]
    return lines


def _outputs_section(m: dict) -> list[str]:
    lines = ["## Outputs", ""]
    lines += [f"- `{name}` {human_bytes(n)}" for name, n in m.get("outputs", {}).items()]
    lines.append("- metrics.json, summary.md, per_frame.csv, windows.csv")
    saved = m.get("saved", {})
    if saved.get("bag") or saved.get("depth"):
        lines.append(f"- images and clouds of every {saved.get('stride', 1)}-th view kept (`--save-stride`)")
    off = [where for item, where in _SAVE_WHERE.items() if item in saved and not saved[item]]
    if off:
        lines.append(f"- not written (ask with `--save`): {', '.join(off)}")
    return lines


def write_summary(path: Path, m: dict) -> None:
    """Markdown summary of a ``da3-eval`` metrics dict."""
    lines = [f"# da3-eval: {m['model']} on `{m['bag']}`", ""]
    if m.get("partial"):
        lines += [f"**PARTIAL RUN**: it failed ({m.get('error', '')}); everything below covers only the "
                  "frames before the failure.", ""]
    lines += [f"Cameras: {', '.join(m['cameras'])}; model is {'metric' if m['is_metric'] else 'relative'}; "
              f"ground truth: {m.get('ground_truth', 'n/a')}.", "", *_truth_sections(m), "",
              *_consistency_section(m), "", "## Counts", ""]
    counts = ("frames_read", "frames_processed", "frames_dropped", "frames_evaluated", "poses_evaluated",
              "windows", "points")
    lines += _table([(k, str(m.get(k))) for k in counts], ("count", "value"))
    if m.get("dropped_by_reason"):
        lines.append(f"\nDropped by reason: {m['dropped_by_reason']}")
    lines.append(f"\n{m['frames_read']} frames in {m['elapsed_s']:.1f} s ({fmt(m['fps'])} frames/s).")
    if m.get("notes"):
        lines += ["", "## Notes", "", *[f"- {n}" for n in m["notes"]]]
    lines += ["", *_outputs_section(m)]
    path.write_text("\n".join(lines) + "\n")
