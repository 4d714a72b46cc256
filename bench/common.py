"""Shared helpers of ``da3-bench``: timing, peak memory, FLOP counting, model builders, checks.

Upstream (the ``depth_anything_3`` package, when importable) is run the way its API runs it:
fp32 weights under bf16 autocast (fp16 where bf16 is missing; none on CPU), ``no_grad``,
reference view ``first``. Ours runs under ``inference_mode`` with the chosen levers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

GIB = 1024**3
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
Runner = Callable[[], object]


def sync() -> None:
    """Wait for the GPU (no-op on CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_ms(fn: Runner, warmup: int, iters: int) -> float:
    """Median wall time of ``fn`` in ms, synchronising the GPU around each call."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def timed_peak(fn: Runner, own_bytes: int = 0) -> tuple[float, float]:
    """(ms, peak GiB) of one call of ``fn``; the peak (NaN on CPU) is what it would need alone.

    The peak is the allocator's peak during the call minus what was allocated before it (other
    models, caches), plus ``own_bytes`` (the implementation's own weights), so two
    implementations resident in one process are each charged only for themselves.
    """
    cuda = torch.cuda.is_available()
    if cuda:
        sync()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    sync()
    ms = (time.perf_counter() - t0) * 1e3
    del out
    peak = (torch.cuda.max_memory_allocated() - base + own_bytes) / GIB if cuda else float("nan")
    return ms, peak


def peak_gib(fn: Runner, own_bytes: int = 0) -> float:
    """Peak GPU memory (GiB) one call of ``fn`` would need alone (see :func:`timed_peak`)."""
    return timed_peak(fn, own_bytes)[1]


def count_flops(fn: Runner) -> int:
    """FLOPs of one call of ``fn`` (matrix products, convolutions, attention; torch's count)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


class FlopModel:
    """FLOPs of a forward as a function of S: counted at S <= 8, ``a*S + b*S^2`` above.

    Every term of a DA3 forward is linear in S (per-frame work) or quadratic (global
    attention), so counts at S = 4 and 8 fix the exact curve for S >= 3 (reference-view
    selection adds an S^2 * C term that is counted too).
    """

    def __init__(self, make_run: Callable[[int], Runner]) -> None:
        self.make_run = make_run
        self.counted: dict[int, int] = {}

    def __call__(self, views: int) -> int:
        """FLOPs at ``views`` views."""
        if views <= 8:
            if views not in self.counted:
                self.counted[views] = count_flops(self.make_run(views))
            return self.counted[views]
        f4, f8 = self(4), self(8)
        b = (f8 / 8 - f4 / 4) / 4
        a = f4 / 4 - 4 * b
        return int(a * views + b * views * views)


def build_upstream(preset: str, device: torch.device) -> torch.nn.Module | None:
    """The upstream DepthAnything3Net for ``preset`` (fp32, eval), or None if not installed."""
    try:
        from depth_anything_3.cfg import create_object, load_config
        from depth_anything_3.registry import MODEL_REGISTRY
    except ImportError:
        return None
    if preset not in MODEL_REGISTRY:  # e.g. our own da3-tiny
        return None
    net = create_object(load_config(MODEL_REGISTRY[preset]))
    return net.to(device).eval()


def upstream_runner(net: torch.nn.Module, images: torch.Tensor) -> Runner:
    """Call upstream as its API does: no_grad + bf16 autocast (fp16 where bf16 is missing)."""
    dtype = torch.bfloat16 if (images.is_cuda and torch.cuda.is_bf16_supported()) else torch.float32

    def run():
        with torch.no_grad(), torch.autocast(images.device.type, dtype=dtype,
                                              enabled=dtype != torch.float32):
            return net(images, None, None, [], False, False, "first")

    return run


def ours_runner(net, images: torch.Tensor, chunk: int | None = None) -> Runner:
    """Call our network (or a graphed/compiled wrapper) with reference view ``first``."""

    def run():
        with torch.inference_mode():
            return net(images, ref_view_strategy="first", frame_chunk=chunk)

    run.images = images
    return run


def _get(out, key: str) -> torch.Tensor:
    return out[key] if isinstance(out, dict) else getattr(out, key)


def compare(a, b) -> dict:
    """Relative errors of depth, confidence, extrinsics and intrinsics of ``a`` against ``b``.

    ``mean_rel`` = mean |a - b| / mean |b|; ``max_rel`` = max |a - b| / mean |b|; for depth
    also ``median_pix_rel`` = median over pixels of |a - b| / |b|.
    """
    res = {}
    for key in ("depth", "depth_conf", "extrinsics", "intrinsics"):
        x, y = _get(a, key).float(), _get(b, key).float()
        scale = y.abs().mean().clamp_min(1e-6)
        res[key] = {"mean_rel": float((x - y).abs().mean() / scale),
                    "max_rel": float((x - y).abs().max() / scale)}
        if key == "depth":
            pix = ((x - y).abs() / y.abs().clamp_min(1e-6)).flatten()
            res[key]["median_pix_rel"] = float(pix[:: max(1, pix.numel() // 1_000_000)].median())
    return res


def images_for(views: int, width: int, height: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """A deterministic normalised-looking batch ``(1, S, 3, H, W)`` fp32 (random, never zeros)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(1, views, 3, height, width, generator=gen).to(device)


def release() -> None:
    """Return cached GPU blocks (between measurements)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def device_name(device: torch.device) -> str:
    """Human name of the device."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or "cpu"
