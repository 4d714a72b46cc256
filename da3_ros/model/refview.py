"""Reference-view selection: which view anchors the window's world frame.

Upstream (``model/reference_view_selector.py``) picks one view per batch element from the
camera/cls tokens just before block ``alt_start - 1``, moves it to position 0 (so it gets
the reference camera token) and restores the input order for the heads' inputs. It runs
only when the window has at least :data:`MIN_VIEWS_FOR_SELECTION` views and no pose
conditioning is given. All functions are sync-free (no ``.item()``).
"""

from __future__ import annotations

import torch

from da3_ros.model.options import REF_VIEW_STRATEGIES

MIN_VIEWS_FOR_SELECTION = 3
STRATEGIES: tuple[str, ...] = REF_VIEW_STRATEGIES


def check_strategy(strategy: str) -> str:
    """Validate a strategy name.

    Raises:
        ValueError: Unknown strategy.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown reference view strategy {strategy!r}; choose one of {STRATEGIES}")
    return strategy


def _minmax(metric: torch.Tensor) -> torch.Tensor:
    lo = metric.min(dim=1, keepdim=True).values
    hi = metric.max(dim=1, keepdim=True).values
    return (metric - lo) / (hi - lo + 1e-8)


def select_reference_view(cls_tokens: torch.Tensor, strategy: str) -> torch.Tensor:
    """Pick the reference view of each batch element.

    Args:
        cls_tokens: ``(B, S, C)`` token 0 of every view.
        strategy: ``first`` (0), ``middle`` (S // 2), ``saddle_balanced`` (the view whose
            min-max normalised mean similarity to the others, token norm and normalised
            token variance are all closest to 0.5) or ``saddle_sim_range`` (largest
            max - min similarity to the other views).

    Returns:
        ``(B,)`` int64 index of the reference view.
    """
    b, s, _ = cls_tokens.shape
    check_strategy(strategy)
    if strategy == "first":
        return torch.zeros(b, dtype=torch.long, device=cls_tokens.device)
    if strategy == "middle":
        return torch.full((b,), s // 2, dtype=torch.long, device=cls_tokens.device)
    unit = cls_tokens / cls_tokens.norm(dim=-1, keepdim=True)
    sim = unit @ unit.transpose(1, 2) - torch.eye(s, device=unit.device, dtype=unit.dtype)
    if strategy == "saddle_sim_range":
        return (sim.max(dim=-1).values - sim.min(dim=-1).values).argmax(dim=1)
    sim_score = sim.sum(dim=-1) / (s - 1)
    score = ((_minmax(sim_score) - 0.5).abs() + (_minmax(cls_tokens.norm(dim=-1)) - 0.5).abs()
             + (_minmax(unit.var(dim=-1)) - 0.5).abs())
    return score.argmin(dim=1)


def reorder_indices(ref: torch.Tensor, num_views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Permutations that move the reference first and back.

    Args:
        ref: ``(B,)`` reference index per batch element.
        num_views: S.

    Returns:
        ``(order, restore)``, each ``(B, S)``: ``x[b, order[b]]`` is
        ``[ref, 0, .., ref-1, ref+1, ..]`` and ``y[b, restore[b]]`` undoes it.
    """
    pos = torch.arange(num_views, device=ref.device)[None, :]
    r = ref[:, None]
    order = torch.where(pos == 0, r, torch.where(pos <= r, pos - 1, pos))
    restore = torch.where(pos < r, pos + 1, torch.where(pos == r, torch.zeros_like(pos), pos))
    return order, restore


def gather_views(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x (B, S, ...)`` reindexed along S by ``index (B, S)``."""
    batch = torch.arange(x.shape[0], device=x.device)[:, None]
    return x[batch, index]
