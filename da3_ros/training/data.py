"""Synthetic multi-view training windows rendered from :mod:`da3_ros.sim.scene`.

Every training step gets one *batch* of windows sharing a view count S and an input size
(H, W), generated deterministically from ``(seed, step)`` so a resumed run sees exactly the
batches it would have seen (whatever the number of DataLoader workers).

A window: a random scene kind and seed, S in [min_views, max_views] views taken along the
scene's trajectory (in a share ``scan_prob`` of windows its ``scan`` style, panning far left and
right, so that a window's views see surfaces at very different distances and one view's scale
relative to the others is something the network has to get right) with random time gaps
(or, with probability ``rig_prob``, the cameras of a yawed rig at one or two instants), random
horizontal field of view, colour jitter and, in a share of windows (``effects_prob``), a robot
camera's degradations per view (:mod:`da3_ros.sim.camera_effects`: sensor noise in every view,
motion blur or a bad exposure in some), so that a view's depth sometimes has to come from its
neighbours.

Rendering dominates the cost of a step, so a rendered group of windows can serve ``echo``
consecutive steps: each reuse draws new colour jitter, new camera degradations and (with
``shuffle_prob``) a new view order, hence a new reference view and new camera truth.
Ground truth is expressed as DA3 defines its outputs for ``ref_view_strategy="first"``:

- world frame = view 0's camera (OpenCV optical axes);
- depth and translations divided by the mean valid depth of the window, so that mean is 1;
- invalid pixels (sky, ``inf``) have depth 0 and ``valid`` False.

Scene seeds are drawn from ``[TRAIN_SEED_MIN, 2**31)``; seeds below are held out for
evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from da3_ros.core.resampling import IMAGENET_MEAN, IMAGENET_STD, PATCH
from da3_ros.sim.camera_effects import CameraEffects, apply_view_effect, sample_window_effects
from da3_ros.sim.scene import SCENE_KINDS, default_intrinsics, make_scene, rig_offsets, trajectory_at

TRAIN_SEED_MIN = 1000
_MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class DataConfig:
    """What the synthetic windows look like.

    Attributes:
        min_views, max_views: range of S (inclusive).
        views_per_batch: B is ``max(1, views_per_batch // S)``.
        base_hw: (H, W) around which input sizes vary; sides are multiples of 14.
        area_range: input area as a fraction of ``H * W`` of ``base_hw``.
        aspect_range: W / H range.
        gap_s: range of the time gap (s) between consecutive views of a window.
        hfov_deg: range of horizontal field of view.
        rig_prob: probability of a multi-camera rig window instead of a temporal one.
        shuffle_prob: probability of shuffling a temporal window's views (view 0, the
            reference, is then any of them, as with a reference-view strategy other than first).
        supersample_prob: probability of rendering a window at 2x and area-downsampling
            (smooth images like a resized camera image, as the engine feeds at inference).
        scan_prob: probability of a window following the ``scan`` trajectory style (the same
            positions, panning far left and right) instead of ``survey``.
        effects_prob: probability of a window getting camera degradations (``effects``).
        effects: the degradations' distribution (sensor noise, motion blur, exposure).
        echo: how many consecutive steps one rendered group of windows serves (>= 1).
        kinds: scene kinds to draw from.
        seed: base seed of the stream.
    """

    min_views: int = 2
    max_views: int = 8
    views_per_batch: int = 48
    base_hw: tuple[int, int] = (168, 224)
    area_range: tuple[float, float] = (0.7, 1.4)
    aspect_range: tuple[float, float] = (0.75, 2.0)
    gap_s: tuple[float, float] = (0.08, 0.8)
    hfov_deg: tuple[float, float] = (50.0, 95.0)
    rig_prob: float = 0.2
    supersample_prob: float = 0.5
    shuffle_prob: float = 0.0
    scan_prob: float = 0.0
    effects_prob: float = 0.0
    effects: CameraEffects = CameraEffects()
    echo: int = 1
    kinds: tuple[str, ...] = SCENE_KINDS
    seed: int = 0


def sample_size(rng: np.random.Generator, cfg: DataConfig) -> tuple[int, int]:
    """A random input size (H, W), both multiples of 14, around ``cfg.base_hw``."""
    area = cfg.base_hw[0] * cfg.base_hw[1] * rng.uniform(*cfg.area_range)
    aspect = np.exp(rng.uniform(np.log(cfg.aspect_range[0]), np.log(cfg.aspect_range[1])))
    h = max(4, int(round(np.sqrt(area / aspect) / PATCH)))
    w = max(4, int(round(np.sqrt(area * aspect) / PATCH)))
    return h * PATCH, w * PATCH


def _window_poses(rng: np.random.Generator, kind: str, seed: int, s: int,
                  cfg: DataConfig) -> np.ndarray:
    """(S, 4, 4) camera-to-world poses of one window (temporal or rig).

    The trajectory style is drawn only when ``cfg.scan_prob > 0``, so streams without it are
    those of the earlier training stages.
    """
    style = "scan" if cfg.scan_prob > 0 and rng.random() < cfg.scan_prob else "survey"
    t0 = rng.uniform(0.0, 300.0)
    if s >= 2 and rng.random() < cfg.rig_prob:
        n_cam = int(rng.integers(2, min(s, 4) + 1))
        n_t = -(-s // n_cam)
        times = t0 + np.cumsum(np.r_[0.0, rng.uniform(*cfg.gap_s, n_t - 1)])
        body = trajectory_at(kind, times, seed, style)
        rig = rig_offsets(n_cam, spacing_deg=rng.uniform(25.0, 50.0))
        poses = np.concatenate([b @ rig for b in body])[:s]
        return poses[rng.permutation(s)] if rng.random() < 0.5 else poses
    gaps = rng.uniform(*cfg.gap_s, s - 1) * rng.choice([1.0, 0.5, 2.0], p=[0.6, 0.2, 0.2])
    times = t0 + np.cumsum(np.r_[0.0, gaps])
    poses = trajectory_at(kind, times, seed, style)
    return poses[rng.permutation(s)] if cfg.shuffle_prob > 0 and rng.random() < cfg.shuffle_prob else poses


def render_window(rng: np.random.Generator, s: int, hw: tuple[int, int],
                  cfg: DataConfig) -> dict[str, np.ndarray]:
    """Render one window of ``s`` views at size ``hw = (H, W)``.

    Returns:
        images (S, H, W, 3) uint8 RGB; depth (S, H, W) float32 metres (inf where none);
        world_from_cam (S, 4, 4) float64; K (S, 3, 3) float64 pixels.
    """
    h, w = hw
    kind = str(rng.choice(cfg.kinds))
    seed = int(rng.integers(TRAIN_SEED_MIN, _MAX_SEED))
    scene = make_scene(kind, seed)
    poses = _window_poses(rng, kind, seed, s, cfg)
    intr = default_intrinsics(w, h, hfov_deg=rng.uniform(*cfg.hfov_deg))
    K = intr.K
    if rng.random() < cfg.supersample_prob:
        k2 = intr.scaled(2 * w, 2 * h).K
        imgs, depths = zip(*(downsample2(*scene.render(p, k2, 2 * w, 2 * h)) for p in poses))
    else:
        imgs, depths = zip(*(scene.render(p, K, w, h) for p in poses))
    return {"images": np.stack(imgs), "depth": np.stack(depths).astype(np.float32),
            "world_from_cam": poses, "K": np.tile(K, (s, 1, 1))}


def downsample2(rgb: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Halve a (2H, 2W) render (RGB uint8, depth float32 metres) to (H, W).

    RGB by 2x2 area mean; depth by 2x2 mean where all four samples are valid and agree
    within 5 % (else ``inf``, so depth edges are left out of the loss).
    """
    h, w = depth.shape[0] // 2, depth.shape[1] // 2
    img = cv2.resize(rgb[:2 * h, :2 * w], (w, h), interpolation=cv2.INTER_AREA)
    q = [depth[i:2 * h:2, j:2 * w:2] for i in (0, 1) for j in (0, 1)]
    lo = np.minimum(np.minimum(q[0], q[1]), np.minimum(q[2], q[3]))
    hi = np.maximum(np.maximum(q[0], q[1]), np.maximum(q[2], q[3]))
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(hi) & (lo > 0) & (hi <= 1.05 * lo)
    mean = (q[0] + q[1] + q[2] + q[3]) * np.float32(0.25)
    return img, np.where(ok, mean, np.inf).astype(np.float32)


def normalise_window(depth: np.ndarray, world_from_cam: np.ndarray) -> dict[str, np.ndarray]:
    """Express a window's truth in DA3's output convention (world = view 0, mean depth 1).

    Args:
        depth: (S, H, W) z-depth metres, non-finite or <= 0 where invalid.
        world_from_cam: (S, 4, 4) camera-to-world in any world frame.

    Returns:
        depth (S, H, W) float32 normalised (0 where invalid), valid (S, H, W) bool,
        cam_to_ref (S, 4, 4) float32 camera-to-view-0 with normalised translation,
        scale (float, the factor applied: 1 / mean valid depth in metres).
    """
    valid = np.isfinite(depth) & (depth > 0)
    mean = float(depth[valid].mean()) if valid.any() else 1.0
    scale = 1.0 / mean
    rel = np.linalg.inv(world_from_cam[0]) @ world_from_cam
    rel[:, :3, 3] *= scale
    return {"depth": np.where(valid, depth * scale, 0.0).astype(np.float32), "valid": valid,
            "cam_to_ref": rel.astype(np.float32), "scale": scale}


def imagenet_normalise(images: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) uint8 RGB -> (..., 3, H, W) float32, the engine's normalisation."""
    x = (images.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def colour_jitter(rng: np.random.Generator, images: np.ndarray) -> np.ndarray:
    """Per-window brightness / contrast / gamma and small per-view gain on (S, H, W, 3) uint8."""
    x = images.astype(np.float32) / 255.0
    x = x ** rng.uniform(0.8, 1.25)
    x = (x - 0.5) * rng.uniform(0.75, 1.25) + 0.5 + rng.uniform(-0.1, 0.1)
    x = x * rng.uniform(0.92, 1.08, (len(x), 1, 1, 1)) * rng.uniform(0.95, 1.05, (1, 1, 1, 3))
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _augment(rng: np.random.Generator, win: dict[str, np.ndarray], cfg: DataConfig) -> np.ndarray:
    """(S, H, W, 3) uint8: a window's images with camera degradations (``effects_prob``), then jitter."""
    images = win["images"]
    if cfg.effects_prob > 0 and rng.random() < cfg.effects_prob:
        effects = sample_window_effects(rng, cfg.effects, len(images))
        images = np.stack([apply_view_effect(rng, im, fx) for im, fx in zip(images, effects)])
    return colour_jitter(rng, images)


def _sample(win: dict[str, np.ndarray], images: np.ndarray) -> dict[str, np.ndarray]:
    """One training sample (truth in DA3's convention, normalised images) of a rendered window."""
    norm = normalise_window(win["depth"], win["world_from_cam"])
    norm["images"] = imagenet_normalise(images)
    norm["K"] = win["K"].astype(np.float32)
    return norm


def _collate(items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    keys = ("images", "depth", "valid", "cam_to_ref", "K")
    return {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in keys}


def _reordered(rng: np.random.Generator, win: dict[str, np.ndarray], cfg: DataConfig) -> dict:
    """The window with its views in a new random order (with ``shuffle_prob``), else as it is."""
    if cfg.shuffle_prob <= 0 or rng.random() >= cfg.shuffle_prob:
        return win
    order = rng.permutation(len(win["images"]))
    return {k: v[order] for k, v in win.items()}


def make_group(group: int, cfg: DataConfig) -> list[dict[str, torch.Tensor]]:
    """The ``cfg.echo`` batches of steps ``group * echo ... group * echo + echo - 1``.

    The windows are rendered once (deterministic in ``(cfg.seed, group)`` and the config); the
    first batch is exactly what ``echo = 1`` gives for step ``group``, every later one re-draws
    jitter, camera degradations and view order from ``(cfg.seed, step)``. Rendering and the first
    batch's augmentation share one random stream (the stream of the earlier stages, kept so their
    commands still reproduce them), so turning camera effects on also changes which scenes the
    second and later windows of a batch show: runs with and without effects see different,
    equally distributed, scenes.

    Returns:
        ``echo`` dicts: images (B, S, 3, H, W) float32 normalised; depth (B, S, H, W) float32
        normalised (0 where invalid); valid (B, S, H, W) bool; cam_to_ref (B, S, 4, 4) float32
        camera-to-view-0 (normalised translation); K (B, S, 3, 3) float32 pixels.
    """
    echo = max(1, int(cfg.echo))
    rng = np.random.default_rng([int(cfg.seed), int(group), 0xDA3])
    s = int(rng.integers(cfg.min_views, cfg.max_views + 1))
    b = max(1, cfg.views_per_batch // s)
    hw = sample_size(rng, cfg)
    windows, first = [], []
    for _ in range(b):
        windows.append(render_window(rng, s, hw, cfg))
        first.append(_sample(windows[-1], _augment(rng, windows[-1], cfg)))
    batches = [_collate(first)]
    for k in range(1, echo):
        rng_k = np.random.default_rng([int(cfg.seed), int(group) * echo + k, 0xEC0])
        items = []
        for win in windows:
            win = _reordered(rng_k, win, cfg)
            items.append(_sample(win, _augment(rng_k, win, cfg)))
        batches.append(_collate(items))
    return batches


def make_batch(step: int, cfg: DataConfig) -> dict[str, torch.Tensor]:
    """The batch of training step ``step`` (deterministic in ``(cfg.seed, step)``; see make_group)."""
    group, k = divmod(int(step), max(1, int(cfg.echo)))
    return make_group(group, cfg)[k]


class SyntheticWindows(Dataset):
    """Map-style dataset whose item ``i`` is the list of batches of group ``start_group + i``.

    Every batch carries its ``step``. Use with ``DataLoader(ds, batch_size=None, num_workers=N)``
    and iterate over each item's list; a run resumed mid-group skips the steps it has done.
    """

    def __init__(self, cfg: DataConfig, start_step: int = 0, num_steps: int = 10**9) -> None:
        self.cfg, self.echo = cfg, max(1, int(cfg.echo))
        self.start_step, self.num_steps = int(start_step), int(num_steps)
        self.start_group = self.start_step // self.echo

    def __len__(self) -> int:
        return -(-self.num_steps // self.echo)

    def __getitem__(self, i: int) -> list[dict[str, torch.Tensor]]:
        group = self.start_group + int(i)
        out = []
        for k, batch in enumerate(make_group(group, self.cfg)):
            step = group * self.echo + k
            if step >= self.start_step:
                batch["step"] = torch.tensor(step)
                out.append(batch)
        return out


def worker_init(_worker_id: int) -> None:
    """DataLoader worker setup: one thread each (numpy rendering is the work)."""
    torch.set_num_threads(1)
