"""Report files of an evaluation: PLY, summary, strict JSON and plots (no ROS, no bags)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def json_safe(v):
    """``v`` for strict JSON: NaN / inf -> None, numpy scalars -> Python, through dicts, lists, tuples."""
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_safe(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def human_bytes(n: float) -> str:
    """``1.7 GB``-style size (decimal units, as ``du --si`` and file managers show)."""
    for unit in ("B", "kB", "MB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} GB"


def folder_sizes(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """``{name: bytes}`` of the entries of ``folder``, largest first (``{}`` when there is none).

    Sub-folders are summed and their names end in ``/``; names in ``skip`` are left out.
    """
    if not folder.is_dir():
        return {}
    found = {}
    for child in folder.iterdir():
        if child.name in skip:
            continue
        files = [child] if child.is_file() else [p for p in child.rglob("*") if p.is_file()]
        found[child.name + ("/" if child.is_dir() else "")] = sum(p.stat().st_size for p in files)
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


class DepthPngWriter:
    """Depth maps as 16-bit PNG files ``<folder>/<camera>/<stamp_ns>.png`` (lossless, zlib-compressed).

    Pixel value = depth / ``unit``, 0 = no estimate, 65535 = beyond the range. ``unit`` is 1 mm for a
    metric model (the REP-118 ``16UC1`` convention); for a relative model it is fixed by the first
    map written (its 99th percentile maps to 16000, leaving 4x headroom) and holds for the whole run.
    :meth:`finish` writes ``units.json`` (``unit``, ``units``, ``maps``, ``saturated_pixels``).
    """

    def __init__(self, folder: Path, metric: bool):
        self.folder, self.metric = Path(folder), metric
        self.unit = 1e-3 if metric else math.nan
        self.maps = self.saturated = 0

    def write(self, camera: str, stamp_ns: int, depth: np.ndarray) -> None:
        """Write one (H, W) depth map (metres, or global model units)."""
        import cv2

        d = np.asarray(depth, dtype=np.float64)
        ok = np.isfinite(d) & (d > 0)
        if not math.isfinite(self.unit):
            p99 = float(np.percentile(d[ok], 99)) if ok.any() else 0.0
            self.unit = p99 / 16000.0 if p99 > 0 else 1e-3
        q = np.zeros(d.shape, dtype=np.uint16)
        q[ok] = np.clip(np.rint(d[ok] / self.unit), 1, 65535)
        self.saturated += int(np.count_nonzero(q == 65535))
        (self.folder / camera).mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(self.folder / camera / f"{int(stamp_ns)}.png"), q):
            raise OSError(f"cannot write a PNG into {self.folder / camera}")
        self.maps += 1

    def finish(self) -> None:
        """Write ``units.json`` next to the maps (nothing when none was written)."""
        import json

        if self.maps:
            units = "metres" if self.metric else "model units (the run's global scale)"
            info = {"unit": self.unit, "units": units,
                    "value": "depth = png_value * unit; 0 = no estimate; 65535 = out of range",
                    "maps": self.maps, "saturated_pixels": self.saturated}
            (self.folder / "units.json").write_text(json.dumps(info, indent=1) + "\n")


def write_ply(path: Path, points: np.ndarray, colors: np.ndarray, conf: np.ndarray) -> None:
    """Binary little-endian PLY with x y z (float32), red green blue (uint8), confidence (float32)."""
    n = len(points)
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                      ("blue", "u1"), ("confidence", "<f4")])
    rec = np.empty(n, dtype=dtype)
    for i, k in enumerate("xyz"):
        rec[k] = points[:, i]
    for i, k in enumerate(("red", "green", "blue")):
        rec[k] = colors[:, i]
    rec["confidence"] = conf
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              "property float confidence\nend_header\n")
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(rec.tobytes())


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4g}"
    return str(v)


_SAVE_WHERE = {"bag": "predictions/ (the node's topics)", "depth": "depth/ (16-bit PNG)",
               "cloud": "points.ply", "plots": "PNG plots"}


def _outputs_section(m: dict) -> list[str]:
    """Markdown lines: what the run wrote, how large, and what it left out."""
    lines = ["", "## Outputs", ""]
    lines += [f"- `{name}` {human_bytes(n)}" for name, n in m.get("outputs", {}).items()]
    saved = m.get("saved", {})
    if saved.get("bag") or saved.get("depth"):
        lines.append(f"- images and clouds of every {saved.get('stride', 1)}-th view kept (`--save-stride`)")
    off = [where for item, where in _SAVE_WHERE.items() if item in saved and not saved[item]]
    if off:
        lines.append(f"- not written (ask with `--save`): {', '.join(off)}")
    return lines


def write_summary(path: Path, m: dict) -> None:
    """Markdown summary of a metrics dict (see ``da3-eval``)."""
    lines = [f"# da3-eval: {m['model']} on `{m['bag']}`", "",
             f"Cameras: {', '.join(m['cameras'])}; model is {'metric' if m['is_metric'] else 'relative'}; "
             f"depth alignment: {m['depth_alignment']}; "
             f"trajectory alignment: {m['trajectory_alignment']}.", "",
             "| metric | value |", "|---|---|"]
    if m.get("partial"):
        lines[1:1] = ["", f"**PARTIAL RUN**: it failed ({m.get('error', '')}); everything below covers only "
                      "the frames before the failure."]
    for key in ("abs_rel", "rmse", "delta1", "ate", "rpe", "rpe_rot_deg", "trajectory_scale"):
        lines.append(f"| {key} | {_fmt(m.get(key, math.nan))} |")
    lines += ["", "| count | value |", "|---|---|"]
    for key in ("frames_read", "frames_processed", "frames_dropped", "frames_evaluated", "poses_evaluated",
                "windows", "points"):
        lines.append(f"| {key} | {m.get(key)} |")
    if m.get("dropped_by_reason"):
        lines.append(f"\nDropped by reason: {m['dropped_by_reason']}")
    lines.append(f"\n{m['frames_read']} frames in {m['elapsed_s']:.1f} s ({_fmt(m['fps'])} frames/s).")
    if m.get("notes"):
        lines += ["", *[f"- {n}" for n in m["notes"]]]
    lines += _outputs_section(m)
    path.write_text("\n".join(lines) + "\n")


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (tools write PNG files only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_samples(path: Path, samples: list[dict]) -> None:
    """Grid: image | prediction (scaled to metres) | truth | abs. relative error, one row per sample."""
    if not samples:
        return
    plt = pyplot()
    fig, axes = plt.subplots(len(samples), 4, figsize=(13, 2.8 * len(samples)), squeeze=False)
    for row, s in zip(axes, samples):
        gt, pred = s["gt"], s["pred"]
        finite = gt[np.isfinite(gt)]
        lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            err = np.abs(pred - gt) / gt
        for ax, img, title, kw in (
                (row[0], s["image"], f"{s['camera']} {s['stamp_ns']}", {}),
                (row[1], pred, "prediction (m)", {"cmap": "turbo_r", "vmin": lo, "vmax": hi}),
                (row[2], gt, "truth (m)", {"cmap": "turbo_r", "vmin": lo, "vmax": hi}),
                (row[3], err, f"abs rel error (mean {s['abs_rel']:.3f})", {"cmap": "magma", "vmin": 0,
                                                                           "vmax": 0.25})):
            im = ax.imshow(img, **kw)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
            if kw:
                fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_trajectory(path: Path, est_xyz: np.ndarray, ref_xyz: np.ndarray, title: str) -> None:
    """Top (x-y) and side (x-z) views of the aligned estimate against the truth (metres)."""
    if len(est_xyz) == 0:
        return
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, (i, j, name) in zip(axes, ((0, 1, "x-y (top)"), (0, 2, "x-z (side)"))):
        ax.plot(ref_xyz[:, i], ref_xyz[:, j], "k.-", ms=3, lw=1, label="truth")
        ax.plot(est_xyz[:, i], est_xyz[:, j], "r.-", ms=3, lw=1, label="estimate (aligned)")
        ax.set_title(name)
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_per_frame(path: Path, rows: list[dict], ate_per_pose: list[float]) -> None:
    """abs_rel, delta1 and ATE per evaluated frame over time."""
    if not rows:
        return
    plt = pyplot()
    t0 = min(r["stamp_ns"] for r in rows)
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    for cam in sorted({r["camera"] for r in rows}):
        rs = [r for r in rows if r["camera"] == cam]
        t = [(r["stamp_ns"] - t0) * 1e-9 for r in rs]
        axes[0].plot(t, [r["abs_rel"] for r in rs], ".-", label=cam)
        axes[1].plot(t, [r["delta1"] for r in rs], ".-", label=cam)
        axes[2].plot(t, [r.get("ate", math.nan) for r in rs], ".-", label=cam)
    for ax, name in zip(axes, ("abs_rel", "delta1", "position error after alignment (m)")):
        ax.set_ylabel(name, fontsize=8)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[2].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
