"""2D rotary position embedding as DA3 uses it (VGGT/CroCo style).

The head dimension D is split in halves: the first half is rotated by the token's row
index y, the second by its column x. Within a half of size d, the frequencies are
``freq ** (-arange(0, d, 2) / d)``, the angles are duplicated ``cat(a, a)`` and rotated with
the rotate-half convention ``x * cos + cat(-x2, x1) * sin``.

Positions: in local (per-frame) blocks token 0 (camera/cls) sits at (0, 0) and patch
(r, c) at (r + 1, c + 1); in global blocks every patch sits at (1, 1), so global attention
only separates token 0 from the patches.
"""

from __future__ import annotations

import torch


class RopeTables:
    """Precomputed cos/sin tables, cached per (head_dim, grid, device, dtype)."""

    def __init__(self, frequency: float = 100.0) -> None:
        self.frequency = frequency
        self._cache: dict[tuple, tuple[torch.Tensor, ...]] = {}

    def get(self, head_dim: int, grid_h: int, grid_w: int, device: torch.device,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(cos_local, sin_local, cos_global, sin_global)``, each ``(N, 1, D)``.

        N = 1 + grid_h * grid_w tokens of one view; tables are computed in fp32 and cast.
        Inside ``torch.compile`` they are computed in the graph (no guard on the cache, which an
        eager forward on another thread may fill during a background compile).
        """
        if torch.compiler.is_compiling():
            return self._compute(head_dim, grid_h, grid_w, torch.device(device), dtype)
        key = (head_dim, grid_h, grid_w, torch.device(device), dtype)
        if key not in self._cache:
            self._cache[key] = self._compute(head_dim, grid_h, grid_w, torch.device(device), dtype)
        return self._cache[key]

    def _compute(self, head_dim, grid_h, grid_w, device, dtype):
        rows = torch.arange(grid_h, device=device).repeat_interleave(grid_w) + 1
        cols = torch.arange(grid_w, device=device).repeat(grid_h) + 1
        zero = torch.zeros(1, dtype=torch.long, device=device)
        local = torch.stack([torch.cat([zero, rows]), torch.cat([zero, cols])], dim=-1)  # (N, 2)
        glob = torch.ones_like(local)
        glob[0] = 0
        out = []
        for pos in (local, glob):
            cos, sin = self._tables(pos, head_dim)
            out += [cos.to(dtype)[:, None, :], sin.to(dtype)[:, None, :]]
        return tuple(out)

    def _tables(self, pos: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        d = head_dim // 2
        exponents = torch.arange(0, d, 2, device=pos.device).float() / d
        inv_freq = 1.0 / (self.frequency ** exponents)  # (d/2,)
        angles = [pos[:, axis].float()[:, None] * inv_freq[None, :] for axis in (0, 1)]
        angles = torch.cat([torch.cat((a, a), dim=-1) for a in angles], dim=-1)  # (N, D)
        return angles.cos(), angles.sin()


def rotate_halves(x: torch.Tensor) -> torch.Tensor:
    """Rotate-half applied separately to the y half and the x half of the last dim."""
    d4 = x.shape[-1] // 4
    parts = x.unflatten(-1, (2, 2, d4))  # (..., half, sub, D/4)
    x1, x2 = parts[..., 0, :], parts[..., 1, :]
    return torch.stack((-x2, x1), dim=-2).flatten(-3)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply 2D RoPE to ``x (B, N, heads, D)`` with tables ``(N, 1, D)``."""
    return x * cos + rotate_halves(x) * sin
