"""Procedural 3-D scenes with exact depth and poses, rendered by vectorised ray casting.

Used by ``da3-synth`` (bags with ground truth), the tests and the demo. ROS-free, numpy only.

Conventions:
- World frame: metres, z up (REP-103 style); the floor / ground is ``z = 0``.
- Camera poses are ``world_from_cam`` (4, 4) camera-to-world in the OpenCV optical
  frame (x right, y down, z forward).
- Depth is z-depth along the optical axis in metres; ``inf`` where a ray hits nothing (sky).

Scene kinds: ``room`` (textured walls / floor / ceiling, objects inside), ``corridor``
(long textured hall, pillars along the walls), ``outdoor`` (ground plane, buildings,
far backdrop, sky at infinite depth), ``boxes`` (a cluster of boxes and spheres seen
from an orbit, inside a large hall). Every surface carries a procedural, aperiodic
colour texture (hashed cell noise at two scales plus oriented sine waves) so a
multi-view network has something to match. Everything is deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from da3_ros.core.frames import CameraIntrinsics, pinhole_intrinsics
from da3_ros.sim.layouts import TRAJECTORY_STYLES, body_poses_at, build_layout, look_pose

__all__ = ["EPOCH_NS", "SCENE_KINDS", "TRAJECTORY_STYLES", "Scene", "default_intrinsics", "look_pose",
           "make_scene", "make_trajectory", "rig_offsets", "trajectory_at"]

SCENE_KINDS = ("room", "corridor", "outdoor", "boxes")
_NEAR = 1e-3
_LIGHT = np.array([0.35, 0.25, 0.90]) / np.linalg.norm([0.35, 0.25, 0.90])
_AXIS_SHADE = (0.5 + 0.5 * np.abs(_LIGHT)).astype(np.float32)  # lambert factor of x / y / z faces
# Texture waves: fixed directions and frequencies in each material's texture space.
_WAVES = np.array([[0.8, 0.5, 0.33], [-0.3, 0.9, -0.3], [0.2, -0.4, 0.9]], dtype=np.float32) * 2.6
# Start of every synthetic bag's clock (ns); realistic epoch stamps.
EPOCH_NS = 1_750_000_000_000_000_000


@dataclass
class _Materials:
    """Per-material texture parameters, arrays indexed by material id (M,)."""

    colours: np.ndarray  # (M, 6) float32: colour A (3) and colour B (3), both in [0, 1]
    scale: np.ndarray  # (M,) texture frequency, cells per metre
    offset: np.ndarray  # (M,) texture-space offset (decorrelates materials)


def _random_materials(rng: np.random.Generator, n: int) -> _Materials:
    hue = rng.uniform(0, 1, n)
    col_a = _hsv_to_rgb(hue, rng.uniform(0.3, 0.8, n), rng.uniform(0.6, 0.95, n))
    col_b = _hsv_to_rgb((hue + rng.uniform(0.15, 0.5, n)) % 1, rng.uniform(0.2, 0.7, n),
                        rng.uniform(0.1, 0.45, n))
    return _Materials(colours=np.concatenate([col_a, col_b], 1).astype(np.float32),
                      scale=rng.uniform(1.5, 4.0, n).astype(np.float32),
                      offset=rng.uniform(0, 500, n).astype(np.float32))


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(N,) HSV in [0, 1] to (N, 3) RGB in [0, 1]."""
    k = (np.array([5.0, 3.0, 1.0])[None] + 6.0 * h[:, None]) % 6.0
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _cell_noise(qx: np.ndarray, qy: np.ndarray, qz: np.ndarray) -> np.ndarray:
    """Hashed value in [0, 1] per integer cell of texture coordinates (each (H, W))."""
    def cell(q):
        return np.floor(q).astype(np.int32).view(np.uint32)

    h = (cell(qx) * np.uint32(73856093)) ^ (cell(qy) * np.uint32(19349663)) ^ (cell(qz) * np.uint32(83492791))
    h ^= h >> np.uint32(13)
    h *= np.uint32(1274126177)
    h ^= h >> np.uint32(16)
    return (h & np.uint32(0xFFFF)).astype(np.float32) * np.float32(1.0 / 65535.0)


@dataclass
class Scene:
    """A static scene of axis-aligned boxes, spheres, an optional enclosing hall and ground.

    Attributes:
        kind: one of :data:`SCENE_KINDS`.
        seed: the seed it was built from.
        boxes: (B, 2, 3) float32 min / max corners (world, metres) of solid boxes.
        box_mat: (B,) material ids.
        spheres: (P, 4) float32 centre xyz and radius (metres).
        sphere_mat: (P,) material ids.
        hall: (2, 3) min / max corners of an enclosing box seen from inside, or None.
        hall_mat: (6,) material id per hall face (-x, +x, -y, +y, floor, ceiling).
        ground_extent_m: half size of a square ground plane at z = 0, or 0 for none.
        ground_mat: material id of the ground.
        materials: texture parameters.
    """

    kind: str
    seed: int
    boxes: np.ndarray
    box_mat: np.ndarray
    spheres: np.ndarray
    sphere_mat: np.ndarray
    hall: np.ndarray | None
    hall_mat: np.ndarray
    ground_extent_m: float
    ground_mat: int
    materials: _Materials

    def is_free(self, points: np.ndarray, margin_m: float = 0.0) -> np.ndarray:
        """Whether world points (N, 3) lie in free space, at least ``margin_m`` from any solid."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        ok = np.ones(len(p), dtype=bool)
        if self.hall is not None:
            ok &= np.all((p > self.hall[0] + margin_m) & (p < self.hall[1] - margin_m), axis=1)
        if self.ground_extent_m > 0:
            ok &= p[:, 2] > margin_m
        for lo, hi in self.boxes:
            ok &= ~np.all((p > lo - margin_m) & (p < hi + margin_m), axis=1)
        for c in self.spheres:
            ok &= np.linalg.norm(p - c[:3], axis=1) > c[3] + margin_m
        return ok

    def render(self, world_from_cam: np.ndarray, K: np.ndarray, width: int,
               height: int) -> tuple[np.ndarray, np.ndarray]:
        """Render one pinhole view.

        Args:
            world_from_cam: (4, 4) camera-to-world pose, OpenCV optical axes.
            K: (3, 3) intrinsics in pixels (pixel centres at integer coordinates).
            width: image width in pixels.
            height: image height in pixels.

        Returns:
            rgb: (H, W, 3) uint8. depth: (H, W) float32 z-depth in metres, ``inf`` where
            the ray hits nothing (sky).
        """
        T = np.asarray(world_from_cam, dtype=np.float64)
        R, o = T[:3, :3], T[:3, 3]
        K = np.asarray(K, dtype=np.float64)
        ray = _Rays(R, o, K, int(width), int(height))
        hit = _Hits(ray.shape)
        if self.hall is not None:
            _hit_hall(hit, ray, self.hall, self.hall_mat)
        if self.ground_extent_m > 0:
            _hit_ground(hit, ray, self.ground_extent_m, self.ground_mat)
        for (lo, hi), mat in zip(self.boxes, self.box_mat):
            sl = _screen_rect(np.stack([lo, hi]), R, o, K, width, height)
            if sl is not None:
                _hit_box(hit, ray, sl, lo, hi, int(mat))
        for c, mat in zip(self.spheres, self.sphere_mat):
            sl = _screen_rect(np.stack([c[:3] - c[3], c[:3] + c[3]]), R, o, K, width, height)
            if sl is not None:
                _hit_sphere(hit, ray, sl, c, int(mat))
        return self._shade(hit, ray), hit.t

    def _shade(self, hit: _Hits, ray: _Rays) -> np.ndarray:
        """(H, W, 3) uint8: textured, lambert-shaded colour of every hit; sky gradient elsewhere."""
        m = self.materials
        sky = ~np.isfinite(hit.t)
        t = np.where(sky, np.float32(0), hit.t)
        s, off = m.scale[hit.mat], m.offset[hit.mat]
        q = [(ray.o[i] + t * ray.d[i]) * s + off for i in range(3)]
        value = 0.45 * _cell_noise(*q) + 0.25 * _cell_noise(*(c * np.float32(3.1) for c in q))
        waves = sum(np.sin(q[0] * w[0] + q[1] * w[1] + q[2] * w[2]) for w in _WAVES)
        value += np.float32(0.3 / 6) * (np.float32(3.0) + waves)
        col = m.colours[hit.mat]
        rgb = (col[..., 3:] + (col[..., :3] - col[..., 3:]) * value[..., None]) * hit.shade[..., None]
        if sky.any():
            d = ray.d
            elev = np.clip(d[2] / np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]), 0, 1)[..., None]
            sky_rgb = (1 - elev) * np.array([0.80, 0.87, 0.95], np.float32) + elev * np.array(
                [0.35, 0.55, 0.90], np.float32)
            rgb = np.where(sky[..., None], sky_rgb, rgb)
        return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


class _Rays:
    """Camera rays in the world frame, planar float32 (H, W) components.

    ``d`` is unnormalised with camera-frame z = 1, so a ray parameter equals z-depth.
    """

    def __init__(self, R: np.ndarray, o: np.ndarray, K: np.ndarray, width: int, height: int):
        u = ((np.arange(width) - K[0, 2]) / K[0, 0]).astype(np.float32)[None, :]
        v = ((np.arange(height) - K[1, 2]) / K[1, 1]).astype(np.float32)[:, None]
        u = u - np.float32(K[0, 1] / K[0, 0]) * v  # skew
        R = R.astype(np.float32)
        self.shape = (height, width)
        self.o = o.astype(np.float32)
        self.d = [R[i, 0] * u + R[i, 1] * v + R[i, 2] for i in range(3)]
        with np.errstate(divide="ignore"):
            self.inv = [np.float32(1.0) / c for c in self.d]


class _Hits:
    """Nearest hit so far per pixel: z-depth ``t``, material id and shading factor, each (H, W)."""

    def __init__(self, shape: tuple[int, int]):
        self.t = np.full(shape, np.inf, dtype=np.float32)
        self.mat = np.zeros(shape, dtype=np.int32)
        self.shade = np.ones(shape, dtype=np.float32)

    def update(self, sl, t: np.ndarray, mat, shade) -> None:
        """Keep hits ``t`` nearer than the current ones in the pixel region ``sl``."""
        closer = t < self.t[sl]
        np.copyto(self.t[sl], t, where=closer)
        np.copyto(self.mat[sl], mat, where=closer)
        np.copyto(self.shade[sl], shade, where=closer)


_FULL = (slice(None), slice(None))


def _screen_rect(aabb: np.ndarray, R: np.ndarray, o: np.ndarray, K: np.ndarray, width: int,
                 height: int):
    """Pixel region (slice pair) covering a world AABB (2, 3); None if behind / off-screen."""
    corners = np.array([[aabb[i, 0], aabb[j, 1], aabb[k, 2]]
                        for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    pc = (corners - o) @ R
    z = pc[:, 2]
    if np.all(z <= _NEAR):
        return None
    if np.any(z <= _NEAR):
        return _FULL
    uu = K[0, 0] * pc[:, 0] / z + K[0, 1] * pc[:, 1] / z + K[0, 2]
    vv = K[1, 1] * pc[:, 1] / z + K[1, 2]
    u0, u1 = max(int(np.floor(uu.min())) - 1, 0), min(int(np.ceil(uu.max())) + 2, width)
    v0, v1 = max(int(np.floor(vv.min())) - 1, 0), min(int(np.ceil(vv.max())) + 2, height)
    if u0 >= u1 or v0 >= v1:
        return None
    return (slice(v0, v1), slice(u0, u1))


def _slab(ray: _Rays, sl, axis: int, lo: float, hi: float):
    """Entry and exit ray parameters through the slab lo <= x_axis <= hi, each (h, w)."""
    inv = ray.inv[axis][sl]
    with np.errstate(invalid="ignore"):
        a = np.float32(lo - ray.o[axis]) * inv
        b = np.float32(hi - ray.o[axis]) * inv
    return np.minimum(a, b), np.maximum(a, b)


def _hit_box(hit: _Hits, ray: _Rays, sl, lo, hi, mat: int) -> None:
    """Outside of a solid axis-aligned box."""
    (x0, x1), (y0, y1), (z0, z1) = (_slab(ray, sl, i, lo[i], hi[i]) for i in range(3))
    t_near = np.maximum(np.maximum(x0, y0), z0)
    t_far = np.minimum(np.minimum(x1, y1), z1)
    t = np.where((t_near <= t_far) & (t_near > _NEAR), t_near, np.float32(np.inf))
    shade = np.where(t_near == x0, _AXIS_SHADE[0], np.where(t_near == y0, _AXIS_SHADE[1], _AXIS_SHADE[2]))
    hit.update(sl, t, mat, shade)


def _hit_hall(hit: _Hits, ray: _Rays, hall: np.ndarray, face_mat: np.ndarray) -> None:
    """Inside of an enclosing box: where each ray leaves it (faces -x, +x, -y, +y, -z, +z)."""
    ex = [_slab(ray, _FULL, i, hall[0, i], hall[1, i])[1] for i in range(3)]
    ex = [np.where(np.isnan(e), np.float32(np.inf), e) for e in ex]
    t = np.minimum(np.minimum(ex[0], ex[1]), ex[2])
    on_x, on_y = t == ex[0], t == ex[1]
    face = np.where(on_x, 0, np.where(on_y, 2, 4)) + (np.where(on_x, ray.d[0], np.where(
        on_y, ray.d[1], ray.d[2])) > 0)
    shade = np.where(on_x, _AXIS_SHADE[0], np.where(on_y, _AXIS_SHADE[1], _AXIS_SHADE[2]))
    hit.update(_FULL, np.where(t > _NEAR, t, np.float32(np.inf)), face_mat[face], shade)


def _hit_ground(hit: _Hits, ray: _Rays, extent: float, mat: int) -> None:
    """Square ground plane z = 0 of half size ``extent`` metres, seen from above."""
    dz = ray.d[2]
    with np.errstate(invalid="ignore"):
        t = np.where(dz < 0, -ray.o[2] * ray.inv[2], np.float32(np.inf))
        inside = (np.abs(ray.o[0] + t * ray.d[0]) < extent) & (np.abs(ray.o[1] + t * ray.d[1]) < extent)
    hit.update(_FULL, np.where(inside, t, np.float32(np.inf)), mat, _AXIS_SHADE[2])


def _hit_sphere(hit: _Hits, ray: _Rays, sl, sphere: np.ndarray, mat: int) -> None:
    """Outside of a solid sphere (centre xyz, radius) in metres."""
    c, r = sphere[:3].astype(np.float32), np.float32(sphere[3])
    oc = ray.o - c
    dx, dy, dz = (ray.d[i][sl] for i in range(3))
    a = dx * dx + dy * dy + dz * dz
    b = dx * oc[0] + dy * oc[1] + dz * oc[2]
    disc = b * b - a * np.float32(oc @ oc - r * r)
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    t = np.where((disc >= 0) & (t > _NEAR), t, np.float32(np.inf))
    tf = np.where(np.isfinite(t), t, np.float32(0))
    n_dot_l = sum((oc[i] + tf * d) * np.float32(_LIGHT[i]) for i, d in enumerate((dx, dy, dz))) / r
    hit.update(sl, t, mat, 0.5 + 0.5 * np.abs(n_dot_l))


def default_intrinsics(width: int, height: int, hfov_deg: float = 70.0) -> CameraIntrinsics:
    """The synthetic camera: distortion-free, square pixels, centred principal point, 70 deg FOV."""
    return pinhole_intrinsics(width, height, hfov_deg)


def rig_offsets(n_cameras: int, spacing_deg: float = 40.0, radius_m: float = 0.08) -> np.ndarray:
    """(K, 4, 4) ``body_from_cam`` for a rig of K cameras yawed around the body.

    The body frame is an optical frame (x right, y down, z forward) at the rig centre.
    One camera: identity. K cameras: yaws ``(k - (K-1)/2) * spacing_deg`` (camera 0 the
    leftmost), each ``radius_m`` out from the centre along its own optical axis, so
    neighbours overlap (70 degree field of view) with a small baseline.
    """
    out = np.tile(np.eye(4), (int(n_cameras), 1, 1))
    if n_cameras <= 1:
        return out
    for k in range(n_cameras):
        yaw = np.radians((k - (n_cameras - 1) / 2.0) * spacing_deg)
        c, s = np.cos(yaw), np.sin(yaw)
        out[k, :3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]  # about the optical y (down) axis
        out[k, :3, 3] = radius_m * out[k, :3, 2]
    return out


def make_scene(kind: str, seed: int) -> Scene:
    """Build the scene ``kind`` (one of :data:`SCENE_KINDS`), deterministic for ``seed``."""
    if kind not in SCENE_KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; expected one of {', '.join(SCENE_KINDS)}")
    rng = np.random.default_rng([int(seed), SCENE_KINDS.index(kind)])
    layout = build_layout(kind, rng, int(seed))
    materials = _random_materials(rng, layout.n_materials)
    return Scene(kind=kind, seed=int(seed), materials=materials, **layout.fields())


def trajectory_at(scene_kind: str, times_s: np.ndarray, seed: int, style: str = "survey") -> np.ndarray:
    """(N, 4, 4) body ``world_from_cam`` (optical axes) at times ``times_s`` (N,) seconds.

    ``style`` is one of :data:`TRAJECTORY_STYLES`: ``survey`` (looking roughly along the path)
    or ``scan`` (the same positions, panning far left and right, so depth changes fast).
    """
    if scene_kind not in SCENE_KINDS:
        raise ValueError(f"unknown scene kind {scene_kind!r}")
    return body_poses_at(scene_kind, np.asarray(times_s, dtype=np.float64), int(seed), style)


def make_trajectory(scene_kind: str, n_frames: int, rate_hz: float,
                    seed: int, style: str = "survey") -> tuple[np.ndarray, np.ndarray]:
    """A smooth camera trajectory through the free space of ``make_scene(scene_kind, seed)``.

    ``style``: see :func:`trajectory_at` (the positions are the same in every style).

    Returns:
        stamps_ns: (N,) int64 stamps at ``rate_hz`` with a small deterministic jitter
            (up to 2 % of the period), starting at a fixed epoch.
        world_from_cam: (N, 4, 4) camera-to-world poses (optical axes) at those stamps.
    """
    rng = np.random.default_rng([int(seed), 7919])
    period_ns = 1e9 / float(rate_hz)
    jitter = rng.uniform(-0.02, 0.02, int(n_frames)) * period_ns
    stamps_ns = (EPOCH_NS + np.round(np.arange(int(n_frames)) * period_ns + jitter)).astype(np.int64)
    times_s = (stamps_ns - EPOCH_NS).astype(np.float64) * 1e-9
    return stamps_ns, trajectory_at(scene_kind, times_s, seed, style)
