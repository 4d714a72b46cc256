"""Synthetic sequences with exact depth and poses for the core tests (uses da3_ros.sim.scene)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from da3_ros.core.frames import CameraIntrinsics, Frame
from da3_ros.core.geometry import umeyama
from da3_ros.sim.scene import default_intrinsics, make_scene, make_trajectory, rig_offsets


@dataclass
class Sequence:
    frames: list[Frame]
    truth: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, CameraIntrinsics]]

    def __call__(self, frame: Frame):
        """The truth callable GroundTruthPredictor wants."""
        return self.truth[(frame.camera, frame.stamp_ns)]


def make_sequence(n_frames: int, width: int = 64, height: int = 48, kind: str = "room", seed: int = 0,
                  cameras: tuple[str, ...] = ("cam",), rate_hz: float = 10.0,
                  jitter_ns: int = 0, with_poses: bool = False) -> Sequence:
    """Frames of ``len(cameras)`` rig cameras along a smooth trajectory, in stamp order.

    Camera k's stamp is the rig stamp plus ``k * jitter_ns`` (for sync tests).
    """
    scene = make_scene(kind, seed)
    stamps, body = make_trajectory(kind, n_frames, rate_hz, seed)
    offsets = rig_offsets(len(cameras))
    intr = default_intrinsics(width, height)
    frames, truth = [], {}
    for s, T_body in zip(stamps, body):
        for k, cam in enumerate(cameras):
            T = T_body @ offsets[k]
            rgb, depth = scene.render(T, intr.K, width, height)
            stamp = int(s) + k * jitter_ns
            frames.append(Frame(image=rgb, stamp_ns=stamp, camera=cam, intrinsics=intr,
                                world_from_cam=T.copy() if with_poses else None))
            truth[(cam, stamp)] = (depth, T, intr)
    return Sequence(frames, truth)


def collect_published(results, out: dict | None = None) -> dict:
    """{(camera, stamp): global world_from_cam} of the views each result published first."""
    out = {} if out is None else out
    for r in results:
        for i in np.nonzero(r.is_new)[0]:
            f = r.prediction.frames[i]
            out[(f.camera, f.stamp_ns)] = r.world_from_cam[i]
    return out


def ate_after_sim3(est: dict, seq: Sequence) -> tuple[float, float]:
    """(RMS centre error after Sim(3) alignment, ground-truth path length), metres."""
    keys = sorted(est, key=lambda k: (k[1], k[0]))
    E = np.array([est[k][:3, 3] for k in keys])
    G = np.array([seq.truth[k][1][:3, 3] for k in keys])
    s, R, t = umeyama(E, G)
    err = G - (s * E @ R.T + t)
    path = float(np.sum(np.linalg.norm(np.diff(G, axis=0), axis=1)))
    return float(np.sqrt(np.mean(np.sum(err ** 2, axis=1)))), path
