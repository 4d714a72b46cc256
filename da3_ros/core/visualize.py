"""Depth images for viewing: the turbo colormap over inverse depth, in numpy and in torch.

Near is red, far is blue, unknown (NaN, inf, <= 0) is black. Colours follow inverse depth
(disparity) linearly between ``1/far`` and ``1/near``: a street scene with grass at 2 m, a
building at 30 m and open road to 100 m gets red, blue and dark blue instead of three shades
of red (linear depth gives the far tail most of the colour range). ``near`` / ``far`` default
to the 2nd / 98th percentile of the image's valid depth (robust to outliers; taken on every
second pixel of every second row, which moves them by a fraction of a colour level), so each
image uses the whole colormap; fixed values make images comparable.

:func:`colorize_depth` (numpy, the CPU path) and :func:`colorize_depth_torch` (on the depth's
device, the GPU path) give the same colours (same percentiles, same rounding, same table).
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


def _percentiles(values: torch.Tensor, percents) -> list[float]:
    """``np.percentile``'s default (linear) rule on a 1-D tensor, any size (no quantile limit)."""
    ordered = values.sort().values.double()
    n = ordered.numel()
    out = []
    for p in percents:
        pos = p / 100.0 * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        out.append(float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)))
    return out


def colorize_depth_torch(depth: torch.Tensor, near: float = 0.0, far: float = 0.0) -> torch.Tensor:
    """:func:`colorize_depth` on the depth's device: ``(H, W)`` float -> ``(H, W, 3)`` uint8."""
    depth = depth.float()
    valid = torch.isfinite(depth) & (depth > 0)
    out = torch.zeros((*depth.shape, 3), dtype=torch.uint8, device=depth.device)
    values = depth[valid]
    if values.numel() == 0:
        return out
    if not (near or far):
        k = PERCENTILE_STEP
        sample = depth[::k, ::k][valid[::k, ::k]]
        near, far = _percentiles(sample if sample.numel() else values, AUTO_PERCENTILES)
    near, far = max(float(near), 1e-6), max(float(far), float(near) + 1e-6)
    level = _levels(1.0 / values, 1.0 / near, 1.0 / far)
    index = (level.clamp(0.0, 1.0) * 255.0).to(torch.uint8).long()
    out[valid] = torch.as_tensor(TURBO_RGB, device=depth.device)[index]
    return out
