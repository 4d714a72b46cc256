"""Depth images for viewing: the turbo colormap over inverse depth, in numpy and in torch.

Near is red, far is blue, unknown (NaN, inf, <= 0) is black. Colours follow inverse depth
(disparity) linearly between ``1/far`` and ``1/near``: a street scene with grass at 2 m, a
building at 30 m and open road to 100 m gets red, blue and dark blue instead of three shades
of red (linear depth gives the far tail most of the colour range). ``near`` / ``far`` default
to the 2nd / 98th percentile of the image's valid depth (robust to outliers; taken on every
second pixel of every second row, which moves them by a fraction of a colour level), so each
image uses the whole colormap; fixed values make images comparable.

:func:`colorize_depth` (numpy, the CPU path) and :func:`colorize_depths_torch` (a stack of views on
the depth's device, the GPU path) give the same colours (same percentiles, same rounding, same
table).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

#: Turbo colormap, (256, 3) uint8 RGB; index 255 is red (near), 0 is blue (far).
TURBO_RGB = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_TURBO)[:, 0, ::-1].copy()
#: Percentiles of valid depth that become ``near`` / ``far`` when no range is given.
AUTO_PERCENTILES = (2.0, 98.0)
#: The automatic range is taken on every ``PERCENTILE_STEP``-th pixel of every such row.
PERCENTILE_STEP = 2


_TURBO_ON: dict[torch.device, torch.Tensor] = {}


def _turbo_on(device: torch.device) -> torch.Tensor:
    """:data:`TURBO_RGB` on ``device``, uploaded once per device."""
    table = _TURBO_ON.get(device)
    if table is None:
        table = _TURBO_ON[device] = torch.as_tensor(TURBO_RGB, device=device)
    return table


def _levels(inv_depth, inv_near: float, inv_far: float):
    """Colormap index in [0, 1] (1 = near) of inverse depth between ``1/far`` and ``1/near``."""
    return (inv_depth - inv_far) / max(inv_near - inv_far, 1e-12)


def colorize_depth(depth: np.ndarray, near: float = 0.0, far: float = 0.0) -> np.ndarray:
    """Turbo colours of a depth image (see module docstring).

    Args:
        depth: (H, W) float depth, NaN/inf/<=0 where unknown.
        near: depth drawn red; with ``far`` both 0, the 2nd percentile of valid depth.
        far: depth drawn blue; with ``near`` both 0, the 98th percentile.

    Returns:
        (H, W, 3) uint8 RGB, black where depth is unknown.
    """
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    if depth.size == 0 or not valid.any():
        return np.zeros((*depth.shape, 3), dtype=np.uint8)
    if not (near or far):
        k = PERCENTILE_STEP
        sample = depth[::k, ::k][valid[::k, ::k]]
        near, far = np.percentile(sample if sample.size else depth[valid], AUTO_PERCENTILES)
    near, far = max(float(near), 1e-6), max(float(far), float(near) + 1e-6)
    with np.errstate(divide="ignore", invalid="ignore"):
        level = _levels(1.0 / np.where(valid, depth, np.float32(far)), 1.0 / near, 1.0 / far)
    index = (np.clip(level, 0.0, 1.0) * 255.0).astype(np.uint8)
    out = cv2.cvtColor(cv2.applyColorMap(index, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)  # C, no GIL
    out[~valid] = 0
    return out


def _batched_percentiles(values: torch.Tensor, counts: torch.Tensor, percents) -> list[torch.Tensor]:
    """``np.percentile``'s default (linear) rule per row of ``values``, on the device (no host sync).

    Args:
        values: (V, N) float; each row's first ``counts[v]`` entries after sorting are its
            samples (pad the rest with +inf).
        counts: (V,) int64, at least 1 (a row without samples gives its first sorted value).
        percents: percentiles in [0, 100].

    Returns:
        one (V,) float64 tensor per percentile.
    """
    ordered = values.sort(dim=1).values.double()
    last = (counts - 1).clamp(min=0)
    out = []
    for p in percents:
        pos = last.double() * (p / 100.0)
        lo = pos.floor().long()
        hi = torch.minimum(lo + 1, last)
        a, b = ordered.gather(1, lo[:, None])[:, 0], ordered.gather(1, hi[:, None])[:, 0]
        out.append(a + (b - a) * (pos - lo.double()))
    return out


def _auto_range(depth: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per view (2nd, 98th) percentile of valid depth on every ``PERCENTILE_STEP``-th pixel.

    A view without a valid sampled pixel takes its percentiles over all its valid pixels (as
    :func:`colorize_depth` does): that needs the sampled counts on the host, one small copy.
    """
    k = PERCENTILE_STEP
    views = depth.shape[0]
    sample, ok = depth[:, ::k, ::k].reshape(views, -1), valid[:, ::k, ::k].reshape(views, -1)
    counts = ok.sum(1)
    near, far = _batched_percentiles(torch.where(ok, sample, torch.inf), counts, AUTO_PERCENTILES)
    if views and bool((counts == 0).any()):  # rare: valid pixels only between the sampled ones
        full, fok = depth.reshape(views, -1), valid.reshape(views, -1)
        n_full, f_full = _batched_percentiles(torch.where(fok, full, torch.inf), fok.sum(1), AUTO_PERCENTILES)
        near, far = torch.where(counts > 0, near, n_full), torch.where(counts > 0, far, f_full)
    return near, far


def colorize_depths_torch(depth: torch.Tensor, near: float = 0.0, far: float = 0.0) -> torch.Tensor:
    """:func:`colorize_depth` for a stack of views at once, on the depth's device.

    One pass over every view (each with its own automatic range), no per-view host round trip:
    the GPU path colours a whole window this way.

    Args:
        depth: (V, H, W) float depth, NaN/inf/<=0 where unknown.
        near: depth drawn red for every view; with ``far`` both 0, each view's 2nd percentile.
        far: depth drawn blue for every view; with ``near`` both 0, each view's 98th percentile.

    Returns:
        (V, H, W, 3) uint8 RGB on the same device, black where depth is unknown.
    """
    depth = depth.float()
    views = depth.shape[0]
    valid = torch.isfinite(depth) & (depth > 0)
    if not (near or far):
        near_v, far_v = _auto_range(depth, valid)
    else:
        near_v = torch.full((views,), float(near), dtype=torch.float64, device=depth.device)
        far_v = torch.full((views,), float(far), dtype=torch.float64, device=depth.device)
    near_v = near_v.clamp(min=1e-6)
    far_v = torch.maximum(far_v, near_v + 1e-6)
    inv_near, inv_far = 1.0 / near_v, 1.0 / far_v
    denom = (inv_near - inv_far).clamp(min=1e-12)
    shape = (views, 1, 1)
    inv = 1.0 / torch.where(valid, depth, far_v.float().view(shape))
    level = (inv - inv_far.float().view(shape)) / denom.float().view(shape)
    level = torch.nan_to_num(level, nan=0.0).clamp(0.0, 1.0)
    index = (level * 255.0).to(torch.uint8).long()
    out = _turbo_on(depth.device)[index]
    return out * valid[..., None].to(torch.uint8)

