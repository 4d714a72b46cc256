"""Preprocessing and point clouds on the GPU: drop-in torch versions of the CPU (numpy/cv2) steps.

On a GPU the network takes 4 ms (1 view) to 25 ms (8 views) for da3-large, while the CPU steps
around it took 5 / 42 ms (preprocess) and 26 / 171 ms (point cloud) per window on the GPU
machine (bench/RESULTS.md). These functions do the same work with torch on any device:

- :func:`preprocess_frames` = ``DA3Engine``'s ``np.stack([preprocess_image(...)])``: upload the
  uint8 images once, resize on the device, normalise. The resize is bilinear with antialiasing
  when shrinking and bicubic when enlarging (cv2 INTER_AREA / INTER_CUBIC on the CPU path), so
  values differ from the CPU path by resampling differences (a few 1e-2 in normalised units at
  edges), not by convention: same target sizes, same pixel-centre alignment, same mean/std.
- :func:`window_cloud` = ``pipeline.window_cloud``: same filtering (finite, > 0, depth range,
  confidence threshold), same pixel step, voxel averaging and ``max_points`` cap; the random
  subset is drawn on the device (same count, not the same points as the numpy generator's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from da3_ros.core.engine import IMAGENET_MEAN, IMAGENET_STD, resize_steps
from da3_ros.core.pipeline_types import strided_view


def _resize(x: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """``x (N, C, H, W)`` float -> ``(N, C, h, w)``: antialiased bilinear down, bicubic up."""
    if x.shape[-1] == w and x.shape[-2] == h:
        return x
    enlarge = w > x.shape[-1] or h > x.shape[-2]
    if enlarge:
        return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).clamp_(0, 255)
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)


def preprocess_frames(images: Sequence[np.ndarray], process_res: int, size: tuple[int, int],
                      device: torch.device | str, pin: bool = True) -> torch.Tensor:
    """RGB uint8 images ``(H_i, W_i, 3)`` -> normalised ``(1, S, 3, h, w)`` float32 on ``device``.

    Args:
        images: the window's images (any sizes).
        process_res: long-side target (as ``DA3Engine``).
        size: the window's common ``(w, h)``; images whose own process size differs are resized
            straight to it (as ``DA3Engine``).
        device: where to compute.
        pin: stage the upload in pinned memory (CUDA only) so it is asynchronous.
    """
    device = torch.device(device)
    mean = torch.as_tensor(IMAGENET_MEAN, device=device).view(3, 1, 1) * 255.0
    std = torch.as_tensor(IMAGENET_STD, device=device).view(3, 1, 1) * 255.0
    out = torch.empty(len(images), 3, size[1], size[0], device=device)
    for i, img in enumerate(images):
        t = torch.from_numpy(np.ascontiguousarray(img))
        if pin and device.type == "cuda":
            t = t.pin_memory()
        x = t.to(device, non_blocking=True).permute(2, 0, 1)[None].float()
        for w, h in resize_steps(img.shape[1], img.shape[0], process_res, size):
            x = _resize(x, w, h)
        out[i] = (x[0] - mean) / std
    return out[None]


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


def window_cloud(pred, views: list[int], cfg, device: torch.device | str,
                 generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fused coloured cloud of ``views`` of an aligned prediction, computed on ``device``.

    Same inputs and outputs as ``da3_ros.core.pipeline.window_cloud`` (``pred`` a
    ``WindowPrediction`` with global poses, ``cfg`` a ``PipelineConfig``): points ``(N, 3)``
    float32 in the global frame, colours ``(N, 3)`` uint8, confidence ``(N,)`` float32.
    """
    device = torch.device(device)
    parts = []
    for i in views:
        depth, K, pose, img, conf = (torch.as_tensor(np.ascontiguousarray(a), device=device)
                                     for a in strided_view(pred, i, cfg.cloud_pixel_step))
        parts.append(_colored_points(depth.float(), K.double(), pose.double(), img, conf.float(),
                                     cfg.conf_threshold, cfg.min_depth_m, cfg.max_depth_m))
    if not parts:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32)
    pts, cols, conf = (torch.cat(x) for x in zip(*parts))
    if cfg.voxel_size_m > 0 and len(pts):
        pts, cols, conf = _voxel(pts, cols, conf, cfg.voxel_size_m)
    if cfg.max_points and len(pts) > cfg.max_points:
        gen_device = generator.device if generator is not None else device
        keep = torch.randperm(len(pts), generator=generator, device=gen_device)[: cfg.max_points]
        keep = keep.to(device).sort().values
        pts, cols, conf = pts[keep], cols[keep], conf[keep]
    return pts.cpu().numpy(), cols.cpu().numpy(), conf.cpu().numpy()
