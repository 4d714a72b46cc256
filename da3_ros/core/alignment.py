"""Cross-window chaining: put each window's poses and depth into one fixed (global) frame.

Each window comes back in its own frame and (for relative models) its own scale. The chainer
keeps what was already published (pose, and a thumbnail of the depth, per frame) and aligns the
new window onto it:

1. Shared frames (frames published by an earlier window, found by (camera, stamp)): rotation is
   the chordal mean of ``R_pub @ R_win^T``; the scale (Sim(3), relative models) is the median
   ratio of published to new depth on the shared frames' pixels (robust even when the shared
   cameras barely moved), or the camera-centre least-squares scale when no depth overlaps;
   translation is the mean centre offset. SE(3) (metric models) fixes the scale to 1.
2. Known poses (``Frame.world_from_cam``): when the first window carried known poses, the global
   frame *is* the known world, and every window with known poses is aligned to them instead
   (scale from camera centres when two or more distinct ones are known), so there is no drift.
3. No shared frame and no known pose (``stride >= num_view`` without odometry): nothing can be
   matched, so the window's first view is placed by constant-velocity extrapolation of the last
   two published poses, and the scale keeps the previous window's median depth (global units)
   over this window's median depth (window units), i.e. it assumes the scene depth did not
   change between windows. ``method == "extrapolated"`` and ``residual`` is NaN: treat the
   trajectory as broken there.

Residual: RMS camera-centre error on the matched frames after alignment (global units). Drift:
``sqrt(sum of squared residuals)`` over the chain so far, an estimate of the random-walk error
accumulated by chaining (0 when every window is aligned to known poses).

Modes: ``sim3`` (relative models: scale estimated per window), ``se3`` (metric models: scale 1),
``mixed`` (a calibrated rig, :mod:`da3_ros.core.rig`: a window the rig put in metres is aligned
with scale 1 when the global frame is metric, i.e. when the first window was in metres; any
other window's scale is estimated), ``none``. With a rig, each window is put through
:meth:`RigCalibration.apply` before it is aligned.

Pose sanity (:mod:`da3_ros.core.pose_check`, when a check is given): an aligned window whose
images did not change (static) or whose motion jumps is *held*: its views are published where
their cameras were last published (``Alignment.held``, ``held_reason``), so its motion is not
chained; its depth is still scaled onto the published frames.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial.transform import Rotation

from da3_ros.core.frames import WindowPrediction, depth_thumb, thumb_medians
from da3_ros.core.geometry import apply_sim3_to_poses, invert_rigid, mean_rotation, rotation_angle_deg
from da3_ros.core.pose_check import PoseCheck
from da3_ros.core.rig import RigCalibration

Key = tuple[str, int]


@dataclass
class Alignment:
    """How one window was placed in the global frame: ``x_global = scale * R @ x_window + t``.

    Attributes:
        scale, R (3, 3), t (3,): the similarity.
        method: ``"first"``, ``"shared"``, ``"known_poses"``, ``"extrapolated"`` or ``"none"``.
        n_matched: frames used (shared or with known pose).
        residual: RMS centre error after alignment on matched frames, global units (NaN if none).
        rot_residual_deg: largest rotation disagreement on matched frames, degrees.
        depth_residual: median |log(published / aligned depth)| on shared pixels (NaN if none).
        drift: accumulated chaining error after this window (see module docstring).
        held: ``""`` (chained), ``"static"`` or ``"jump"`` (held by the pose check).
        held_reason: why it was held.
    """

    scale: float
    R: np.ndarray
    t: np.ndarray
    method: str
    n_matched: int = 0
    residual: float = float("nan")
    rot_residual_deg: float = float("nan")
    depth_residual: float = float("nan")
    drift: float = 0.0
    held: str = ""
    held_reason: str = ""


@dataclass
class _Published:
    pose: np.ndarray
    depth_thumb: np.ndarray | None
    stamp_ns: int


def frame_key(frame) -> Key:
    """Identity of a frame across windows: (camera, stamp_ns)."""
    return (frame.camera, int(frame.stamp_ns))


def _log_depth_ratios(published: list[np.ndarray], new: list[np.ndarray]) -> np.ndarray:
    """log(published / new) over the pixels valid (finite, > 0) in both maps of each pair, (N,)."""
    ratios = []
    for a, b in zip(published, new):
        with np.errstate(invalid="ignore", divide="ignore"):
            ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
            ratios.append(np.log(a[ok] / b[ok]))
    return np.concatenate(ratios) if ratios else np.zeros(0)


def depth_ratio_scale(published: list[np.ndarray], new: list[np.ndarray]) -> tuple[float, int]:
    """Median of published/new depth over pixels valid in both; returns (scale, n_pixels)."""
    r = _log_depth_ratios(published, new)
    return (float(np.exp(np.median(r))), len(r)) if len(r) else (float("nan"), 0)


def _median_depth(thumbs: list[np.ndarray]) -> float | None:
    """Median over views of each view's NaN-ignoring median depth; None when no finite pixel.

    Taken on the depth thumbnails (every k-th pixel): a cheap estimate of the full-size median.
    """
    med = [m for m in thumb_medians(thumbs) if m is not None]
    return float(np.median(med)) if med else None


def _scaled(depth: list[np.ndarray], scale: float, in_place: bool) -> list[np.ndarray]:
    """``depth`` times ``scale`` as float32: the same arrays scaled when ``in_place`` allows it."""
    s = np.float32(scale)
    out = []
    for d in depth:
        if in_place and isinstance(d, np.ndarray) and d.dtype == np.float32 and d.flags.writeable:
            out.append(np.multiply(d, s, out=d))
        else:
            out.append(np.asarray(d, dtype=np.float32) * s)
    return out


def _thumbs(pred: WindowPrediction) -> list[np.ndarray]:
    """Each view's depth thumbnail in window units: the predictor's own, else made from the depth."""
    if pred.depth_thumbs is not None:
        return pred.depth_thumbs
    return [depth_thumb(d) for d in pred.depth]


def estimate_sim3(target: np.ndarray, source: np.ndarray, with_scale: bool,
                  depth_scale: float | None = None, prefer_centres: bool = False,
                  fallback_scale: float = 1.0) -> tuple[float, np.ndarray, np.ndarray, float, float]:
    """Similarity mapping ``source`` camera poses onto ``target`` poses (both (J, 4, 4) camera-to-world).

    Rotation: chordal mean of ``R_t R_s^T``. Scale: 1 if not ``with_scale``; else the depth
    scale when given (unless ``prefer_centres`` and the centres spread), else least squares on
    centres (J >= 2, distinct), else ``fallback_scale``. Translation: mean centre offset.

    Returns:
        (s, R, t, residual RMS centre error, max rotation error in degrees).
    """
    Rt, Rs = target[:, :3, :3], source[:, :3, :3]
    ct, cs = target[:, :3, 3], source[:, :3, 3]
    R = mean_rotation(Rt @ np.swapaxes(Rs, 1, 2))
    xs = (cs - cs.mean(0)) @ R.T
    xt = ct - ct.mean(0)
    spread = float(np.sum(xs * xs))
    centre_ok = len(cs) >= 2 and spread > 1e-12 * max(1.0, float(np.sum(cs * cs)))
    if not with_scale:
        s = 1.0
    elif depth_scale is not None and np.isfinite(depth_scale) and not (prefer_centres and centre_ok):
        s = float(depth_scale)
    elif centre_ok:
        s = max(float(np.sum(xt * xs) / spread), 1e-9)
    else:
        s = float(fallback_scale)
    t = (ct - s * cs @ R.T).mean(0)
    err = ct - (s * cs @ R.T + t)
    rot = max(rotation_angle_deg(Rt[j].T @ R @ Rs[j]) for j in range(len(Rt)))
    return s, R, t, float(np.sqrt(np.mean(np.sum(err * err, axis=1)))), rot


class WindowChainer:
    """Aligns successive window predictions into one global frame (see module docstring).

    Args:
        mode: ``"sim3"`` (relative models), ``"se3"`` (metric), ``"mixed"`` (SE(3) for windows in
            metres, Sim(3) for the others; a calibrated rig) or ``"none"`` (no chaining: each
            window stays in its own frame).
        keep_frames: how many published frames to remember for matching (oldest forgotten
            first); each costs a pose and a <= 64 x 64 float32 depth thumbnail (<= 16 KiB).
            The pipeline passes the windower's history span (a window can only share frames
            still in that history), capped by ``PipelineConfig.keep_frames``.
        check: a :class:`~da3_ros.core.pose_check.PoseCheck` reviewing each aligned window, or
            None (every window chained).
        rig: a :class:`~da3_ros.core.rig.RigCalibration` applied to each window first, or None.
    """

    def __init__(self, mode: str = "sim3", keep_frames: int = 512, check: PoseCheck | None = None,
                 rig: RigCalibration | None = None):
        if mode not in ("sim3", "se3", "mixed", "none"):
            raise ValueError(f"alignment mode must be sim3|se3|mixed|none, got {mode!r}")
        self.mode = mode
        self.keep_frames = keep_frames
        self.check = check
        self.rig = rig
        self.metric_frame = mode == "se3"  # mixed: set by the first window
        self.published: OrderedDict[Key, _Published] = OrderedDict()
        self.anchored_to_known = False
        self.drift_sq = 0.0
        self.last_scale = 1.0
        self.last_median_depth = float("nan")
        self.windows = 0

    def chain(self, pred: WindowPrediction,
              in_place: bool = False) -> tuple[WindowPrediction, Alignment, np.ndarray]:
        """Align one window, record its new views as published.

        Args:
            pred: the window's prediction, in its own frame and scale.
            in_place: the caller will not use ``pred`` again, so depth maps it owns
                (``pred.owns_maps``: the engine's fresh buffers) are scaled where they lie instead
                of copied (the pipeline; 10 MB a window of 8 views at 640x480). Otherwise ``pred``
                is left as it was.

        Returns:
            (prediction with global ``world_from_cam`` and depth in global units, the Alignment,
            is_new (S,) bool: views published for the first time).
        """
        if self.rig is not None:
            pred = self.rig.apply(pred)
        if self.windows == 0 and self.mode == "mixed":
            self.metric_frame = pred.is_metric
        keys = [frame_key(f) for f in pred.frames]
        thumbs = _thumbs(pred)
        al = self._align(pred, keys, thumbs)
        poses = apply_sim3_to_poses(al.scale, al.R, al.t, pred.world_from_cam)
        depth = _scaled(pred.depth, al.scale, in_place and pred.owns_maps)
        scale = np.float32(al.scale)
        thumbs = [t * scale for t in thumbs]
        maps = pred.device_maps
        maps = maps and replace(maps, depth_scale=maps.depth_scale * al.scale)
        is_new = np.array([k not in self.published for k in keys], dtype=bool)
        if self.check is not None and al.method not in ("known_poses", "none"):
            verdict = self.check.review(pred.frames, poses, is_new, thumbs, self._last_published, al)
            if verdict is not None:
                al.held, al.held_reason = verdict
                poses = self._held_poses(pred.frames, keys, poses)
        out = replace(pred, world_from_cam=poses, depth=depth, depth_thumbs=thumbs, device_maps=maps,
                      owns_maps=False)  # scaled now: a second chain must not scale them again
        for i, k in enumerate(keys):
            if is_new[i]:
                self.published[k] = _Published(poses[i].copy(), thumbs[i], pred.frames[i].stamp_ns)
        while len(self.published) > self.keep_frames:
            self.published.popitem(last=False)
        if np.isfinite(al.residual) and al.method == "shared":
            self.drift_sq += al.residual ** 2
        al.drift = float(np.sqrt(self.drift_sq))
        self.last_scale = al.scale
        if self.mode != "se3":  # only a Sim(3) extrapolation reads it
            med = _median_depth(thumbs)
            if med is not None and med > 0:  # an all-zero window must not pin later scales to 0 / med
                self.last_median_depth = med
        self.windows += 1
        return out, al, is_new

    def _last_published(self, camera: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(pose, depth thumbnail, global units) of ``camera``'s newest published frame, or None."""
        for (cam, _), pub in reversed(self.published.items()):
            if cam == camera:
                return pub.pose, pub.depth_thumb
        return None

    def _held_poses(self, frames, keys: list[Key], poses: np.ndarray) -> np.ndarray:
        """Poses of a held window: published views keep theirs, new ones take their camera's last.

        In a camera's first window (nothing published yet) its new views take its first view's pose.
        """
        out = poses.copy()
        first: dict[str, np.ndarray] = {}
        for i, (f, k) in enumerate(zip(frames, keys)):
            if k in self.published:
                out[i] = self.published[k].pose
                continue
            last = self._last_published(f.camera)
            out[i] = last[0] if last is not None else first.setdefault(f.camera, poses[i])
        return out

    def _align(self, pred: WindowPrediction, keys: list[Key], thumbs: list[np.ndarray]) -> Alignment:
        P = pred.world_from_cam
        known = [i for i, f in enumerate(pred.frames) if f.world_from_cam is not None]
        in_metres = pred.is_metric and self.metric_frame
        with_scale = self.mode == "sim3" or (self.mode == "mixed" and not in_metres)
        if self.mode == "none":
            return Alignment(1.0, np.eye(3), np.zeros(3), "none")
        if self.windows == 0 and known:
            self.anchored_to_known = True
        shared = [i for i, k in enumerate(keys) if k in self.published]
        # Thumbnails of the shared views, published and new (window units).
        pairs = ([self.published[keys[i]].depth_thumb for i in shared], [thumbs[i] for i in shared])
        dscale, npx = depth_ratio_scale(*pairs)  # (NaN, 0) without shared views
        if self.anchored_to_known and known:
            target = np.stack([np.asarray(pred.frames[i].world_from_cam, dtype=np.float64) for i in known])
            s, R, t, res, rot = estimate_sim3(target, P[known], with_scale, dscale if npx else None,
                                              prefer_centres=True, fallback_scale=self.last_scale)
            return self._finish(Alignment(s, R, t, "known_poses", len(known), res, rot), *pairs)
        if self.windows == 0:
            return Alignment(1.0, np.eye(3), np.zeros(3), "first")
        if shared:
            target = np.stack([self.published[keys[i]].pose for i in shared])
            s, R, t, res, rot = estimate_sim3(target, P[shared], with_scale, dscale if npx else None,
                                              fallback_scale=self.last_scale)
            return self._finish(Alignment(s, R, t, "shared", len(shared), res, rot), *pairs)
        return self._extrapolate(pred, with_scale, thumbs)

    @staticmethod
    def _finish(al: Alignment, published: list[np.ndarray], new: list[np.ndarray]) -> Alignment:
        """Set ``al.depth_residual`` from the shared views' depth thumbnails (new ones in window units)."""
        r = _log_depth_ratios(published, [b * al.scale for b in new])
        if len(r):
            al.depth_residual = float(np.median(np.abs(r)))
        return al

    def _extrapolate(self, pred: WindowPrediction, with_scale: bool, thumbs: list[np.ndarray]) -> Alignment:
        """No overlap: constant-velocity guess for view 0, median-depth scale (see module doc)."""
        items = list(self.published.values())
        last = items[-1]
        target = last.pose.copy()
        if len(items) >= 2:
            prev = items[-2]
            delta = invert_rigid(prev.pose) @ last.pose
            dt_prev = max(last.stamp_ns - prev.stamp_ns, 1)
            ratio = (pred.frames[0].stamp_ns - last.stamp_ns) / dt_prev
            step = np.eye(4)
            rotvec = Rotation.from_matrix(delta[:3, :3]).as_rotvec()
            step[:3, :3] = Rotation.from_rotvec(rotvec * ratio).as_matrix()
            step[:3, 3] = delta[:3, 3] * ratio
            target = last.pose @ step
        s = 1.0
        if with_scale:
            med = _median_depth(thumbs)
            s = self.last_median_depth / med if med else self.last_scale  # None or 0: keep the scale
            s = s if np.isfinite(s) and s > 0 else self.last_scale
        P0 = pred.world_from_cam[0]
        R = target[:3, :3] @ P0[:3, :3].T
        t = target[:3, 3] - s * R @ P0[:3, 3]
        return Alignment(s, R, t, "extrapolated", 0)
