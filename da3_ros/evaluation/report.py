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


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (tools write PNG files only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_samples(path: Path, samples: list[dict]) -> None:
    """Grid, one row per sample: image | prediction (scaled to metres) | truth | abs. relative error.

    A sample without truth (``gt`` None) shows image | prediction (its own units) only.
    """
    if not samples:
        return
    plt = pyplot()
    cols = 4 if any(s["gt"] is not None for s in samples) else 2
    fig, axes = plt.subplots(len(samples), cols, figsize=(3.25 * cols + 0.5, 2.8 * len(samples)),
                             squeeze=False)
    for row, s in zip(axes, samples):
        gt, pred = s["gt"], s["pred"]
        ref = pred if gt is None else gt
        finite = ref[np.isfinite(ref)]
        lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
        depth_kw = {"cmap": "turbo_r", "vmin": lo, "vmax": hi}
        panels = [(s["image"], f"{s['camera']} {s['stamp_ns']}", {}),
                  (pred, "prediction (m)" if gt is not None else "prediction (no truth)", depth_kw)]
        if gt is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                err = np.abs(pred - gt) / gt
            err_kw = {"cmap": "magma", "vmin": 0, "vmax": 0.25}
            panels += [(gt, "truth (m)", depth_kw), (err, f"abs rel error (mean {s['abs_rel']:.3f})", err_kw)]
        for ax in row[len(panels):]:
            ax.axis("off")
        for ax, (img, title, kw) in zip(row, panels):
            im = ax.imshow(img, **kw)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
            if kw:
                fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_trajectory(path: Path, est_xyz: np.ndarray, ref_xyz: np.ndarray, title: str) -> None:
    """Top (x-y) and side (x-z) views of the aligned estimate against the truth (metres).

    With an empty ``ref_xyz`` (no truth) the estimate alone, as it is.
    """
    if len(est_xyz) == 0:
        return
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, (i, j, name) in zip(axes, ((0, 1, "x-y (top)"), (0, 2, "x-z (side)"))):
        if len(ref_xyz):
            ax.plot(ref_xyz[:, i], ref_xyz[:, j], "k.-", ms=3, lw=1, label="truth")
        ax.plot(est_xyz[:, i], est_xyz[:, j], "r.-", ms=3, lw=1,
                label="estimate (aligned)" if len(ref_xyz) else "estimate")
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


def plot_consistency(path: Path, windows: list) -> None:
    """Per window: depth disagreement on re-predicted views (%), scale (log axis), compute time (ms).

    ``windows``: :class:`~da3_ros.evaluation.consistency.WindowRecord` in order.
    """
    if not windows:
        return
    plt = pyplot()
    idx = [w.index for w in windows]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    axes[0].plot(idx, [(math.exp(w.depth_residual) - 1) * 100 for w in windows], ".-")
    axes[1].semilogy(idx, [w.scale if w.scale > 0 else math.nan for w in windows], ".-")
    axes[2].plot(idx, [w.time_s * 1e3 for w in windows], ".-")
    extrapolated = [w.index for w in windows if w.method == "extrapolated"]
    names = ("depth disagreement on shared views (%)", "window scale (global / window units)",
             "window compute time (ms)")
    for ax, name in zip(axes, names):
        for x in extrapolated:
            ax.axvline(x, color="r", alpha=0.3, lw=1)
        ax.set_ylabel(name, fontsize=8)
        ax.grid(True, alpha=0.3)
    axes[2].set_xlabel("window (red lines: no overlap with the past, trajectory extrapolated)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
