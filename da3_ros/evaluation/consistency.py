"""Statistics of a run that need no ground truth: how well overlapping windows agree, and rates.

Every window re-predicts views that earlier windows already published; the chainer fits the window
onto them (:class:`~da3_ros.core.alignment.Alignment`) and measures what is left over:

- **depth consistency**: ``depth_residual`` = median |log(published / aligned depth)| over the
  shared views' pixels: how much a re-predicted view disagrees with what was published, after the
  window's scale was fitted (0.05 is about 5 %). Temporal flicker of the depth shows up here.
- **pose consistency**: ``residual`` = RMS camera-centre disagreement on the shared views (global
  units), ``rot_residual_deg`` the largest rotation disagreement.
- **scale drift between windows**: ``scale`` is the factor that brought the window into the global
  scale; |log(scale_k / scale_k-1)| between consecutive windows aligned on shared views is how
  much the model's own scale jumps from one window to the next, which the chain has to absorb (0
  for a model consistent in time). Metric models are aligned in SE(3), their scale is fixed at 1.
- **extrapolated windows** (``method == "extrapolated"``): no view shared with the past, the
  window's place is a constant-velocity guess; the trajectory is broken there.
- **trajectory**: length per camera (sum of camera-centre steps; metres for a metric model, the
  run's global model units for a relative one), time span, speed.
- **rates and latency**: frames per second of the bag and of the processing, and the compute time
  of each window (offline there is no queue, so this is the latency a window adds).

Pure numpy, no ROS: training can compute the same numbers from its own WindowResults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: Alignment methods that fit a window onto published views (their residuals and scales are measured).
ALIGNED = ("shared", "known_poses")


@dataclass
class WindowRecord:
    """What one window says about consistency (NaN where not measured); times in seconds."""

    index: int
    stamp_ns: int
    views: int
    new_views: int
    method: str
    n_matched: int
    scale: float
    depth_residual: float
    pose_residual: float
    rot_residual_deg: float
    drift: float
    time_s: float


def window_record(result) -> WindowRecord:
    """The :class:`WindowRecord` of a :class:`~da3_ros.core.results.WindowResult`."""
    al = result.alignment
    nan = math.nan
    return WindowRecord(
        index=int(result.window_index), stamp_ns=int(max(f.stamp_ns for f in result.prediction.frames)),
        views=len(result.prediction.frames), new_views=int(np.count_nonzero(result.is_new)),
        method=al.method if al else "none", n_matched=int(al.n_matched) if al else 0,
        scale=float(result.scale), depth_residual=float(al.depth_residual) if al else nan,
        pose_residual=float(al.residual) if al else nan,
        rot_residual_deg=float(al.rot_residual_deg) if al else nan,
        drift=float(result.drift), time_s=float(result.timings_s.get("total", nan)))


def scale_steps(records: Sequence[WindowRecord]) -> np.ndarray:
    """|log(scale_k / scale_k-1)| for each window aligned on shared views after another window, (K,)."""
    out = []
    for prev, cur in zip(records[:-1], records[1:]):
        if cur.method in ALIGNED and prev.scale > 0 and cur.scale > 0:
            out.append(abs(math.log(cur.scale / prev.scale)))
    return np.asarray(out, dtype=np.float64)


def path_length(world_from_cam: np.ndarray) -> float:
    """Sum of camera-centre steps of (N, 4, 4) camera-to-world poses, in their units (0 for N < 2)."""
    c = np.asarray(world_from_cam, dtype=np.float64).reshape(-1, 4, 4)[:, :3, 3]
    return float(np.linalg.norm(np.diff(c, axis=0), axis=1).sum()) if len(c) > 1 else 0.0


def _spread(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if not len(a):
        return {"median": math.nan, "p90": math.nan, "max": math.nan, "n": 0}
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "max": float(a.max()),
            "n": int(len(a))}


def summarize(records: Sequence[WindowRecord], tracks: Mapping[str, tuple[np.ndarray, np.ndarray]],
              is_metric: bool, frames_read: int, elapsed_s: float) -> dict:
    """The statistics above as a JSON-friendly dict.

    Args:
        records: every window, in order.
        tracks: per camera, stamps (N,) ns and (N, 4, 4) camera-to-world poses of its published views.
        is_metric: metric model (scale fixed, lengths in metres).
        frames_read: frames read from the bag.
        elapsed_s: processing time, seconds.
    """
    aligned = [r for r in records if r.method in ALIGNED]
    steps = scale_steps(records)
    traj = {}
    for cam, (stamps, poses) in tracks.items():
        stamps = np.asarray(stamps, dtype=np.int64)
        span = float(stamps.max() - stamps.min()) * 1e-9 if len(stamps) > 1 else 0.0
        length = path_length(poses)
        traj[cam] = {"poses": int(len(stamps)), "length": length, "duration_s": span,
                     "speed": length / span if span > 0 else math.nan,
                     "rate_hz": (len(stamps) - 1) / span if span > 0 else math.nan}
    times = [r.time_s for r in records]
    return {
        "windows": len(records), "windows_aligned": len(aligned),
        "windows_extrapolated": sum(r.method == "extrapolated" for r in records),
        "depth_residual": _spread([r.depth_residual for r in aligned]),
        "pose_residual": _spread([r.pose_residual for r in aligned]),
        "scale_step": (_spread([]) if is_metric else _spread(list(steps))),
        "scale_first_last": ([records[0].scale, records[-1].scale] if records else []),
        "trajectory": traj, "trajectory_units": "m" if is_metric else "model units",
        "window_time_s": {**_spread(times), "mean": float(np.nanmean(times)) if records else math.nan},
        "processing_fps": frames_read / elapsed_s if elapsed_s > 0 else math.nan,
        "windows_per_s": len(records) / elapsed_s if elapsed_s > 0 else math.nan,
    }


def percent(log_ratio: float) -> float:
    """A |log ratio| as the percentage it stands for (0.0488 -> 5.0)."""
    return (math.exp(log_ratio) - 1.0) * 100.0 if math.isfinite(log_ratio) else math.nan
