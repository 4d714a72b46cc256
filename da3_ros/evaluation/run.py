"""The per-window bookkeeping of ``da3-eval``: pipeline results -> scores, outputs and a report."""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from da3_ros.core.geometry import fixed_from_model_world, points_to_fixed
from da3_ros.core.pipeline import Pipeline
from da3_ros.core.results import WindowResult
from da3_ros.evaluation import consistency as C
from da3_ros.evaluation import metrics as M
from da3_ros.evaluation import report as R
from da3_ros.evaluation import summary as S
from da3_ros.evaluation.report import json_safe


def depth_summary(depth: np.ndarray) -> dict[str, float]:
    """``depth_median`` (finite positive pixels; NaN if none) and ``depth_valid`` (their share) of a map."""
    d = np.asarray(depth, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(d) & (d > 0)
    return {"depth_median": float(np.median(d[ok])) if ok.any() else math.nan,
            "depth_valid": float(ok.mean()) if d.size else 0.0}


class EvalRun:
    """Feeds frames to a :class:`Pipeline` and scores every view the first time it is published.

    Args:
        opts: ``EvalOptions``.
        cameras: camera names (first = reference camera of odometry / path).
        predictor: the predictor under test.
        config: PipelineConfig.
        truth: ``TruthCache`` with the bag's ground truth.
        sink: called with every WindowResult before it is scored (e.g. the node's publishers
            writing into an output bag), or None.
        have_truth: every camera has depth and pose ground truth; any_truth: some camera has some.
        total: frames expected (progress bar, sample spacing).
        depth_dir: folder for 16-bit PNG depth of every ``opts.save_stride``-th view of a camera, or None.
    """

    def __init__(self, opts, cameras: list[str], predictor, config, truth, sink, have_truth: bool,
                 total: int, depth_dir: Path | None = None, any_truth: bool = True):
        self.opts, self.cameras, self.predictor, self.truth = opts, cameras, predictor, truth
        self.pipeline = Pipeline(config, predictor)
        self.have_truth, self.any_truth = have_truth, any_truth or have_truth
        self.total = total
        self.is_metric = bool(getattr(predictor, "is_metric", False))
        self.depth_pngs = None if depth_dir is None else R.DepthPngWriter(depth_dir, self.is_metric)
        self.sink = sink
        self.rows: list[dict] = []  # views scored against ground truth
        self.views: list[dict] = []  # every published view
        self.windows: list[C.WindowRecord] = []
        self.est = {c: ([], []) for c in cameras}  # stamps, poses of every published view
        self.ref: dict[str, tuple[list, list, list]] = {c: ([], [], []) for c in cameras}  # stamps, est, ref
        self.cloud: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.cloud_n = 0
        self.samples: list[dict] = []
        self._sample_every = max(1, total // max(1, opts.samples))
        self._published = 0
        self._rng = np.random.default_rng(opts.seed)
        self._bar = None
        #: entries added to the metrics dict as they are (e.g. how the input was checked)
        self.info: dict = {}

    # -- driving ---------------------------------------------------------------------------
    def progress(self, iterable):
        """``iterable`` wrapped in a tqdm bar on stderr (unless quiet)."""
        from tqdm import tqdm

        self._bar = tqdm(iterable, total=self.total or None, unit="frame", desc="da3-eval", file=sys.stderr,
                         disable=not self.opts.progress, dynamic_ncols=True)
        return self._bar

    def close_progress(self) -> None:
        """Close the progress bar (if any)."""
        if self._bar is not None:
            self._bar.close()

    def push(self, frame) -> None:
        """Feed one frame; handle whatever windows it completes."""
        for result in self.pipeline.push(frame):
            self._on_result(result)

    def finish(self) -> None:
        """End of the bag: flush the pipeline."""
        for result in self.pipeline.flush():
            self._on_result(result)

    # -- per window ------------------------------------------------------------------------
    def _window_scale(self, result: WindowResult, gts: list) -> float:
        if self.is_metric:
            return 1.0
        pairs = [(d, t.depth) for d, t in zip(result.prediction.depth, gts)
                 if t is not None and t.depth is not None]
        if not pairs:
            return math.nan
        return M.median_scale([p for p, _ in pairs], [g for _, g in pairs], self.opts.min_depth_m,
                              self.opts.max_depth_m)

    def _on_result(self, result: WindowResult) -> None:
        if self.sink is not None:
            self.sink(result)
        pred = result.prediction
        gts = [self.truth.get(f.camera, f.stamp_ns) for f in pred.frames]
        scale = self._window_scale(result, gts)
        self.windows.append(C.window_record(result))
        for i in np.flatnonzero(np.asarray(result.is_new, dtype=bool)):
            self._on_view(result, int(i), gts[i], scale)
        if self.opts.write_cloud and len(result.points_world):
            self.cloud.append((np.asarray(result.points_world, np.float32),
                               np.asarray(result.colors, np.uint8),
                               np.asarray(result.points_conf, np.float32)))
            self.cloud_n += len(result.points_world)
            if self.cloud_n > 4 * self.opts.max_cloud_points:
                self._thin_cloud()

    def _on_view(self, result: WindowResult, i: int, gt, scale: float) -> None:
        f = result.prediction.frames[i]
        depth = result.prediction.depth[i]
        pose = np.asarray(result.world_from_cam[i], dtype=np.float64)
        if self.depth_pngs is not None and len(self.est[f.camera][0]) % self.opts.save_stride == 0:
            self.depth_pngs.write(f.camera, f.stamp_ns, depth)
        self.est[f.camera][0].append(f.stamp_ns)
        self.est[f.camera][1].append(pose)
        thumbs = result.prediction.depth_thumbs
        self.views.append({"camera": f.camera, "stamp_ns": int(f.stamp_ns), "window": result.window_index,
                           **depth_summary(thumbs[i] if thumbs is not None else depth[::4, ::4])})
        if gt is not None and gt.world_from_cam is not None:
            for lst, v in zip(self.ref[f.camera], (f.stamp_ns, pose, gt.world_from_cam)):
                lst.append(v)
        scored = gt is not None and gt.depth is not None and math.isfinite(scale)
        if not (scored or not self.any_truth):
            return
        e = None
        if scored:
            e = M.depth_errors(depth, gt.depth, scale, self.opts.min_depth_m, self.opts.max_depth_m)
            self.rows.append({"camera": f.camera, "stamp_ns": int(f.stamp_ns), "window": result.window_index,
                              "scale": scale, "abs_rel": e.abs_rel, "rmse": e.rmse, "delta1": e.delta1,
                              "n_valid": e.n_valid})
        if self._published % self._sample_every == 0 and len(self.samples) < self.opts.samples:
            self.samples.append({"camera": f.camera, "stamp_ns": f.stamp_ns, "image": f.image,
                                 "pred": np.asarray(depth, np.float32) * (scale if scored else 1.0),
                                 "gt": gt.depth if scored else None, "abs_rel": e.abs_rel if e else math.nan})
        self._published += 1

    def _thin_cloud(self) -> None:
        pts, cols, conf = (np.concatenate(x) for x in zip(*self.cloud))
        keep = self._rng.choice(len(pts), self.opts.max_cloud_points, replace=False)
        keep.sort()
        self.cloud = [(pts[keep], cols[keep], conf[keep])]
        self.cloud_n = len(keep)

    # -- report ----------------------------------------------------------------------------
    def _trajectory(self) -> M.TrajectoryErrors:
        est = {c: (np.array(s, np.int64), np.array(e).reshape(-1, 4, 4)) for c, (s, e, _) in self.ref.items()}
        ref = {c: (np.array(s, np.int64), np.array(r).reshape(-1, 4, 4)) for c, (s, _, r) in self.ref.items()}
        return M.trajectory_errors(est, ref, correct_scale=not self.is_metric)

    def report(self, out: Path, bag: str, elapsed_s: float, frames_read: int, partial: str = "") -> dict:
        """Write every output file into ``out``; returns the metrics dict.

        ``partial``: the error that ended the run early (the report then covers the frames so far,
        and says so in ``metrics.json`` (``partial``, ``error``) and summary.md).
        """
        traj = self._trajectory()
        m = self._metrics(traj, bag, elapsed_s, frames_read, partial)
        out.mkdir(parents=True, exist_ok=True)
        for c, (stamps, poses) in self.est.items():
            if stamps:
                fixed = fixed_from_model_world(np.array(poses))
                lines = M.tum_lines(np.array(stamps), fixed)
                (out / f"trajectory_{c}.tum").write_text("\n".join(lines) + "\n")
            s, _, r = self.ref[c]
            if s:
                (out / f"truth_{c}.tum").write_text("\n".join(M.tum_lines(np.array(s), np.array(r))) + "\n")
        if self.depth_pngs is not None:
            self.depth_pngs.finish()
        if self.cloud:
            if self.cloud_n > self.opts.max_cloud_points:
                self._thin_cloud()
            pts, cols, conf = (np.concatenate(x) for x in zip(*self.cloud))
            R.write_ply(out / "points.ply", points_to_fixed(pts), cols, conf)
            m["points"] = int(len(pts))
        if self.opts.plots:
            self._plot(out, m, traj)
        m["outputs"] = R.folder_sizes(out, skip=("PARTIAL",))  # all but the small tables written next
        self._write_tables(out, m)
        return m

    def _metrics(self, traj: M.TrajectoryErrors, bag: str, elapsed_s: float, frames_read: int,
                 partial: str) -> dict:
        """The metrics dict: scores against the truth (NaN without), consistency, counts, notes."""
        ate_of = {}
        k = 0
        for c, (stamps, _, _) in self.ref.items():
            for s in stamps:
                if k < len(traj.ate_per_pose):
                    ate_of[(c, s)] = traj.ate_per_pose[k]
                k += 1
        for row in self.rows:
            row["ate"] = ate_of.get((row["camera"], row["stamp_ns"]), math.nan)
        depth = M.mean_depth_errors([M.DepthErrors(r["abs_rel"], r["rmse"], r["delta1"], r["n_valid"])
                                     for r in self.rows])
        stats = self.pipeline.stats
        name = getattr(self.predictor, "name", self.opts.model)
        tracks = {c: (np.array(s, np.int64), np.array(p).reshape(-1, 4, 4))
                  for c, (s, p) in self.est.items()}
        o = self.opts
        gt = "all cameras" if self.have_truth else "some cameras" if self.any_truth else "none"
        m = {**{k: depth[k] for k in ("abs_rel", "rmse", "delta1")}, "ate": traj.ate, "rpe": traj.rpe,
             "rpe_rot_deg": traj.rpe_rot_deg, "trajectory_scale": traj.scale,
             "model": name, "is_metric": self.is_metric, "bag": bag, "cameras": self.cameras,
             "ground_truth": gt,
             "depth_alignment": "none" if self.is_metric else "median per window",
             "trajectory_alignment": traj.alignment, "frames_read": frames_read,
             "frames_processed": stats.processed, "frames_dropped": stats.dropped_total,
             "dropped_by_reason": dict(stats.dropped), "frames_evaluated": depth["depth_frames"],
             "depth_pixels": depth["depth_pixels"], "poses_evaluated": traj.n_poses, "windows": stats.windows,
             "elapsed_s": elapsed_s, "fps": frames_read / elapsed_s if elapsed_s > 0 else math.nan,
             "consistency": C.summarize(self.windows, tracks, self.is_metric, frames_read, elapsed_s),
             "points": 0, "notes": [], "partial": bool(partial), "error": partial,
             "saved": {"bag": o.write_bag, "depth": o.write_depth, "cloud": o.write_cloud, "plots": o.plots,
                       "stride": o.save_stride}, **self.info}
        if partial:
            m["notes"].append(f"PARTIAL: the run failed after {frames_read} frames ({partial}); "
                              "these numbers cover only the frames before the failure")
        if not self.any_truth:
            m["notes"].append("no ground truth in the bag (no camera has <ns>/depth_gt or <ns>/pose_gt): "
                              "depth and trajectory are not scored; the consistency statistics need none")
        elif not self.have_truth:
            m["notes"].append("the bag lacks depth_gt / pose_gt for some camera: metrics are partial or n/a")
        if "random weights" in str(name):
            m["notes"].append("RANDOM WEIGHTS: the scores say nothing about the model")
        return m

    def _plot(self, out: Path, m: dict, traj: M.TrajectoryErrors) -> None:
        """samples.png, trajectory.png, per_frame.png (with truth), consistency.png."""
        R.plot_samples(out / "samples.png", self.samples)
        if len(traj.est_xyz):
            R.plot_trajectory(out / "trajectory.png", traj.est_xyz, traj.ref_xyz,
                              f"{m['model']}: ATE {traj.ate:.4g} m ({traj.alignment})")
        elif self.est[self.cameras[0]][0]:
            xyz = fixed_from_model_world(np.array(self.est[self.cameras[0]][1]))[:, :3, 3]
            units = m["consistency"]["trajectory_units"]
            R.plot_trajectory(out / "trajectory.png", xyz, np.zeros((0, 3)),
                              f"{m['model']}: estimate of {self.cameras[0]} ({units}; no ground truth)")
        R.plot_per_frame(out / "per_frame.png", self.rows, traj.ate_per_pose)
        R.plot_consistency(out / "consistency.png", self.windows)

    def _write_tables(self, out: Path, m: dict) -> None:
        """metrics.json, summary.md, per_frame.csv (every published view) and windows.csv."""
        (out / "metrics.json").write_text(json.dumps(json_safe(m), indent=2, sort_keys=True) + "\n")
        S.write_summary(out / "summary.md", m)
        scored = {(r["camera"], r["stamp_ns"]): r for r in self.rows}
        cols = ["camera", "stamp_ns", "window", "depth_median", "depth_valid", "scale", "abs_rel", "rmse",
                "delta1", "n_valid", "ate"]
        with open(out / "per_frame.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows({**v, **scored.get((v["camera"], v["stamp_ns"]), {})} for v in self.views)
        with open(out / "windows.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(C.WindowRecord.__dataclass_fields__))
            w.writeheader()
            w.writerows(asdict(r) for r in self.windows)
