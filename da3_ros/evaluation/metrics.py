"""Depth and trajectory metrics (ROS-free; trajectories through the ``evo`` library).

Depth (per frame, on valid pixels: finite ground truth inside ``[min_depth_m, max_depth_m]``
and a finite positive prediction):

- ``abs_rel`` = mean(|pred - gt| / gt), ``rmse`` = sqrt(mean((pred - gt)^2)) in metres,
- ``delta1`` = share of pixels with max(pred / gt, gt / pred) < 1.25.

For relative (non-metric) models the prediction is first multiplied by the median scale
``median(gt / pred)`` over the valid pixels of all views of a window (:func:`median_scale`; the
median of per-pixel ratios, unbiased under symmetric multiplicative noise, unlike the ratio of
medians); metric models are scored as they are.

Trajectories: ``ate`` = RMSE of camera-centre errors (metres) after aligning the estimate to
the truth with Umeyama: Sim(3) (``correct_scale``) for relative models, SE(3) for metric ones;
``rpe`` = RMSE of the translation part of relative poses between consecutive frames of one
camera, computed on the aligned estimate. Poses are (4, 4) camera-to-world, any consistent axes.
When either trajectory's centres do not span a plane (a static camera, or an estimate held still by
the pose check) Umeyama has no unique answer: the estimate is then only shifted onto the truth's
centroid (scale 1, ``alignment`` ``"centroid"``), so ``ate`` is how far the truth moved from
where the estimate stayed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

DELTA1_THRESHOLD = 1.25


@dataclass
class DepthErrors:
    """Depth errors of one frame (NaN when it has no valid pixel)."""

    abs_rel: float
    rmse: float
    delta1: float
    n_valid: int


def valid_depth_mask(pred: np.ndarray, gt: np.ndarray, min_depth_m: float = 1e-3,
                     max_depth_m: float = math.inf) -> np.ndarray:
    """(H, W) bool: pixels where both depths are usable for scoring."""
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (np.isfinite(gt) & (gt >= min_depth_m) & (gt <= max_depth_m)
                & np.isfinite(pred) & (pred > 0))


def median_scale(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], min_depth_m: float = 1e-3,
                 max_depth_m: float = math.inf) -> float:
    """Scale ``median(gt / pred)`` over the valid pixels of all views of a window.

    Args:
        preds: (H_i, W_i) predicted depth maps, model units.
        gts: matching (H_i, W_i) ground-truth depth maps, metres.
        min_depth_m: smallest truth depth scored.
        max_depth_m: largest truth depth scored.

    Returns:
        Metres per model unit; NaN when no pixel is valid.
    """
    ratios = []
    for p, g in zip(preds, gts):
        m = valid_depth_mask(p, g, min_depth_m, max_depth_m)
        ratios.append(np.asarray(g, dtype=np.float64)[m] / np.asarray(p, dtype=np.float64)[m])
    r = np.concatenate(ratios) if ratios else np.zeros(0)
    return float(np.median(r)) if len(r) else math.nan


def depth_errors(pred: np.ndarray, gt: np.ndarray, scale: float = 1.0, min_depth_m: float = 1e-3,
                 max_depth_m: float = math.inf) -> DepthErrors:
    """abs_rel, rmse (metres) and delta1 of ``scale * pred`` against ``gt`` (both (H, W))."""
    pred = np.asarray(pred, dtype=np.float64) * float(scale)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and truth {gt.shape} differ in size")
    m = valid_depth_mask(pred, gt, min_depth_m, max_depth_m)
    n = int(m.sum())
    if n == 0:
        return DepthErrors(math.nan, math.nan, math.nan, 0)
    p, g = pred[m], gt[m]
    ratio = np.maximum(p / g, g / p)
    return DepthErrors(abs_rel=float(np.mean(np.abs(p - g) / g)), rmse=float(np.sqrt(np.mean((p - g) ** 2))),
                       delta1=float(np.mean(ratio < DELTA1_THRESHOLD)), n_valid=n)


def mean_depth_errors(errors: Sequence[DepthErrors]) -> dict[str, float]:
    """Frame-averaged abs_rel, rmse, delta1 over frames with valid pixels (NaN if none)."""
    good = [e for e in errors if e.n_valid > 0]
    out = {k: (float(np.mean([getattr(e, k) for e in good])) if good else math.nan)
           for k in ("abs_rel", "rmse", "delta1")}
    out["depth_frames"] = len(good)
    out["depth_pixels"] = int(sum(e.n_valid for e in good))
    return out


@dataclass
class TrajectoryErrors:
    """ATE / RPE of an estimated trajectory against the truth (NaN when too few poses)."""

    ate: float
    rpe: float
    rpe_rot_deg: float
    scale: float
    alignment: str
    n_poses: int
    ate_per_pose: list[float]
    est_xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)), repr=False)
    ref_xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)), repr=False)

    def as_dict(self) -> dict:
        """JSON-friendly dict (per-pose errors included, aligned positions left out)."""
        return {k: getattr(self, k) for k in ("ate", "rpe", "rpe_rot_deg", "scale", "alignment", "n_poses",
                                              "ate_per_pose")}


Track = tuple[np.ndarray, np.ndarray]  # (stamps_ns (N,), world_from_cam (N, 4, 4))


def _evo_traj(stamps_ns: np.ndarray, poses: np.ndarray):
    from evo.core.trajectory import PoseTrajectory3D

    return PoseTrajectory3D(poses_se3=[np.asarray(T, dtype=np.float64) for T in poses],
                            timestamps=np.asarray(stamps_ns, dtype=np.float64) * 1e-9)


def trajectory_errors(estimate: Mapping[str, Track], truth: Mapping[str, Track],
                      correct_scale: bool) -> TrajectoryErrors:
    """ATE after one Sim(3) / SE(3) alignment of all cameras jointly, and per-camera RPE.

    Args:
        estimate: per camera, stamps (N,) int64 ns and (N, 4, 4) estimated camera-to-world poses.
        truth: per camera, ground-truth poses for the same stamps (same order, same length).
        correct_scale: True for Sim(3) (relative models), False for SE(3) (metric models).

    Returns:
        TrajectoryErrors; ``ate_per_pose``, ``est_xyz`` (aligned) and ``ref_xyz`` list the poses
        camera by camera in the order of ``estimate``.
    """
    from evo.core import metrics
    from evo.core.geometry import GeometryException

    cams = [c for c in estimate if len(estimate[c][0]) > 0]
    for c in cams:
        if c not in truth or len(truth[c][0]) != len(estimate[c][0]):
            raise ValueError(f"truth for camera {c!r} does not match the estimate's poses")
    n = sum(len(estimate[c][0]) for c in cams)
    kind = "sim3" if correct_scale else "se3"
    if n < 3:
        return TrajectoryErrors(math.nan, math.nan, math.nan, math.nan, kind, n, [])
    all_est = _evo_traj(np.concatenate([estimate[c][0] for c in cams]),
                        np.concatenate([estimate[c][1] for c in cams]))
    all_ref = _evo_traj(np.concatenate([truth[c][0] for c in cams]),
                        np.concatenate([truth[c][1] for c in cams]))
    try:
        _, _, scale = all_est.align(all_ref, correct_scale=correct_scale)
    except GeometryException:  # degenerate centres (see the module docstring)
        kind, scale = "centroid", 1.0
        shift = np.eye(4)
        shift[:3, 3] = all_ref.positions_xyz.mean(axis=0) - all_est.positions_xyz.mean(axis=0)
        all_est.transform(shift)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((all_ref, all_est))
    aligned = np.stack(all_est.poses_se3)
    rpe_t, rpe_r, start = [], [], 0
    for c in cams:
        k = len(estimate[c][0])
        est_c = _evo_traj(estimate[c][0], aligned[start:start + k])
        ref_c = _evo_traj(truth[c][0], truth[c][1])
        start += k
        if k < 2:
            continue
        for rel, out in ((metrics.PoseRelation.translation_part, rpe_t),
                         (metrics.PoseRelation.rotation_angle_deg, rpe_r)):
            rpe = metrics.RPE(rel, delta=1, delta_unit=metrics.Unit.frames, all_pairs=False)
            rpe.process_data((ref_c, est_c))
            out.append(np.asarray(rpe.error, dtype=np.float64))

    def rms(parts: list[np.ndarray]) -> float:
        return float(np.sqrt(np.mean(np.concatenate(parts) ** 2))) if parts else math.nan

    return TrajectoryErrors(ate=float(ape.get_statistic(metrics.StatisticsType.rmse)), rpe=rms(rpe_t),
                            rpe_rot_deg=rms(rpe_r), scale=float(scale), alignment=kind, n_poses=n,
                            ate_per_pose=[float(e) for e in ape.error], est_xyz=all_est.positions_xyz.copy(),
                            ref_xyz=all_ref.positions_xyz.copy())


def tum_lines(stamps_ns: np.ndarray, poses: np.ndarray) -> list[str]:
    """TUM trajectory lines ``t tx ty tz qx qy qz qw`` (t in seconds) for (N, 4, 4) poses."""
    from scipy.spatial.transform import Rotation

    q = Rotation.from_matrix(np.asarray(poses)[:, :3, :3]).as_quat()  # x, y, z, w
    t = np.asarray(poses)[:, :3, 3]
    return [f"{s // 1_000_000_000}.{s % 1_000_000_000:09d} " + " ".join(f"{v:.9f}" for v in (*ti, *qi))
            for s, ti, qi in zip(np.asarray(stamps_ns, dtype=np.int64), t, q)]
