"""The one place that chooses the attention kernel.

Every attention layer of the network calls the function returned by
:func:`get_attention_fn` with ``q, k, v`` laid out ``(B, N, heads, head_dim)`` and gets
``(B, N, heads, head_dim)`` back. All backends use the same weights and the default
``1/sqrt(head_dim)`` scale, with no mask.

Backends:
    ``manual``      plain ``softmax(q k^T / sqrt(d)) v`` (softmax in fp32): the reference.
    ``sdpa``        ``torch.nn.functional.scaled_dot_product_attention``; PyTorch chooses.
    ``sdpa_cudnn``  SDPA restricted to the cuDNN kernel (CUDA only).
    ``sdpa_flash``  SDPA restricted to PyTorch's flash kernel (CUDA only).
    ``flash_attn``  the flash-attn package: flash-attn-4's CuTe kernels
                    (``flash_attn.cute``) on Hopper/Blackwell where importable, else
                    ``flash_attn.flash_attn_func`` (CUDA, fp16/bf16 only).
    ``auto``        the fastest that works on the device: CPU -> ``sdpa``; CUDA -> the
                    first of flash-attn-4 (``flash_attn.cute``), cuDNN SDPA (Hopper+),
                    flash-attn 2 that passes a bf16 smoke call, else ``sdpa``. fp32
                    activations or head_dim % 8 != 0 fall back to ``sdpa`` per call (a
                    static dtype/shape branch).

The camera encoder (S tokens, fp32) always uses ``sdpa`` (``manual`` when requested).

The backend is chosen by argument, else by the environment variable
``DA3_ATTENTION_BACKEND``, else ``auto``. A backend requested explicitly that cannot run on
the device raises :class:`AttentionBackendError` when the model is built or moved, never a
silent fallback. The choice is logged once per (backend, device type), outside ``forward``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F

from da3_ros.model.options import ATTENTION_BACKENDS

LOG = logging.getLogger(__name__)

ENV_VAR = "DA3_ATTENTION_BACKEND"
BACKENDS: tuple[str, ...] = ATTENTION_BACKENDS
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
_HALF = (torch.float16, torch.bfloat16)
_logged: set[tuple[str, str, str]] = set()


class AttentionBackendError(RuntimeError):
    """A requested attention backend is unknown or cannot run on this device."""


def requested_backend(name: str | None = None) -> str:
    """Return the requested backend name: argument, else ``$DA3_ATTENTION_BACKEND``, else auto.

    Raises:
        AttentionBackendError: The name is not one of :data:`BACKENDS`.
    """
    chosen = name if name is not None else os.environ.get(ENV_VAR, "auto")
    chosen = chosen.strip().lower()
    if chosen not in BACKENDS:
        raise AttentionBackendError(f"unknown attention backend {chosen!r}; choose one of {BACKENDS}")
    return chosen


def manual_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Reference attention, ``(B, N, H, D)`` in and out, softmax computed in fp32."""
    scale = q.shape[-1] ** -0.5
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
    logits = (qh.float() * scale) @ kh.float().transpose(-2, -1)
    out = logits.softmax(dim=-1) @ vh.float()
    return out.to(q.dtype).transpose(1, 2)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PyTorch SDPA with its own kernel choice, ``(B, N, H, D)`` in and out."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def _sdpa_with(backend) -> AttentionFn:
    from torch.nn.attention import sdpa_kernel

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _require_half(q, backend.name)
        with sdpa_kernel(backend):
            return sdpa_attention(q, k, v)

    return fn


def _require_half(q: torch.Tensor, name: str) -> None:
    if q.dtype not in _HALF:
        raise AttentionBackendError(
            f"attention backend {name} needs fp16/bf16 activations, got {q.dtype}; "
            "use backend 'sdpa' or 'auto' for fp32")


@lru_cache(maxsize=None)
def _flash_attn_impl() -> tuple[str, Callable] | None:
    """Import the best flash-attn interface available, or None."""
    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9:
        try:
            from flash_attn.cute import flash_attn_func as fa4  # flash-attn-4 (Hopper+)

            return "flash_attn.cute", fa4
        except Exception:  # noqa: BLE001 - any import failure means "not usable"
            pass
    try:
        from flash_attn import flash_attn_func as fa2

        return "flash_attn", fa2
    except Exception:  # noqa: BLE001
        return None


def _flash_attn_fn(impl: Callable) -> AttentionFn:
    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _require_half(q, "flash_attn")
        out = impl(q, k, v)  # flash-attn takes (B, N, H, D) natively
        return out[0] if isinstance(out, tuple) else out

    return fn


def _cudnn_sdpa_usable() -> bool:
    return (torch.cuda.is_available() and torch.backends.cuda.cudnn_sdp_enabled()
            and torch.cuda.get_device_capability()[0] >= 9)


def _auto_cuda(fast: AttentionFn) -> AttentionFn:
    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # static dtype/shape branches: fine for torch.compile
        if q.dtype in _HALF and q.shape[-1] % 8 == 0:
            return fast(q, k, v)
        return sdpa_attention(q, k, v)

    return fn


def _build(backend: str, device_type: str) -> tuple[str, AttentionFn]:
    """Return (concrete description, function) for a backend on a device type."""
    from torch.nn.attention import SDPBackend

    cuda = device_type == "cuda"
    if backend == "manual":
        return "manual", manual_attention
    if backend == "sdpa":
        return "sdpa", sdpa_attention
    if backend in ("sdpa_cudnn", "sdpa_flash"):
        if not cuda:
            raise AttentionBackendError(f"attention backend {backend} needs a CUDA device, got {device_type}")
        kernel = SDPBackend.CUDNN_ATTENTION if backend == "sdpa_cudnn" else SDPBackend.FLASH_ATTENTION
        return backend, _sdpa_with(kernel)
    if backend == "flash_attn":
        impl = _flash_attn_impl() if cuda else None
        if not cuda:
            raise AttentionBackendError(
                f"attention backend flash_attn needs a CUDA device, got {device_type}")
        if impl is None:
            raise AttentionBackendError("attention backend flash_attn requested but the flash-attn "
                                        "package is not importable (pip install flash-attn)")
        return impl[0], _flash_attn_fn(impl[1])
    return _build_auto(cuda)


def _build_auto(cuda: bool) -> tuple[str, AttentionFn]:
    """Fastest first: flash-attn-4, cuDNN SDPA (Hopper+), flash-attn 2, then plain SDPA.

    Each candidate must pass a small bf16 smoke call on the current CUDA device.
    """
    if not cuda:
        return "sdpa", sdpa_attention
    from torch.nn.attention import SDPBackend

    impl = _flash_attn_impl()
    candidates = []
    if impl is not None and impl[0] == "flash_attn.cute":
        candidates.append((impl[0], _flash_attn_fn(impl[1])))
    if _cudnn_sdpa_usable():
        candidates.append(("sdpa_cudnn", _sdpa_with(SDPBackend.CUDNN_ATTENTION)))
    if impl is not None and impl[0] == "flash_attn":
        candidates.append((impl[0], _flash_attn_fn(impl[1])))
    for desc, fast in candidates:
        if _smoke_ok(fast):
            return f"{desc} (sdpa for fp32 or head_dim % 8 != 0)", _auto_cuda(fast)
    return "sdpa", sdpa_attention


def _smoke_ok(fn: AttentionFn) -> bool:
    try:
        q = torch.randn(1, 32, 2, 64, device="cuda", dtype=torch.bfloat16)
        ref = sdpa_attention(q, q, q)
        return bool(torch.allclose(fn(q, q, q).float(), ref.float(), atol=2e-2, rtol=2e-2))
    except Exception:  # noqa: BLE001 - a kernel that fails here is simply not chosen
        return False


def get_attention_fn(backend: str | None, device: torch.device | str) -> tuple[str, AttentionFn]:
    """Resolve a requested backend for a device; log the choice once.

    Args:
        backend: One of :data:`BACKENDS`, or None to read ``$DA3_ATTENTION_BACKEND``.
        device: Device the attention will run on (only its type matters; ``meta`` is
            treated like CPU).

    Returns:
        ``(description, fn)`` where ``fn(q, k, v)`` maps ``(B, N, H, D)`` tensors to
        ``(B, N, H, D)``.

    Raises:
        AttentionBackendError: Unknown backend, or one that cannot run on the device.
    """
    name = requested_backend(backend)
    device_type = torch.device(device).type
    device_type = "cpu" if device_type == "meta" else device_type
    desc, fn = _build(name, device_type)
    key = (name, device_type, desc)
    if key not in _logged:
        _logged.add(key)
        LOG.info("DA3 attention backend: requested %s on %s -> %s", name, device_type, desc)
    return desc, fn
