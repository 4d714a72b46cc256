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
    """Torch twin of ``geometry.colored_points`` for one view (all tensors on one device)."""
    h, w = depth.shape
    keep = torch.isfinite(depth) & (depth > 0) & (depth >= min_depth) & (depth <= max_depth)
    keep &= conf >= conf_threshold
    vs, us = torch.nonzero(keep, as_tuple=True)
    d = depth[vs, us].double()
    kinv = torch.linalg.inv(K.double())
    uv1 = torch.stack([us.double(), vs.double(), torch.ones_like(d)], dim=-1)
    pts = (uv1 @ kinv.T) * d[:, None]
    pts = pts @ world_from_cam[:3, :3].double().T + world_from_cam[:3, 3].double()
    return pts.float(), image[vs, us], conf[vs, us]


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


def window_cloud_torch(pred: WindowPrediction, views: list[int], cfg: PipelineConfig,
                       generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fused coloured cloud of ``views`` of an aligned prediction, computed with torch.

    Same inputs and outputs as :func:`window_cloud`: points ``(N, 3)`` float32 in the global
    frame, colours ``(N, 3)`` uint8, confidence ``(N,)`` float32. The maps come from
    ``pred.device_maps`` when the prediction has them (the GPU path: nothing is uploaded; depth
    scaled by their ``depth_scale``), else they are uploaded from ``pred`` to ``device``.
    """
    maps = pred.device_maps
    k = cfg.cloud_pixel_step
    parts = []
    for i in views:
        K = pred.intrinsics[i].K.copy()
        K[:2] /= k  # exact for pixels u = k * u'
        if maps is not None:
            dev = maps.depth[i].device
            depth = maps.depth[i][::k, ::k] * maps.depth_scale
            image, conf = maps.images[i][::k, ::k], maps.confidence[i][::k, ::k]
        else:
            dev = torch.device(device or "cpu")
            depth, _, _, image, conf = (torch.as_tensor(np.ascontiguousarray(a), device=dev)
                                        for a in strided_view(pred, i, k))
        pose = torch.as_tensor(pred.world_from_cam[i], device=dev)
        parts.append(_colored_points(depth.float(), torch.as_tensor(K, device=dev), pose, image,
                                     conf.float(), cfg.conf_threshold, cfg.min_depth_m, cfg.max_depth_m))
    if not parts:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32)
    pts, cols, conf = (torch.cat(x) for x in zip(*parts))
    if cfg.voxel_size_m > 0 and len(pts):
        pts, cols, conf = _voxel(pts, cols, conf, cfg.voxel_size_m)
    if cfg.max_points and len(pts) > cfg.max_points:
        gen_device = generator.device if generator is not None else pts.device
        keep = torch.randperm(len(pts), generator=generator, device=gen_device)[: cfg.max_points]
        keep = keep.to(pts.device).sort().values
        pts, cols, conf = pts[keep], cols[keep], conf[keep]
    return pts.cpu().numpy(), cols.cpu().numpy(), conf.cpu().numpy()
