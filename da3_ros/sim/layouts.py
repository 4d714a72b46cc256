"""Layouts and camera paths of the procedural scenes (private helper of :mod:`da3_ros.sim.scene`).

World frame: metres, z up, floor / ground at ``z = 0``. Each scene kind has one closed-form
camera path (position and viewing direction as smooth functions of time, phases drawn
from the seed), seen in one of :data:`TRAJECTORY_STYLES`: ``survey`` looks roughly along the
path (the distance to what the camera sees changes slowly), ``scan`` follows the same
positions while the camera pans far left and right (as a robot turning or panning its head:
it faces a wall one second and the length of the room the next). Objects are placed by
rejection sampling so that every point the path can ever reach keeps a clearance from them,
so any duration stays in free space.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_CLEARANCE_M = 0.7
TRAJECTORY_STYLES = ("survey", "scan")


def look_pose(position: np.ndarray, forward: np.ndarray, roll_rad: float = 0.0) -> np.ndarray:
    """(4, 4) world_from_cam (optical axes) at ``position`` looking along world ``forward`` (3,).

    The camera's x axis is horizontal (no roll) before ``roll_rad`` turns it about z.
    """
    z = np.asarray(forward, dtype=np.float64)
    z = z / np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    cr, sr = np.cos(roll_rad), np.sin(roll_rad)
    x, y = cr * x + sr * y, -sr * x + cr * y
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = position
    return T


@dataclass
class Layout:
    """Geometry of a scene before materials are drawn (see ``Scene`` for the fields)."""

    boxes: list = field(default_factory=list)  # [(lo (3,), hi (3,))]
    spheres: list = field(default_factory=list)  # [(x, y, z, r)]
    hall: np.ndarray | None = None
    ground_extent_m: float = 0.0

    @property
    def n_materials(self) -> int:
        """6 hall faces, the ground, then one per box and per sphere."""
        return 7 + len(self.boxes) + len(self.spheres)

    def fields(self) -> dict:
        """Keyword arguments for ``Scene`` (material ids assigned in a fixed order)."""
        nb, ns = len(self.boxes), len(self.spheres)
        boxes = np.array(self.boxes, dtype=np.float32).reshape(nb, 2, 3)
        return {"boxes": boxes, "box_mat": np.arange(7, 7 + nb),
                    "spheres": np.array(self.spheres, dtype=np.float32).reshape(ns, 4),
                    "sphere_mat": np.arange(7 + nb, 7 + nb + ns), "hall": self.hall,
                    "hall_mat": np.arange(6), "ground_extent_m": float(self.ground_extent_m), "ground_mat": 6}


# ---------------------------------------------------------------- camera paths
def _phases(kind: str, seed: int) -> np.ndarray:
    return np.random.default_rng([int(seed), 104729, len(kind)]).uniform(0, 2 * np.pi, 6)


def _ring_path(t: np.ndarray, ph: np.ndarray, a: float, b: float, speed: float, height: float,
               inward_deg: float, centre_target: np.ndarray | None = None):
    """Positions and forward vectors (N, 3) on an ellipse around the origin."""
    omega = speed / np.sqrt(0.5 * (a * a + b * b))
    th = ph[0] + omega * t
    pos = np.stack([a * np.cos(th), b * np.sin(th), height + 0.08 * np.sin(0.9 * t + ph[1])], 1)
    if centre_target is not None:
        fwd = centre_target[None] - pos
        fwd[:, 2] = 0
        fwd /= np.linalg.norm(fwd, axis=1, keepdims=True)
    else:
        tan = np.stack([-a * np.sin(th), b * np.cos(th), 0 * th], 1)
        tan /= np.linalg.norm(tan, axis=1, keepdims=True)
        inward = -np.stack([np.cos(th), np.sin(th), 0 * th], 1)
        w = np.radians(inward_deg)
        fwd = np.cos(w) * tan + np.sin(w) * inward
    return pos, fwd


def _scan_yaw(kind: str, t: np.ndarray, seed: int) -> np.ndarray:
    """(N,) extra yaw (rad) of the ``scan`` style: a pan of 57-92 degrees amplitude, 6-12 s period.

    Two sines (the second at 0.37x the frequency and a third of the amplitude), so the pan is
    not periodic; peak rate about 1.4 rad/s. Drawn from its own stream of ``seed``.
    """
    rng = np.random.default_rng([int(seed), 15485863, len(kind)])
    amp, period, ph0, ph1 = rng.uniform(1.0, 1.6), rng.uniform(6.0, 12.0), *rng.uniform(0, 2 * np.pi, 2)
    w = 2 * np.pi / period
    return amp * np.sin(w * t + ph0) + (amp / 3) * np.sin(0.37 * w * t + ph1)


def _path(kind: str, t: np.ndarray, seed: int, style: str = "survey"):
    """Body position (N, 3) and forward (N, 3) for times ``t`` (N,) seconds."""
    if style not in TRAJECTORY_STYLES:
        raise ValueError(f"unknown trajectory style {style!r}; "
                         f"expected one of {', '.join(TRAJECTORY_STYLES)}")
    ph = _phases(kind, seed)
    if kind == "room":
        pos, fwd = _ring_path(t, ph, 2.6, 1.9, 0.5, 1.4, 25.0)
    elif kind == "outdoor":
        pos, fwd = _ring_path(t, ph, 12.0, 12.0, 1.2, 1.6, 15.0)
    elif kind == "boxes":
        pos, fwd = _ring_path(t, ph, 4.8, 4.8, 0.6, 1.6, 0.0, centre_target=np.zeros(3))
    else:  # corridor: smooth back-and-forth along x, always facing +x
        start = 0.3 + 0.5 * ph[0] / (2 * np.pi)
        x = -2.0 - 25.0 * np.cos(start + 0.04 * t)
        pos = np.stack([x, 0.35 * np.sin(0.3 * t + ph[1]), 1.45 + 0.05 * np.sin(0.7 * t + ph[2])], 1)
        fwd = np.stack([np.ones_like(t), 0 * t, 0 * t], 1)
    yaw = 0.10 * np.sin(0.6 * t + ph[3])
    if style == "scan":
        yaw = yaw + _scan_yaw(kind, t, seed)
    c, s = np.cos(yaw), np.sin(yaw)
    fwd = np.stack([c * fwd[:, 0] - s * fwd[:, 1], s * fwd[:, 0] + c * fwd[:, 1],
                    fwd[:, 2] - 0.08 + 0.05 * np.sin(0.45 * t + ph[4])], 1)
    return pos, fwd


def body_poses_at(kind: str, t: np.ndarray, seed: int, style: str = "survey") -> np.ndarray:
    """(N, 4, 4) body world_from_cam (optical axes) at times ``t`` (N,) seconds, in ``style``."""
    pos, fwd = _path(kind, t, seed, style)
    roll = 0.03 * np.sin(0.5 * t + _phases(kind, seed)[5])
    return np.stack([look_pose(p, f, r) for p, f, r in zip(pos, fwd, roll)])


def _reach_samples(kind: str) -> np.ndarray:
    """(M, 3) points covering everywhere the path of ``kind`` can go, for any seed and time."""
    th = np.linspace(0, 2 * np.pi, 240, endpoint=False)
    if kind == "corridor":
        x = np.arange(-28.0, 24.0, 0.2)
        pts = [np.stack([x, np.full_like(x, y), np.full_like(x, z)], 1)
               for y in (-0.45, 0.0, 0.45) for z in (1.35, 1.55)]
        return np.concatenate(pts)
    a, b, h = {"room": (2.6, 1.9, 1.4), "outdoor": (12.0, 12.0, 1.6), "boxes": (4.8, 4.8, 1.6)}[kind]
    return np.concatenate([np.stack([a * np.cos(th), b * np.sin(th), np.full_like(th, z)], 1)
                           for z in (h - 0.1, h + 0.1)])


# ---------------------------------------------------------------- object placement
def _box_clear(lo, hi, reach: np.ndarray, boxes: list) -> bool:
    gap = np.maximum(np.maximum(lo - reach, reach - hi), 0.0)
    if np.min(np.linalg.norm(gap, axis=1)) < _CLEARANCE_M:
        return False
    return all(np.any(lo >= bh + 0.05) or np.any(hi <= bl - 0.05) for bl, bh in boxes)


def _place_boxes(rng, layout: Layout, reach, n: int, xy_lo, xy_hi, size_lo, size_hi,
                 z0=(0.0, 0.0)) -> None:
    """Add up to ``n`` boxes with footprint centres in [xy_lo, xy_hi] and sizes in the ranges."""
    for _ in range(n * 30):
        if n == 0:
            return
        size = rng.uniform(size_lo, size_hi)
        centre = rng.uniform(xy_lo, xy_hi)
        base = rng.uniform(*z0)
        lo = np.array([centre[0] - size[0] / 2, centre[1] - size[1] / 2, base])
        hi = np.array([centre[0] + size[0] / 2, centre[1] + size[1] / 2, base + size[2]])
        if layout.hall is not None:
            lo, hi = np.maximum(lo, layout.hall[0]), np.minimum(hi, layout.hall[1])
        if _box_clear(lo, hi, reach, layout.boxes):
            layout.boxes.append((lo, hi))
            n -= 1


def _place_spheres(rng, layout: Layout, reach, n: int, xy_lo, xy_hi, r_range, z_range=None) -> None:
    """Add up to ``n`` spheres (resting on the floor unless ``z_range`` is given)."""
    for _ in range(n * 30):
        if n == 0:
            return
        r = rng.uniform(*r_range)
        xy = rng.uniform(xy_lo, xy_hi)
        c = np.array([xy[0], xy[1], r if z_range is None else rng.uniform(*z_range)])
        if np.min(np.linalg.norm(reach - c, axis=1)) < r + _CLEARANCE_M:
            continue
        if any(np.all(c + r > bl) and np.all(c - r < bh) for bl, bh in layout.boxes):
            continue
        layout.spheres.append((*c, r))
        n -= 1


def build_layout(kind: str, rng: np.random.Generator, seed: int) -> Layout:
    """Objects of scene ``kind`` placed clear of its camera path."""
    reach = _reach_samples(kind)
    lay = Layout()
    if kind == "room":
        lay.hall = np.array([[-5.0, -4.0, 0.0], [5.0, 4.0, 3.0]])
        _place_boxes(rng, lay, reach, 4, [-1.2, -0.8], [1.2, 0.8], [0.3, 0.3, 0.3], [0.9, 0.9, 1.6])
        _place_boxes(rng, lay, reach, 8, [-4.6, -3.6], [4.6, 3.6], [0.4, 0.4, 0.4], [1.2, 1.2, 2.2])
        _place_spheres(rng, lay, reach, 3, [-1.4, -1.0], [1.4, 1.0], [0.15, 0.45])
        _place_spheres(rng, lay, reach, 3, [-4.5, -3.5], [4.5, 3.5], [0.15, 0.4], (0.5, 2.5))
    elif kind == "corridor":
        lay.hall = np.array([[-30.0, -1.6, 0.0], [30.0, 1.6, 2.8]])
        for side in (-1, 1):
            _place_boxes(rng, lay, reach, 14, [-29.5, side * 1.45], [29.5, side * 1.45],
                         [0.25, 0.2, 0.6], [0.8, 0.5, 2.8])
        _place_spheres(rng, lay, reach, 8, [-29.0, -1.2], [29.0, 1.2], [0.1, 0.25], (2.35, 2.55))
    elif kind == "outdoor":
        lay.ground_extent_m = 200.0
        _place_boxes(rng, lay, reach, 6, [-8.0, -8.0], [8.0, 8.0], [1.0, 1.0, 1.0], [4.0, 4.0, 7.0])
        _place_boxes(rng, lay, reach, 24, [-45.0, -45.0], [45.0, 45.0], [1.5, 1.5, 2.0], [6.0, 6.0, 14.0])
        _place_spheres(rng, lay, reach, 10, [-30.0, -30.0], [30.0, 30.0], [0.5, 1.6])
        for ang in np.linspace(0, 2 * np.pi, 12, endpoint=False) + rng.uniform(0, 0.5):
            d, w, h = rng.uniform(90, 130), rng.uniform(20, 50), rng.uniform(10, 40)
            c = d * np.array([np.cos(ang), np.sin(ang)])
            lay.boxes.append((np.array([c[0] - w / 2, c[1] - w / 2, 0.0]),
                              np.array([c[0] + w / 2, c[1] + w / 2, h])))
    elif kind == "boxes":
        lay.hall = np.array([[-15.0, -15.0, 0.0], [15.0, 15.0, 8.0]])
        _place_boxes(rng, lay, reach, 10, [-2.4, -2.4], [2.4, 2.4], [0.3, 0.3, 0.3], [1.2, 1.2, 1.6])
        _place_spheres(rng, lay, reach, 5, [-2.6, -2.6], [2.6, 2.6], [0.2, 0.6])
        _place_boxes(rng, lay, reach, 12, [-14.0, -14.0], [14.0, 14.0], [0.5, 0.5, 1.0], [3.0, 3.0, 5.0])
    return lay
