"""A stand-in predictor that answers from ground truth, for tests and pipeline evaluation.

It behaves like a relative multi-view depth model: each window is expressed in the frame of its
first view, and depth and translations are multiplied by a random per-window scale (unless
``metric``), with optional noise. So cross-window chaining has real work to do, and its result
can be checked against the truth exactly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from da3_ros.core.frames import CameraIntrinsics, Frame, WindowPrediction
from da3_ros.core.geometry import invert_rigid

TruthFn = Callable[[Frame], tuple[np.ndarray, np.ndarray, CameraIntrinsics]]


def _small_rotation(rng: np.random.Generator, sigma_rad: float) -> np.ndarray:
    """Random rotation (3, 3) with axis-angle components ~ N(0, sigma_rad)."""
    return Rotation.from_rotvec(rng.normal(0.0, sigma_rad, 3)).as_matrix()


class GroundTruthPredictor:
    """Predictor from truth: per window, poses relative to the first view, scaled and noisy.

    Args:
        truth: ``truth(frame) -> (depth (H, W) z-depth metres, inf/NaN where nothing,
            world_from_cam (4, 4) OpenCV optical camera-to-world, CameraIntrinsics)`` at the
            frame's resolution.
        scale_range: (lo, hi): each window's scale is drawn log-uniformly from it (ignored when
            ``metric``).
        depth_noise: relative per-pixel depth noise sigma (multiplicative, 0 = none).
        pose_noise: per-view noise: translation sigma in metres (before scaling) and rotation
            sigma in radians; view 0 of each window stays exact (it defines the frame).
        seed: RNG seed.
        metric: True for a metric model: scale 1, ``is_metric`` True.
        confidence: confidence value reported at valid pixels (1 elsewhere).

    Attributes:
        scales: the scales of the last ``SCALES_KEPT`` windows, oldest first (for tests).
    """

    SCALES_KEPT = 4096

    def __init__(self, truth: TruthFn, scale_range: tuple[float, float] = (0.5, 2.0),
                 depth_noise: float = 0.0, pose_noise: float = 0.0, seed: int = 0,
                 metric: bool = False, confidence: float = 2.0):
        self.truth = truth
        self.scale_range = scale_range
        self.depth_noise = float(depth_noise)
        self.pose_noise = float(pose_noise)
        self.rng = np.random.default_rng(seed)
        self.is_metric = bool(metric)
        self.name = "ground_truth" + ("_metric" if metric else "")
        self.confidence = float(confidence)
        self.scales: deque[float] = deque(maxlen=self.SCALES_KEPT)

    def _window_scale(self) -> float:
        if self.is_metric:
            return 1.0
        lo, hi = self.scale_range
        return float(np.exp(self.rng.uniform(np.log(lo), np.log(hi))))

    def predict(self, frames: Sequence[Frame]) -> WindowPrediction:
        """Depth (source resolution) and poses in the window's first-view frame, per window scale."""
        s = self._window_scale()
        self.scales.append(s)
        truths = [self.truth(f) for f in frames]
        cam0_from_world = invert_rigid(truths[0][1])
        poses, depths, confs, intr = [], [], [], []
        for i, (depth, world_from_cam, K) in enumerate(truths):
            T = cam0_from_world @ np.asarray(world_from_cam, dtype=np.float64)
            if i > 0 and self.pose_noise > 0:
                T[:3, :3] = _small_rotation(self.rng, self.pose_noise) @ T[:3, :3]
                T[:3, 3] += self.rng.normal(0.0, self.pose_noise, 3)
            T[:3, 3] *= s
            d = np.asarray(depth, dtype=np.float32)
            valid = np.isfinite(d) & (d > 0)
            d = np.where(valid, d * s, np.nan).astype(np.float32)
            if self.depth_noise > 0:
                d = d * (1.0 + self.rng.normal(0.0, self.depth_noise, d.shape)).astype(np.float32)
            poses.append(T)
            depths.append(d)
            confs.append(np.where(valid, self.confidence, 1.0).astype(np.float32))
            intr.append(K)
        return WindowPrediction(frames=list(frames), depth=depths, confidence=confs,
                                world_from_cam=np.stack(poses), intrinsics=intr, is_metric=self.is_metric)


def truth_capacity(num_view: int, dilations, ahead: int, n_cameras: int) -> int:
    """Truth entries (all cameras together) a stand-in fed from a stream can still ask for.

    A window only looks up frames of the windower's history (``(num_view - 1) * max(dilations)
    + 1`` items per camera); ``ahead`` more frames per camera may arrive (and bring their truth)
    before the window that needs the oldest one runs: queued for inference, waiting in a
    subscription, or read ahead from a bag. Twice the sum per camera, at least 32.
    """
    span = (int(num_view) - 1) * max(int(d) for d in dilations) + 1
    return max(32, 2 * (span + int(ahead)) * int(n_cameras))
