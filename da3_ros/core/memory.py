"""GPU memory planning for a window, view selection when shrinking, and OOM retry.

The peak estimate is analytic (no probing): weights + backbone activations of all S views (the
global blocks attend over all S*P tokens at once, so a window is never split: it can only get
fewer views) + the DPT head's full-resolution buffers for one chunk of up to 8 views (the head
runs in chunks) + the quadratic attention matrix when the attention backend materialises it
("math"). It errs high by ``safety`` so a plan that fits leaves headroom; a runtime OOM is still
caught by :func:`run_with_oom_retry`.

Calibration so far (CPU only, fp32, peak-RSS growth of one forward): for da3-small at 378x280
the estimate without ``safety`` is ~1.4-1.5x the measured activation peak (S=4: 420 vs 299 MiB;
S=8: 839 vs 566 MiB), i.e. conservative. It has not been checked against CUDA peaks yet.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

HEAD_CHUNK = 8  # views per DPT-head chunk (upstream runs the head 8 frames at a time)


class WindowTooLargeError(RuntimeError):
    """Even the smallest allowed window does not fit the memory budget."""


@dataclass(frozen=True)
class MemoryPlan:
    """Outcome of planning one window.

    Attributes:
        requested: views asked for; num_views: views to run (<= requested).
        estimate_bytes: estimated peak for num_views; budget_bytes: the budget (None = unlimited).
        message: a human sentence (empty when nothing was shrunk).
    """

    requested: int
    num_views: int
    estimate_bytes: int
    budget_bytes: int | None
    message: str = ""

    @property
    def shrunk(self) -> bool:
        """True when the window must run with fewer views than requested."""
        return self.num_views < self.requested


def estimate_peak_bytes(preset, num_views: int, height: int, width: int, param_bytes: int,
                        act_bytes: int = 4, attention: str = "flash", safety: float = 1.25) -> int:
    """Estimated peak GPU bytes of one forward pass (batch 1).

    Args:
        preset: a ``DA3Config``-like object (``embed_dim``, ``num_heads``, ``head_features``,
            ``cat_token``, ``patch_size``) or a ``NestedConfig`` (both members counted).
        num_views: S.
        height: process height in pixels (a multiple of the patch).
        width: process width in pixels.
        param_bytes: bytes of the weights on the device.
        act_bytes: bytes per backbone activation element (2 under bf16/fp16 autocast, 4 fp32);
            the head always runs in fp32.
        attention: ``"math"`` adds the materialised (heads, N, N) attention matrix.
        safety: multiplicative margin.
    """
    members = [preset.anyview, preset.metric] if hasattr(preset, "anyview") else [preset]
    peak = 0
    for cfg in members:
        ps = getattr(cfg, "patch_size", 14)
        h, w = height // ps, width // ps
        n_tok = num_views * (h * w + 1)
        C = cfg.embed_dim
        # x, qkv (3), attention out, MLP hidden (4), residual temp + kept out-layer features.
        backbone = n_tok * C * (10 + 4 * (2 if cfg.cat_token else 1) + 1) * act_bytes
        if attention == "math":
            backbone += cfg.num_heads * n_tok * n_tok * act_bytes
        f = cfg.head_features
        chunk = min(num_views, HEAD_CHUNK)
        head = chunk * (4 * 64 * h * w * f + 2 * height * width * (f // 2 + 34)) * 4
        io = num_views * height * width * (3 + 4) * 4
        peak = max(peak, backbone + head + io)
    # Nested: the any-view branch's outputs stay alive while the metric branch runs.
    peak += (len(members) - 1) * num_views * height * width * 4 * 4
    return int(param_bytes + safety * peak)


def plan_views(estimate: Callable[[int], int], requested: int, budget_bytes: int | None,
               min_views: int = 2, group: int = 1) -> MemoryPlan:
    """Largest view count (a multiple of ``group``, >= ``min_views``) whose estimate fits.

    Args:
        estimate: ``estimate(num_views) -> bytes``.
        requested: views in the window.
        budget_bytes: available bytes, or None for no limit.
        min_views: refuse below this many views.
        group: views come in groups of this size (cameras per set in multi-camera mode).

    Raises:
        WindowTooLargeError: not even ``min_views`` fit; the message states sizes and budget.
    """
    if budget_bytes is None:
        return MemoryPlan(requested, requested, estimate(requested), None)
    n = requested
    while n >= 1:
        est = estimate(n)
        if est <= budget_bytes:
            break
        n = n - group if n % group == 0 else n - n % group
    floor = max(min(min_views, requested), 1)
    if n < floor:
        need = estimate(floor)
        raise WindowTooLargeError(
            f"a window of {floor} views needs ~{need / 2**30:.2f} GiB but only {budget_bytes / 2**30:.2f} "
            f"GiB is available; lower process_res, use a smaller model or free GPU memory")
    msg = "" if n == requested else (
        f"window of {requested} views needs ~{estimate(requested) / 2**30:.2f} GiB > budget "
        f"{budget_bytes / 2**30:.2f} GiB; running {n} views instead")
    return MemoryPlan(requested, n, est, budget_bytes, msg)


def cuda_budget_bytes(device: torch.device | str, fraction: float = 0.9) -> int | None:
    """Bytes a new window may use on ``device`` (None on CPU/MPS: no planning there)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(fraction * free + cached)


def select_views(num_views: int, keep: int, shared: Sequence[bool], group: int = 1) -> list[int]:
    """Which views to keep when a window shrinks to ``keep`` views (sorted indices).

    Views move in groups of ``group`` (a multi-camera set is never split). Priority: the most
    recent group holding an already-published view (so the window can still be chained), then
    the not-yet-published groups from newest to oldest, then the other published groups.
    """
    n_groups = num_views // group
    keep_g = max(1, min(n_groups, keep // group))
    g_shared = [any(shared[g * group:(g + 1) * group]) for g in range(n_groups)]
    shared_g = [g for g in reversed(range(n_groups)) if g_shared[g]]
    new_g = [g for g in reversed(range(n_groups)) if not g_shared[g]]
    order = shared_g[:1] + new_g + shared_g[1:]
    chosen = sorted(order[:keep_g])
    return [g * group + k for g in chosen for k in range(group)]


def is_oom_error(exc: BaseException) -> bool:
    """True for CUDA/CPU out-of-memory errors (``torch.cuda.OutOfMemoryError`` or "out of memory")."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_cached_memory() -> None:
    """Drop Python references and return cached CUDA blocks after an OOM."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_with_oom_retry(predict: Callable[[list], object], frames: list, shared: Sequence[bool],
                       group: int = 1, min_views: int = 2, shrink: float = 0.75,
                       on_retry: Callable[[int, int, BaseException], None] | None = None):
    """Run ``predict(frames)``; on out-of-memory, retry with fewer views until ``min_views``.

    Each retry keeps ``floor(shrink * S)`` views (at least one group fewer) chosen by
    :func:`select_views`. Errors other than OOM propagate unchanged.

    Returns:
        (prediction, kept indices into ``frames``).

    Raises:
        WindowTooLargeError: out of memory even at ``min_views`` views (chained to the OOM).
    """
    idx = list(range(len(frames)))
    while True:
        try:
            return predict([frames[i] for i in idx]), idx
        except Exception as exc:  # noqa: BLE001 - filtered just below
            if not is_oom_error(exc):
                raise
            release_cached_memory()
            n = len(idx)
            target = min(int(math.floor(shrink * n)) // group * group, n - group)
            if target < max(min_views, 1) or target < group:
                raise WindowTooLargeError(f"out of memory with {n} views (min_views={min_views})") from exc
            sub = select_views(n, target, [shared[i] for i in idx], group)
            if on_retry is not None:
                on_retry(n, len(sub), exc)
            idx = [idx[i] for i in sub]
            del exc


def param_bytes(model: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    tensors = list(model.parameters()) + list(model.buffers())
    return int(np.sum([t.numel() * t.element_size() for t in tensors])) if tensors else 0
