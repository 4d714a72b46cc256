"""Sky handling and metric scaling, as upstream's ``utils/alignment.py`` and nested model.

All functions are vectorised and sync-free (no ``.item()``, no boolean indexing):
quantiles are taken with ``nanquantile`` over masked values. Quantiles are computed per
batch element over all views (upstream pools the whole batch and, above 100k pixels,
samples randomly; for B = 1 and small windows the results are identical).
"""

from __future__ import annotations

import torch

SKY_THRESHOLD = 0.3
METRIC_FOCAL_REF = 300.0
SKY_DEPTH_CAP = 200.0
_MAX_QUANTILE_ELEMS = 1 << 24  # torch.quantile's input limit


def _masked_quantile(values: torch.Tensor, mask: torch.Tensor, q: float) -> torch.Tensor:
    """Per-batch quantile of ``values (B, ...)`` where ``mask``; NaN where mask is empty."""
    flat = torch.where(mask, values, torch.full_like(values, float("nan"))).flatten(1).float()
    step = -(-flat.shape[1] // _MAX_QUANTILE_ELEMS)  # static stride subsampling if huge
    return torch.nanquantile(flat[:, ::step], q, dim=1)


def _per_batch(x: torch.Tensor, ndim: int) -> torch.Tensor:
    return x.view(x.shape + (1,) * (ndim - 1))


def fill_sky_with_far_depth(depth: torch.Tensor, sky: torch.Tensor) -> torch.Tensor:
    """Set sky pixels of ``depth (B, S, H, W)`` to the 99th percentile of non-sky depth.

    Applied only where a batch element has more than 10 sky and 10 non-sky pixels (as
    upstream's ``_process_mono_sky_estimation``).
    """
    non_sky = sky < SKY_THRESHOLD
    n_non_sky = non_sky.flatten(1).sum(1)
    n_sky = non_sky[0].numel() - n_non_sky
    far = _masked_quantile(depth, non_sky, 0.99).to(depth.dtype)
    apply = _per_batch((n_non_sky > 10) & (n_sky > 10), depth.dim())
    return torch.where(apply & ~non_sky, _per_batch(far, depth.dim()), depth)


def focal_metric_scale(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Canonical metric depth -> metres: ``depth * ((fx + fy) / 2) / 300`` per view.

    Args:
        depth: ``(B, S, H, W)`` from the metric model.
        intrinsics: ``(B, S, 3, 3)`` K in pixels of the model input.
    """
    focal = (intrinsics[:, :, 0, 0] + intrinsics[:, :, 1, 1]) / 2
    return depth * (focal[:, :, None, None].to(depth.dtype) / METRIC_FOCAL_REF)


def align_to_metric(out, metric):
    """Scale an any-view output to metres with the metric branch (nested model).

    Args:
        out: :class:`DA3Output` of the any-view branch (depth, depth_conf, extrinsics,
            intrinsics).
        metric: :class:`DA3Output` of the metric branch (sky-filled, unscaled depth, sky).

    Returns:
        ``out`` with depth and extrinsic translations scaled, sky pixels at min(q99, 200)
        with confidence 1, ``sky`` from the metric branch, ``is_metric`` True and
        ``scale_factor (B,)``.
    """
    nd = out.depth.dim()
    metric_depth = focal_metric_scale(metric.depth, out.intrinsics)
    non_sky = metric.sky < SKY_THRESHOLD
    median_conf = _masked_quantile(out.depth_conf, non_sky, 0.5)
    mask = ((out.depth_conf >= _per_batch(median_conf, nd)) & non_sky
            & (metric_depth > 1e-2) & (out.depth > 1e-3))
    d = torch.where(mask, out.depth, torch.zeros_like(out.depth)).flatten(1).float()
    m = torch.where(mask, metric_depth, torch.zeros_like(metric_depth)).flatten(1).float()
    scale = (m * d).sum(1) / (d * d).sum(1).clamp_min(1e-12)
    # Upstream asserts > 10 non-sky pixels; here such a window keeps scale 1.
    scale = torch.where(non_sky.flatten(1).sum(1) > 10, scale, torch.ones_like(scale))
    depth = out.depth * _per_batch(scale, nd).to(out.depth.dtype)
    ext = out.extrinsics.clone()
    ext[..., :3, 3] = ext[..., :3, 3] * scale.view(-1, 1, 1).to(ext.dtype)
    far = torch.clamp(_masked_quantile(depth, non_sky, 0.99), max=SKY_DEPTH_CAP).to(depth.dtype)
    depth = torch.where(non_sky, depth, _per_batch(far, nd))
    conf = torch.where(non_sky, out.depth_conf, torch.ones_like(out.depth_conf))
    out.depth, out.depth_conf, out.extrinsics = depth, conf, ext
    out.sky, out.is_metric, out.scale_factor = metric.sky, True, scale
    return out
