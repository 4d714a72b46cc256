"""GPU memory planning for a window, view selection when shrinking, and OOM retry.

The peak estimate is analytic (no probing): weights + backbone activations of all S views (the
global blocks attend over all S*P tokens at once, so a window is never split: it can only get
fewer views) + the DPT head's full-resolution buffers for one chunk of up to 8 views (the head
runs in chunks) + the quadratic attention matrix when the attention backend materialises it
("math"). Its constants are calibrated on measured GPU peaks (within 15 %, bench/RESULTS.md);
headroom comes from the budget fraction (and ``safety``); a runtime OOM is still caught by
:func:`run_with_oom_retry`.

Calibration: the constants below were fitted to per-forward peaks measured on an H200
(bf16 weights, compiled network, 504x378; da3-large S = 1..512, da3-small S = 1, 8): every
estimate is within 15 % of its measurement (table in bench/RESULTS.md, recomputed by
``bench/planner_check.py``). The eager network peaks ~6 % higher at S = 512; fp32 activations
(``act_bytes=4``) scale the same terms but were not measured on a GPU; on the CPU (peak RSS,
another allocator, no planning there) fp32 da3-small peaked ~1.5x above this estimate.
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
        estimate_bytes: estimated peak for num_views (per device when sharded); budget_bytes:
            the budget of each device (None = unlimited).
        message: a human sentence (empty when nothing was shrunk).
        ranks: devices the views are sharded over (1: one device).
    """

    requested: int
    num_views: int
    estimate_bytes: int
    budget_bytes: int | None
    message: str = ""
    ranks: int = 1

    @property
    def shrunk(self) -> bool:
        """True when the window must run with fewer views than requested."""
        return self.num_views < self.requested


# Constants calibrated against peaks measured on an H200 (bench/RESULTS.md, "Memory planner"):
# da3-large S = 1..512 and da3-small S = 1, 8 at 504x378, bf16 weights, compiled network, peaks
# per forward as torch's allocator counts them; every estimate within 15 % of its measurement.
TOKEN_ACTIVATIONS = 11.9  # live (tokens x embed_dim) tensors at the peak (residual, qkv, MLP, features)
HEAD_MAPS = 1.5  # live full-resolution maps of head_features/2 channels per frame of a head chunk
HEAD_CHANNELS = 45  # plus this many full-resolution channels per frame (final convs, pos-embed)
FIXED_BYTES = 36 * 2**20  # workspaces, interpolated position embedding, RoPE / UV tables
# Sharded, per global block: k and v of every view (2 token-sized tensors of the whole window),
# gathered straight into the buffers attention reads.
KV_TENSORS = 2


def estimate_peak_bytes(preset, num_views: int, height: int, width: int, param_bytes: int,
                        act_bytes: int = 4, attention: str = "flash", safety: float = 1.0,
                        ranks: int = 1) -> int:
    """Estimated peak GPU bytes of one forward pass (batch 1), per rank when sharded.

    Peak = weights + ``TOKEN_ACTIVATIONS`` token-sized tensors of every view (the global blocks
    attend over all S*P tokens at once, so the window is never split) + ``HEAD_MAPS`` maps of
    ``head_features/2`` channels and ``HEAD_CHANNELS`` more channels at full resolution per
    frame of one head chunk (up to 8 frames) + inputs and depth /
    confidence outputs + ``FIXED_BYTES`` (+ the (heads, N, N) matrix for the "math" backend).
    The constants fit measured peaks within 15 % (bench/RESULTS.md); the headroom for what the
    allocator reserves beyond its peak (up to ~20 % under a cap) belongs in the budget
    (``DA3Engine.memory_fraction``) or in ``safety``.

    Sharded over ``ranks`` devices (:mod:`da3_ros.model.context_parallel`), each rank holds the
    weights, the token activations and head chunk of its own ``ceil(S / ranks)`` views, and in
    each global block the k and v (``KV_TENSORS``) of *every* view, the images twice on rank 0
    (input and the padded scatter parts) and the whole window's depth and confidence (all-gathered).
    The sharded terms are counted from the code, not measured on GPUs.

    Args:
        preset: a ``DA3Config``-like object (``embed_dim``, ``num_heads``, ``head_features``,
            ``patch_size``) or a ``NestedConfig`` (both members counted).
        num_views: S.
        height: process height in pixels (a multiple of the patch).
        width: process width in pixels.
        param_bytes: bytes of the weights on the device.
        act_bytes: bytes per activation element (2 for bf16/fp16 weights or autocast, 4 fp32).
        attention: ``"math"`` adds the materialised (heads, N, N) attention matrix.
        safety: multiplicative margin on the activations (1.0: the calibrated estimate).
        ranks: devices the window's views are sharded over (1: one device; needs
            ``num_views >= ranks``).
    """
    if ranks < 1 or num_views < ranks:
        raise ValueError(f"cannot shard {num_views} views over {ranks} ranks")
    members = [preset.anyview, preset.metric] if hasattr(preset, "anyview") else [preset]
    local_views = -(-num_views // ranks)
    peak = 0
    for cfg in members:
        ps = getattr(cfg, "patch_size", 14)
        tokens = (height // ps) * (width // ps) + 1
        n_local, n_all = local_views * tokens, num_views * tokens
        backbone = TOKEN_ACTIVATIONS * n_local * cfg.embed_dim * act_bytes
        if ranks > 1 and getattr(cfg, "has_camera", True):  # global blocks gather every view's k, v
            backbone += KV_TENSORS * n_all * cfg.embed_dim * act_bytes
        if attention == "math":
            backbone += cfg.num_heads * n_local * n_all * act_bytes
        chunk = min(local_views, HEAD_CHUNK)
        head = chunk * height * width * (HEAD_MAPS * (cfg.head_features // 2) + HEAD_CHANNELS) * act_bytes
        io = num_views * height * width * (3 + 2) * 4  # fp32 images in, depth + confidence out
        if ranks > 1:  # rank 0's padded scatter parts
            io += ranks * local_views * height * width * 3 * 4
        peak = max(peak, backbone + head + io)
    # Nested: the any-view branch's outputs stay alive while the metric branch runs.
    peak += (len(members) - 1) * num_views * height * width * 4 * 4
    return int(param_bytes + safety * (peak + FIXED_BYTES))


def plan_views(estimate: Callable[[int], int], requested: int, budget_bytes: int | None,
               min_views: int = 2, group: int = 1, ranks: int = 1) -> MemoryPlan:
    """Largest view count (a multiple of ``group``, >= ``min_views``) whose estimate fits.

    Args:
        estimate: ``estimate(num_views) -> bytes`` (per device: with ``ranks`` > 1 the views
            spread over that many devices whenever there are at least as many views).
        requested: views in the window.
        budget_bytes: available bytes (of each device), or None for no limit.
        min_views: refuse below this many views.
        group: views come in groups of this size (cameras per set in multi-camera mode).
        ranks: devices a window is sharded over; a window is shrunk only when it does not fit
            spread over all of them.

    Raises:
        WindowTooLargeError: not even ``min_views`` fit; the message states sizes and budget.
    """
    def used(n: int) -> int:
        return ranks if n >= ranks else 1

    where = f" per device on {ranks} devices" if ranks > 1 else ""
    if budget_bytes is None:
        return MemoryPlan(requested, requested, estimate(requested), None, ranks=used(requested))
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
            f"a window of {floor} views needs ~{need / 2**30:.2f} GiB{where} but only "
            f"{budget_bytes / 2**30:.2f} GiB is available; lower process_res, use a smaller model or "
            "free GPU memory")
    msg = "" if n == requested else (
        f"window of {requested} views needs ~{estimate(requested) / 2**30:.2f} GiB{where} > budget "
        f"{budget_bytes / 2**30:.2f} GiB; running {n} views instead")
    return MemoryPlan(requested, n, est, budget_bytes, msg, ranks=used(n))


def cuda_free_and_cached(device: torch.device | str) -> tuple[int, int] | None:
    """``(free bytes, bytes this process's allocator caches)`` on a CUDA ``device``, else None."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free, torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def budget_from(free_and_cached: tuple[int, int] | None, fraction: float = 0.9) -> int | None:
    """``fraction`` of the free bytes plus the cached ones (None stays None: no planning)."""
    if free_and_cached is None:
        return None
    free, cached = free_and_cached
    return int(fraction * free + cached)


def cuda_budget_bytes(device: torch.device | str, fraction: float = 0.9) -> int | None:
    """Bytes a new window may use on ``device`` (None on CPU/MPS: no planning there)."""
    return budget_from(cuda_free_and_cached(device), fraction)


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


def weight_dtype(model: torch.nn.Module):
    """The dtype holding most of a module's parameter elements (bf16 for a ``set_dtype``-cast net).

    Returns None for a module without parameters.
    """
    counts: dict = {}
    for t in model.parameters():
        counts[t.dtype] = counts.get(t.dtype, 0) + t.numel()
    return max(counts, key=counts.get) if counts else None


def cuda_memory_mb(device) -> dict[str, float] | None:
    """Allocated and peak CUDA memory of this process on ``device`` in MiB; None without CUDA there."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return None
    return {"allocated_mb": torch.cuda.memory_allocated(device) / 2**20,
            "peak_mb": torch.cuda.max_memory_allocated(device) / 2**20}
