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
    ``flash_attn``  the flash-attn packages (CUDA, fp16/bf16, head_dim % 8 == 0, <= 256):
                    flash-attn-4's CuTe kernel (``flash_attn.cute.flash_attn_func``) on
                    Hopper (sm_90) or newer where it imports, else flash-attn 2
                    (``flash_attn.flash_attn_func``). Both take DA3's ``(B, N, H, D)`` layout
                    as it comes out of the fused qkv projection (strided views, last dim
                    contiguous, strides multiples of 8 elements): no copy, no transpose.
    ``auto``        the fastest that works on the device: CPU -> ``sdpa``; CUDA -> the
                    first of flash-attn-4 (Hopper+), cuDNN SDPA (Hopper+), flash-attn 2,
                    each only if a small bf16 call on the device matches SDPA, else ``sdpa``
                    (which has its own math fallback, so ``manual`` is never needed). On
                    Hopper flash-attn 2 ranks below cuDNN (cuDNN is the faster kernel there).
                    fp32 activations or head_dim % 8 != 0 go to ``sdpa`` per call (a static
                    dtype/shape branch).

The camera encoder (S tokens, fp32) always uses ``sdpa`` (``manual`` when requested).

The backend is chosen by argument, else by the environment variable
``DA3_ATTENTION_BACKEND``, else ``auto``. A backend requested explicitly that cannot run on
the device raises :class:`AttentionBackendError` naming why, when the model is built or
moved, never a silent fallback. The choice (and, for ``auto``, why flash-attn was passed
over) is logged once per (backend, device type, choice), outside ``forward``.

torch.compile and CUDA graphs: the flash-attn kernels run behind one opaque custom op,
``torch.ops.da3_ros.flash_attn`` (``torch.library.custom_op`` with a registered fake that
only gives the output's shape and dtype), so dynamo never traces into the CuTe DSL / C++
launchers and the compiled graph has no break at attention. The kernel launches on
PyTorch's current stream (flash-attn-4 through TVM-FFI's environment stream), and its JIT
compilation happens at the selection-time check call (bf16) or the first eager call of a
dtype, i.e. during warm-up, never inside a CUDA-graph capture. The op is inference-only;
with ``requires_grad`` inputs the wrapper calls the package directly (eager autograd).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F

from da3_ros.model.options import ATTENTION_BACKENDS

LOG = logging.getLogger(__name__)

ENV_VAR = "DA3_ATTENTION_BACKEND"
BACKENDS: tuple[str, ...] = ATTENTION_BACKENDS
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
_HALF = (torch.float16, torch.bfloat16)
_logged: set[tuple[str, str, str]] = set()

FA4 = "flash_attn.cute"  # flash-attn-4 (CuTe DSL), Hopper and newer
FA2 = "flash_attn"  # flash-attn 2 (CUDA C++)
FA4_MIN_MAJOR = 9
FLASH_MAX_HEAD_DIM = 256
_flash_fns: dict[str, Callable] = {}  # implementation name -> the package's function


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


# --- flash-attn ---------------------------------------------------------------------------

def _import_flash(impl: str) -> Callable:
    """The package's ``flash_attn_func`` for ``impl`` (:data:`FA4` or :data:`FA2`); may raise."""
    if impl == FA4:
        from flash_attn.cute import flash_attn_func
    else:
        from flash_attn import flash_attn_func
    return flash_attn_func


def _try_import(impl: str) -> tuple[Callable | None, str]:
    """``(function, "")``, or ``(None, why it does not import)``."""
    try:
        return _import_flash(impl), ""
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable", with its reason
        package = "flash-attn-4" if impl == FA4 else "flash-attn 2"
        return None, f"{impl} ({package}) does not import: {type(exc).__name__}: {exc}"


def flash_attn_candidates(device: torch.device | str) -> tuple[list[tuple[str, Callable]], list[str]]:
    """The flash-attn implementations usable on ``device``, best first, and why others are not.

    flash-attn-4 needs a CUDA GPU of compute capability 9.0 (Hopper) or newer; flash-attn 2
    any CUDA GPU it was built for. Nothing runs a kernel here (see :func:`get_attention_fn`
    for the check call).

    Returns:
        ``([(impl, fn), ...], [reason, ...])``; impl is :data:`FA4` or :data:`FA2`.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return [], [f"needs a CUDA device, got {device.type}"]
    if not torch.cuda.is_available():
        return [], ["CUDA is not available to this PyTorch"]
    major, minor = torch.cuda.get_device_capability(device)
    found, why = [], []
    if major >= FA4_MIN_MAJOR:
        fn, reason = _try_import(FA4)
        found += [(FA4, fn)] if fn is not None else []
        why += [reason] if reason else []
    else:
        why.append(f"flash-attn-4 needs Hopper (sm_90) or newer, this GPU is sm_{major}{minor}")
    fn, reason = _try_import(FA2)
    found += [(FA2, fn)] if fn is not None else []
    why += [reason] if reason else []
    for impl, fn in found:
        _flash_fns[impl] = fn
    return found, why


def _flash_call(impl: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    fn = _flash_fns.get(impl) or _import_flash(impl)
    out = fn(q, k, v)  # (B, N, H, D) in and out, default scale, no mask
    out = out[0] if isinstance(out, tuple) else out  # flash-attn-4 returns (out, lse)
    return out.contiguous()  # what the fake promises; both packages already return this


@torch.library.custom_op("da3_ros::flash_attn", mutates_args=())
def flash_attn_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: str) -> torch.Tensor:
    """flash-attn as one opaque op: ``(B, N, H, D)`` in and out; impl is FA4 or FA2."""
    return _flash_call(impl, q, k, v)


@flash_attn_op.register_fake
def _flash_attn_fake(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: str) -> torch.Tensor:
    # Both packages return a new contiguous (B, N_q, H, D_v) tensor in q's dtype.
    return q.new_empty((*q.shape[:-1], v.shape[-1]))


def _flash_attn_fn(impl: str) -> AttentionFn:
    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _require_half(q, "flash_attn")
        d = q.shape[-1]
        if d % 8 or d > FLASH_MAX_HEAD_DIM:
            raise AttentionBackendError(f"attention backend flash_attn needs head_dim % 8 == 0 and "
                                        f"<= {FLASH_MAX_HEAD_DIM}, got {d}; use 'auto' or 'sdpa'")
        if q.requires_grad or k.requires_grad or v.requires_grad:
            return _flash_call(impl, q, k, v)  # the packages' own autograd (eager training)
        return flash_attn_op(q, k, v, impl)

    fn.flash_impl = impl
    return fn


# --- selection ----------------------------------------------------------------------------

def _cudnn_sdpa_usable(device: torch.device) -> bool:
    return (torch.cuda.is_available() and torch.backends.cuda.cudnn_sdp_enabled()
            and torch.cuda.get_device_capability(device)[0] >= 9)


def _auto_cuda(fast: AttentionFn) -> AttentionFn:
    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # static dtype/shape branches: fine for torch.compile
        if q.dtype in _HALF and q.shape[-1] % 8 == 0:
            return fast(q, k, v)
        return sdpa_attention(q, k, v)

    return fn


def _check_call(fn: AttentionFn, device: torch.device) -> str:
    """Run ``fn`` once on a small bf16 problem on ``device``: "" if it matches SDPA, else why.

    Also compiles (JIT kernels) or loads what the kernel needs, outside any timed region or
    CUDA-graph capture.
    """
    try:
        g = torch.Generator(device="cpu").manual_seed(0)
        # device="cpu" explicitly: models are built under `with torch.device(...)`
        q, k, v = (torch.randn(1, 32, 2, 64, generator=g, device="cpu").to(device, torch.bfloat16)
                   for _ in range(3))
        ref = sdpa_attention(q, k, v).float()
        err = (fn(q, k, v).float() - ref).abs().max().item()
    except Exception as exc:  # noqa: BLE001 - the reason is reported, never swallowed silently
        return f"its check call failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    return "" if err <= 2e-2 else f"its check call differs from SDPA by {err:.3g}"


def _build_flash(device: torch.device) -> tuple[str, AttentionFn, str]:
    found, why = flash_attn_candidates(device)
    for impl, _ in found:
        fn = _flash_attn_fn(impl)
        problem = _check_call(fn, device)
        if not problem:
            return impl, fn, "" if impl == FA4 or not why else "flash-attn-4 not used: " + "; ".join(why)
        why.append(f"{impl}: {problem}")
    raise AttentionBackendError("attention backend flash_attn cannot run: " + "; ".join(why))


def _build(backend: str, device: torch.device) -> tuple[str, AttentionFn, str]:
    """Return (concrete description, function, note for the log) for a backend on a device."""
    from torch.nn.attention import SDPBackend

    cuda = device.type == "cuda"
    if backend == "manual":
        return "manual", manual_attention, ""
    if backend == "sdpa":
        return "sdpa", sdpa_attention, ""
    if backend in ("sdpa_cudnn", "sdpa_flash"):
        if not cuda:
            raise AttentionBackendError(f"attention backend {backend} needs a CUDA device, got {device.type}")
        kernel = SDPBackend.CUDNN_ATTENTION if backend == "sdpa_cudnn" else SDPBackend.FLASH_ATTENTION
        return backend, _sdpa_with(kernel), ""
    if backend == "flash_attn":
        return _build_flash(device)
    return _build_auto(device)


def _build_auto(device: torch.device) -> tuple[str, AttentionFn, str]:
    """Fastest first: flash-attn-4, cuDNN SDPA (Hopper+), flash-attn 2, then plain SDPA."""
    if device.type != "cuda":
        return "sdpa", sdpa_attention, ""
    from torch.nn.attention import SDPBackend

    found, why = flash_attn_candidates(device)
    impls = dict(found)
    candidates = [(FA4, _flash_attn_fn(FA4))] if FA4 in impls else []
    if _cudnn_sdpa_usable(device):
        candidates.append(("sdpa_cudnn", _sdpa_with(SDPBackend.CUDNN_ATTENTION)))
    if FA2 in impls:
        candidates.append((FA2, _flash_attn_fn(FA2)))
    for desc, fast in candidates:
        problem = _check_call(fast, device)
        if not problem:
            if desc == "sdpa_cudnn" and FA2 in impls:
                why.append("flash-attn 2 imports but ranks below cuDNN SDPA on Hopper+")
            note = "" if desc == FA4 or not why else "flash_attn not used: " + "; ".join(why)
            return f"{desc} (sdpa for fp32 or head_dim % 8 != 0)", _auto_cuda(fast), note
        why.append(f"{desc}: {problem}")
    return "sdpa", sdpa_attention, "; ".join(why)


def get_attention_fn(backend: str | None, device: torch.device | str) -> tuple[str, AttentionFn]:
    """Resolve a requested backend for a device; log the choice once.

    Args:
        backend: One of :data:`BACKENDS`, or None to read ``$DA3_ATTENTION_BACKEND``.
        device: Device the attention will run on (its type, and for CUDA its compute
            capability; ``meta`` is treated like CPU).

    Returns:
        ``(description, fn)`` where ``fn(q, k, v)`` maps ``(B, N, H, D)`` tensors to
        ``(B, N, H, D)``.

    Raises:
        AttentionBackendError: Unknown backend, or one that cannot run on the device (the
            message says why).
    """
    name = requested_backend(backend)
    device = torch.device(device)
    device = torch.device("cpu") if device.type == "meta" else device
    desc, fn, note = _build(name, device)
    key = (name, device.type, desc)
    if key not in _logged:
        _logged.add(key)
        LOG.info("DA3 attention backend: requested %s on %s -> %s%s", name, device.type, desc,
                 f" ({note})" if note else "")
    return desc, fn
