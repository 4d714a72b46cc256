"""The point cloud of a window: its new views unprojected, coloured, filtered and downsampled.

:func:`window_cloud` (numpy, the CPU path) and :func:`window_cloud_torch` (the same on any torch
device) take an aligned prediction and return points in the global frame: same filtering
(finite, > 0, depth range, confidence threshold), same pixel step, voxel averaging and
``max_points`` cap; the random subset of the cap is drawn by each one's own generator.
"""

from __future__ import annotations

import numpy as np
import torch

from da3_ros.core.config import PipelineConfig
from da3_ros.core.frames import WindowPrediction
from da3_ros.core.geometry import colored_points, voxel_downsample


def strided_view(pred: WindowPrediction, i: int, k: int) -> tuple[np.ndarray, ...]:
    """View ``i`` of a prediction at every ``k``-th pixel, the inputs of one view's cloud.

    Returns:
        depth (h, w), K (3, 3) rescaled for the kept pixels, world_from_cam (4, 4), image
        (h, w, 3), confidence (h, w); the maps are strided views, not copies.
    """
    K = pred.intrinsics[i].K.copy()
    K[:2] /= k  # exact for pixels u = k * u'
    return (pred.depth[i][::k, ::k], K, pred.world_from_cam[i], pred.frames[i].image[::k, ::k],
            pred.confidence[i][::k, ::k])


def window_cloud(pred: WindowPrediction, views: list[int], cfg: PipelineConfig,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fused coloured cloud of ``views`` of an aligned prediction (global frame)."""
    parts = [colored_points(*strided_view(pred, i, cfg.cloud_pixel_step), cfg.conf_threshold, cfg.min_depth_m,
                            cfg.max_depth_m) for i in views]
    if not parts:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32)
    pts, cols, conf = (np.concatenate(x) for x in zip(*parts))
    pts, cols, conf = voxel_downsample(pts, cols, conf, cfg.voxel_size_m)
    if cfg.max_points and len(pts) > cfg.max_points:
        keep = np.sort(rng.choice(len(pts), cfg.max_points, replace=False))
        pts, cols, conf = pts[keep], cols[keep], conf[keep]
    return pts, cols, conf


def _colored_points(depth, K, world_from_cam, image, conf, conf_threshold, min_depth, max_depth):
    """Torch twin of ``geometry.colored_points`` for a stack of views of one size (one device).

    Args:
        depth: (V, h, w) float depth.
        K: (V, 3, 3) float64 intrinsics of the strided pixels.
        world_from_cam: (V, 4, 4) float64 camera-to-world poses (optical axes).
        image: (V, h, w, 3) uint8 RGB.
        conf: (V, h, w) float confidence.
        conf_threshold: keep pixels with confidence >= this.
        min_depth: keep pixels with depth >= this.
        max_depth: keep pixels with depth <= this.

    Returns:
        points (N, 3) float32 (world frame), colours (N, 3) uint8, confidence (N,), and the view
        (index into the stack) of each point; views in order, pixels row-major within a view.
        One host synchronisation (the count of kept pixels), whatever the number of views.
    """
    keep = torch.isfinite(depth) & (depth > 0) & (depth >= min_depth) & (depth <= max_depth)
    keep &= conf >= conf_threshold
    vi, vs, us = torch.nonzero(keep, as_tuple=True)
    d = depth[vi, vs, us].double()
    uv1 = torch.stack([us.double(), vs.double(), torch.ones_like(d)], dim=-1)
    kinv = torch.linalg.inv(K)
    rays = torch.einsum("nij,nj->ni", kinv[vi], uv1)
    pose = world_from_cam[vi]
    pts = torch.einsum("nij,nj->ni", pose[:, :3, :3], rays * d[:, None]) + pose[:, :3, 3]
    return pts.float(), image[vi, vs, us], conf[vi, vs, us], vi


def _voxel(points, colors, conf, voxel_size):
    keys = torch.floor(points.double() / voxel_size).long()
    _, inv, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    m = counts.shape[0]
    n = counts[:, None].double()
    psum = torch.zeros(m, 3, dtype=torch.float64, device=points.device).index_add_(0, inv, points.double())
    csum = torch.zeros(m, 3, dtype=torch.float64, device=points.device).index_add_(0, inv, colors.double())
    cmax = torch.full((m,), -float("inf"), device=points.device).scatter_reduce_(0, inv, conf, "amax")
    cols = torch.clamp(torch.round(csum / n), 0, 255).to(torch.uint8)
    return (psum / n).float(), cols, cmax


def _stacked_inputs(pred: WindowPrediction, views: list[int], k: int, device) -> tuple:
    """The cloud's inputs of ``views`` at every ``k``-th pixel, stacked on one device.

    Returns:
        depth (V, h, w) float32 (global units), K (V, 3, 3) float64 rescaled for the kept
        pixels, world_from_cam (V, 4, 4) float64, image (V, h, w, 3) uint8, confidence (V, h, w).
    """
    maps = pred.device_maps
    Ks = np.stack([pred.intrinsics[i].K for i in views]).astype(np.float64)
    Ks[:, :2] /= k  # exact for pixels u = k * u'
    poses = np.stack([np.asarray(pred.world_from_cam[i], np.float64) for i in views])
    if maps is not None:
        dev = maps.depth[views[0]].device
        depth = torch.stack([maps.depth[i][::k, ::k] for i in views]).float() * maps.depth_scale
        image = torch.stack([maps.images[i][::k, ::k] for i in views])
        conf = torch.stack([maps.confidence[i][::k, ::k] for i in views]).float()
    else:
        dev = torch.device(device or "cpu")
        parts = [strided_view(pred, i, k) for i in views]
        depth, image, conf = (torch.as_tensor(np.stack([p[j] for p in parts]), device=dev) for j in (0, 3, 4))
        depth, conf = depth.float(), conf.float()
    return depth, torch.as_tensor(Ks, device=dev), torch.as_tensor(poses, device=dev), image, conf


def window_cloud_torch(pred: WindowPrediction, views: list[int], cfg: PipelineConfig,
                       generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fused coloured cloud of ``views`` of an aligned prediction, computed with torch.

    Same inputs and outputs as :func:`window_cloud`: points ``(N, 3)`` float32 in the global
    frame, colours ``(N, 3)`` uint8, confidence ``(N,)`` float32. The maps come from
    ``pred.device_maps`` when the prediction has them (the GPU path: nothing is uploaded; depth
    scaled by their ``depth_scale``), else they are uploaded from ``pred`` to ``device``.
    Views of one size are processed together (one pass and one host synchronisation per size,
    not per view); the points keep :func:`window_cloud`'s order (by view, then row-major).
    """
    k = cfg.cloud_pixel_step
    groups: dict[tuple[int, int], list[int]] = {}
    for i in views:
        groups.setdefault(pred.depth[i][::k, ::k].shape, []).append(i)
    parts = []
    for idx in groups.values():
        inputs = _stacked_inputs(pred, idx, k, device)
        pts, cols, conf, vi = _colored_points(*inputs, cfg.conf_threshold, cfg.min_depth_m, cfg.max_depth_m)
        parts.append((pts, cols, conf, torch.as_tensor(idx, device=vi.device)[vi]))
    if not parts:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32)
    pts, cols, conf, view = (torch.cat(x) for x in zip(*parts))
    if len(parts) > 1:  # sizes interleaved in the view order: back to window_cloud's order
        order = torch.sort(view, stable=True).indices
        pts, cols, conf = pts[order], cols[order], conf[order]
    if cfg.voxel_size_m > 0 and len(pts):
        pts, cols, conf = _voxel(pts, cols, conf, cfg.voxel_size_m)
    if cfg.max_points and len(pts) > cfg.max_points:
        gen_device = generator.device if generator is not None else pts.device
        keep = torch.randperm(len(pts), generator=generator, device=gen_device)[: cfg.max_points]
        keep = keep.to(pts.device).sort().values
        pts, cols, conf = pts[keep], cols[keep], conf[keep]
    return pts.cpu().numpy(), cols.cpu().numpy(), conf.cpu().numpy()
