"""A calibrated rig: the cameras' known extrinsics replace the network's guess of them.

A synchronised rig's cameras are bolted together, so their relative poses are known (a
calibration, TF). The network estimates them anew in every window, with errors (a stereo
pair's left-to-right offset off its baseline axis). :class:`RigCalibration` applies the
calibration to each window before it is chained:

1. **Scale**: for a relative model, the window's metres per model unit are the median, over the
   window's time steps and calibrated camera pairs, of calibrated baseline length / predicted
   baseline length (pairs with a zero calibrated baseline or a non-finite or zero predicted one
   are skipped). Depth and translations are multiplied by it, so the window is in metres
   (``WindowPrediction.is_metric``). A metric model's window is already in metres. When no
   pair gives a scale, the window is left as it came (model units) and the chainer scales it
   onto the published frames as usual.
2. **Relative poses**: in each time step (a set of views with one view per camera), the first
   view whose camera is calibrated is the anchor; every other calibrated camera's view is placed
   at ``anchor pose @ inv(rig_from_anchor) @ rig_from_camera``. Uncalibrated cameras keep their
   predicted poses. Only windows in metres are constrained (the calibration is in metres).

With every camera calibrated and a non-zero baseline, chaining aligns windows with SE(3) when
they are in metres (``WindowChainer`` mode ``mixed``), so the global frame is metric.

Extrinsics are given as a 7-vector ``[x, y, z, qx, qy, qz, qw]``: the pose of the camera's
optical frame (OpenCV axes) in a common rig frame, metres and a unit quaternion in ROS order;
what ``ros2 run tf2_ros tf2_echo <rig frame> <camera>_optical_frame`` prints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
from scipy.spatial.transform import Rotation

from da3_ros.core.frames import WindowPrediction
from da3_ros.core.geometry import invert_rigid

#: Shortest calibrated baseline (metres) that gives a scale.
MIN_BASELINE_M = 1e-6


def pose_from_vector(v: Sequence[float]) -> np.ndarray:
    """(4, 4) transform from ``[x, y, z, qx, qy, qz, qw]`` (quaternion normalised).

    Raises:
        ValueError: not 7 finite numbers, or a zero quaternion.
    """
    v = np.asarray(v, dtype=np.float64).ravel()
    if v.size != 7 or not np.isfinite(v).all() or np.linalg.norm(v[3:]) < 1e-9:
        raise ValueError(f"extrinsics must be [x, y, z, qx, qy, qz, qw] with a non-zero quaternion, "
                         f"got {list(v)}")
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(v[3:] / np.linalg.norm(v[3:])).as_matrix()
    T[:3, 3] = v[:3]
    return T


def time_steps(cameras: Sequence[str]) -> list[list[int]]:
    """View indices grouped into time steps: a new step starts when a camera repeats.

    A multi-camera window is set-major (step 0: cam 0..K-1, step 1: ...), so this recovers its
    steps without knowing K; a temporal window gives one view per step.
    """
    steps: list[list[int]] = []
    seen: set[str] = set()
    for i, cam in enumerate(cameras):
        if not steps or cam in seen:
            steps.append([])
            seen = set()
        steps[-1].append(i)
        seen.add(cam)
    return steps


class RigCalibration:
    """Known extrinsics of some or all cameras of a rig (see the module docstring).

    Args:
        extrinsics: ``camera -> [x, y, z, qx, qy, qz, qw]`` (``rig_from_camera``, metres); cameras
            with an empty vector are not calibrated.
    """

    def __init__(self, extrinsics: Mapping[str, Sequence[float]]):
        self.rig_from_cam = {c: pose_from_vector(v) for c, v in extrinsics.items() if len(v)}

    def __bool__(self) -> bool:
        return len(self.rig_from_cam) >= 2

    def is_metric(self, cameras: Sequence[str]) -> bool:
        """Whether every camera is calibrated and two of them are apart (a baseline gives metres)."""
        if not cameras or any(c not in self.rig_from_cam for c in cameras):
            return False
        centres = np.stack([self.rig_from_cam[c][:3, 3] for c in cameras])
        return bool(np.linalg.norm(centres - centres[0], axis=1).max() > MIN_BASELINE_M)

    def relative(self, anchor: str, camera: str) -> np.ndarray:
        """(4, 4) ``anchor_from_camera`` from the calibration, metres."""
        return invert_rigid(self.rig_from_cam[anchor]) @ self.rig_from_cam[camera]

    def window_scale(self, pred: WindowPrediction) -> float | None:
        """Metres per window unit from the calibrated baselines (1 for a metric window), or None."""
        if pred.is_metric:
            return 1.0
        ratios = []
        for anchor, others in self._pairs(pred):
            for i in others:
                cal = np.linalg.norm(self.relative(pred.frames[anchor].camera, pred.frames[i].camera)[:3, 3])
                est = np.linalg.norm(pred.world_from_cam[i][:3, 3] - pred.world_from_cam[anchor][:3, 3])
                if cal > MIN_BASELINE_M and np.isfinite(est) and est > 0:
                    ratios.append(cal / est)
        return float(np.median(ratios)) if ratios else None

    def apply(self, pred: WindowPrediction) -> WindowPrediction:
        """The window in metres with its calibrated cameras' relative poses as calibrated.

        Returns ``pred`` unchanged when it gives no scale (see the module docstring).
        """
        s = self.window_scale(pred)
        if s is None:
            return pred
        poses = pred.world_from_cam.copy()
        poses[:, :3, 3] *= s
        for anchor, others in self._pairs(pred):
            for i in others:
                poses[i] = poses[anchor] @ self.relative(pred.frames[anchor].camera, pred.frames[i].camera)
        if pred.is_metric:
            return replace(pred, world_from_cam=poses)
        scale = np.float32(s)
        thumbs = None if pred.depth_thumbs is None else [t * scale for t in pred.depth_thumbs]
        maps = pred.device_maps and replace(pred.device_maps, depth_scale=pred.device_maps.depth_scale * s)
        return replace(pred, world_from_cam=poses, depth=[d * scale for d in pred.depth], depth_thumbs=thumbs,
                       device_maps=maps, is_metric=True)

    def _pairs(self, pred: WindowPrediction) -> list[tuple[int, list[int]]]:
        """Per time step, (anchor view, the other calibrated views) when there are any."""
        out = []
        for step in time_steps([f.camera for f in pred.frames]):
            calibrated = [i for i in step if pred.frames[i].camera in self.rig_from_cam]
            if len(calibrated) >= 2:
                out.append((calibrated[0], calibrated[1:]))
        return out
