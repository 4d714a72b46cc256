"""Attention backends: selection, errors, and agreement with the manual reference on CPU."""

import logging

import pytest
import torch

from da3_ros.model import build_model
from da3_ros.model.attention import (
    ENV_VAR,
    AttentionBackendError,
    get_attention_fn,
    manual_attention,
    requested_backend,
)

CPU_BACKENDS = ["sdpa", "manual", "auto"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_cpu_backends_agree_with_manual(backend):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 37, 3, 64, generator=g) for _ in range(3))
    _, fn = get_attention_fn(backend, "cpu")
    torch.testing.assert_close(fn(q, k, v), manual_attention(q, k, v), rtol=1e-5, atol=1e-5)


def test_manual_is_softmax_attention():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 5, 2, 8, generator=g) for _ in range(3))
    out = manual_attention(q, k, v)
    w = torch.softmax(torch.einsum("bnhd,bmhd->bhnm", q, k) / 8 ** 0.5, dim=-1)
    torch.testing.assert_close(out, torch.einsum("bhnm,bmhd->bnhd", w, v))


@torch.inference_mode()
def test_model_outputs_agree_across_cpu_backends():
    torch.manual_seed(0)
    net = build_model("da3-tiny", attention_backend="manual")
    x = torch.randn(1, 3, 3, 42, 56)
    ref = net(x)
    for backend in ("sdpa", "auto"):
        net.set_attention_backend(backend)
        out = net(x)
        torch.testing.assert_close(out.depth, ref.depth, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.extrinsics, ref.extrinsics, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["flash_attn", "sdpa_cudnn", "sdpa_flash"])
def test_gpu_only_backends_raise_on_cpu(backend):
    with pytest.raises(AttentionBackendError, match=backend):
        get_attention_fn(backend, "cpu")
    with pytest.raises(AttentionBackendError):
        build_model("da3-tiny", attention_backend=backend)


def test_unknown_backend_raises():
    with pytest.raises(AttentionBackendError, match="choose one of"):
        requested_backend("xformers")


def test_env_var_selects_backend(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "manual")
    assert requested_backend(None) == "manual"
    net = build_model("da3-tiny", device="meta")
    assert net.attention_backend == "manual" and net.attention_desc == "manual"
    assert requested_backend("sdpa") == "sdpa"  # the argument wins
    monkeypatch.setenv(ENV_VAR, "flash_attn")
    with pytest.raises(AttentionBackendError):
        build_model("da3-tiny", device="meta")


def test_auto_on_cpu_is_sdpa_and_logged_once(caplog, monkeypatch):
    import da3_ros.model.attention as attention

    monkeypatch.setattr(attention, "_logged", set())
    monkeypatch.delenv(ENV_VAR, raising=False)
    with caplog.at_level(logging.INFO, logger="da3_ros.model.attention"):
        desc, _ = get_attention_fn(None, "cpu")
        get_attention_fn("auto", torch.device("cpu"))
        build_model("da3-tiny", device="meta")
    assert desc == "sdpa"
    assert len([r for r in caplog.records if "attention backend" in r.getMessage()]) == 1


@torch.inference_mode()
def test_no_logging_inside_forward(caplog):
    net = build_model("da3-tiny")
    with caplog.at_level(logging.DEBUG):
        net(torch.randn(1, 3, 3, 28, 28))
    assert [r for r in caplog.records if r.name.startswith("da3_ros")] == []


# --- flash_attn: selection, layout and compile safety, with stand-in packages ------------------
#
# No GPU here: torch.cuda.is_available / get_device_capability are monkeypatched, and
# stand-in ``flash_attn`` / ``flash_attn.cute`` modules are put in sys.modules. The stand-in
# kernels compute real attention on the CPU and record what they were given; they read
# ``data_ptr()``, which dynamo cannot trace, so a compiled region that traced into the kernel
# instead of keeping it opaque fails to compile with fullgraph=True.


class FakeFlash:
    """A stand-in flash-attn kernel: records its inputs, returns attention (contiguous)."""

    def __init__(self, returns_tuple: bool, broken: str | None = None):
        self.returns_tuple, self.broken, self.calls = returns_tuple, broken, []

    def __call__(self, q, k, v, **kwargs):
        self.calls.append({"kwargs": kwargs, **{
            name: {"ptr": t.data_ptr(), "shape": tuple(t.shape), "stride": t.stride(), "dtype": t.dtype}
            for name, t in (("q", q), ("k", k), ("v", v))}})
        if self.broken == "raises":
            raise RuntimeError("CUDA error: no kernel image is available for execution on the device")
        out = manual_attention(q, k, v).contiguous()
        if self.broken == "wrong":
            out = torch.zeros_like(out)
        return (out, None) if self.returns_tuple else out


def _install(monkeypatch, fa4=None, fa2=None, capability=(9, 0), cuda=True):
    """Put stand-in packages in sys.modules and pretend a CUDA GPU of ``capability``.

    ``fa4`` / ``fa2``: a callable (the package's flash_attn_func), an exception instance (the
    import raises it) or None (not installed).
    """
    import sys
    import types

    from da3_ros.model import attention

    monkeypatch.setattr(attention, "_flash_fns", {})
    monkeypatch.setattr(attention, "_logged", set())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    real_check = attention._check_call
    # the check call runs flash candidates for real (on the CPU); cuDNN SDPA cannot run here
    monkeypatch.setattr(attention, "_check_call", lambda fn, device: real_check(fn, torch.device("cpu"))
                        if hasattr(fn, "flash_impl") else "")
    if fa4 is None and fa2 is None:
        monkeypatch.setitem(sys.modules, "flash_attn", None)
        monkeypatch.setitem(sys.modules, "flash_attn.cute", None)
        return
    pkg = types.ModuleType("flash_attn")
    pkg.__path__ = []
    if fa2 is not None:
        pkg.flash_attn_func = fa2
    monkeypatch.setitem(sys.modules, "flash_attn", pkg)
    if fa4 is None:
        monkeypatch.setitem(sys.modules, "flash_attn.cute", None)
        return
    cute = types.ModuleType("flash_attn.cute")
    if isinstance(fa4, Exception):
        def fail(name, exc=fa4):
            raise exc
        cute.__getattr__ = fail  # `from flash_attn.cute import flash_attn_func` raises it
    else:
        cute.flash_attn_func = fa4
    pkg.cute = cute
    monkeypatch.setitem(sys.modules, "flash_attn.cute", cute)


def _da3_qkv(b=2, n=37, heads=4, d=64, dtype=torch.bfloat16):
    """q, k, v exactly as vit.Attention makes them: strided views of one qkv projection."""
    qkv = torch.randn(b, n, 3 * heads * d, generator=torch.Generator().manual_seed(5)).to(dtype)
    return qkv, qkv.view(b, n, 3, heads, d).unbind(2)


def test_flash_attn_absent_explicit_names_why_auto_takes_cudnn(monkeypatch, caplog):
    _install(monkeypatch)
    with pytest.raises(AttentionBackendError) as err:
        get_attention_fn("flash_attn", "cuda")
    assert "flash_attn.cute (flash-attn-4) does not import" in str(err.value)
    assert "flash_attn (flash-attn 2) does not import" in str(err.value)
    with caplog.at_level(logging.INFO, logger="da3_ros.model.attention"):
        desc, _ = get_attention_fn("auto", "cuda")
    assert desc.startswith("sdpa_cudnn")
    assert "flash_attn not used" in caplog.text and "does not import" in caplog.text


def test_flash_attn_refused_off_cuda_even_when_installed(monkeypatch):
    fa4, fa2 = FakeFlash(True), FakeFlash(False)
    _install(monkeypatch, fa4=fa4, fa2=fa2)
    for device in ("cpu", "meta"):
        with pytest.raises(AttentionBackendError, match="needs a CUDA device, got cpu"):
            get_attention_fn("flash_attn", device)
        assert get_attention_fn("auto", device)[0] == "sdpa"
    _install(monkeypatch, fa4=fa4, fa2=fa2, cuda=False)
    with pytest.raises(AttentionBackendError, match="CUDA is not available"):
        get_attention_fn("flash_attn", "cuda")
    assert fa4.calls == [] and fa2.calls == []


def test_pre_hopper_refuses_fa4_and_uses_fa2_when_installed(monkeypatch):
    fa4, fa2 = FakeFlash(True), FakeFlash(False)
    _install(monkeypatch, fa4=fa4, capability=(8, 6))
    with pytest.raises(AttentionBackendError, match=r"needs Hopper \(sm_90\) or newer, this GPU is sm_86"):
        get_attention_fn("flash_attn", "cuda")
    assert get_attention_fn("auto", "cuda")[0] == "sdpa"  # no FA2, no cuDNN SDPA before Hopper
    _install(monkeypatch, fa4=fa4, fa2=fa2, capability=(8, 0))
    desc, fn = get_attention_fn("flash_attn", "cuda")
    assert desc == "flash_attn" and fn.flash_impl == "flash_attn"
    assert get_attention_fn("auto", "cuda")[0].startswith("flash_attn (")
    assert fa4.calls == [] and fa2.calls  # FA2 ran its check call; FA4 was never touched


@pytest.mark.parametrize("capability", [(9, 0), (10, 0)])
def test_hopper_and_newer_pick_fa4_first_and_log_once(monkeypatch, caplog, capability):
    fa4, fa2 = FakeFlash(True), FakeFlash(False)
    _install(monkeypatch, fa4=fa4, fa2=fa2, capability=capability)
    with caplog.at_level(logging.INFO, logger="da3_ros.model.attention"):
        assert get_attention_fn("flash_attn", "cuda")[0] == "flash_attn.cute"
        assert get_attention_fn("auto", "cuda")[0].startswith("flash_attn.cute (")
        get_attention_fn("auto", torch.device("cuda", 0))
    assert len([r for r in caplog.records if "requested auto" in r.getMessage()]) == 1
    assert fa4.calls and fa2.calls == []


def test_broken_fa4_import_falls_to_fa2_with_reason(monkeypatch, caplog):
    fa2 = FakeFlash(False)
    _install(monkeypatch, fa4=ModuleNotFoundError("No module named 'cutlass.cute'"), fa2=fa2)
    with caplog.at_level(logging.INFO, logger="da3_ros.model.attention"):
        assert get_attention_fn("flash_attn", "cuda")[0] == "flash_attn"
        assert get_attention_fn("auto", "cuda")[0].startswith("sdpa_cudnn")  # FA2 ranks below cuDNN
    assert "No module named 'cutlass.cute'" in caplog.text
    assert "ranks below cuDNN" in caplog.text


def test_flash_check_call_works_inside_a_default_device_context(monkeypatch):
    # build_model(device=...) resolves the backend under `with torch.device(device)`
    _install(monkeypatch, fa4=FakeFlash(True))
    with torch.device("meta"):
        assert get_attention_fn("flash_attn", "cuda")[0] == "flash_attn.cute"


@pytest.mark.parametrize("broken, why", [("raises", "no kernel image"), ("wrong", "differs from SDPA")])
def test_flash_kernel_failing_its_check_is_refused(monkeypatch, broken, why):
    _install(monkeypatch, fa4=FakeFlash(True, broken=broken))
    with pytest.raises(AttentionBackendError, match=why):
        get_attention_fn("flash_attn", "cuda")
    assert get_attention_fn("auto", "cuda")[0].startswith("sdpa_cudnn")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("impl", ["fa4", "fa2"])
def test_flash_gets_da3_layout_without_copies(monkeypatch, dtype, impl):
    kernel = FakeFlash(returns_tuple=impl == "fa4")
    _install(monkeypatch, **{impl: kernel})
    _, fn = get_attention_fn("flash_attn", "cuda")
    kernel.calls.clear()
    qkv, (q, k, v) = _da3_qkv(dtype=dtype)
    out = fn(q, k, v)
    (call,) = kernel.calls
    assert call["kwargs"] == {}  # default scale, no mask, no causal
    step = 4 * 64 * qkv.element_size()  # heads * head_dim elements between q, k and v
    for i, name in enumerate("qkv"):
        got = call[name]
        assert got["shape"] == (2, 37, 4, 64) and got["dtype"] == dtype  # (B, N, H, D)
        assert got["ptr"] == qkv.data_ptr() + i * step  # the projection's memory itself
        assert got["stride"] == (37 * 3 * 256, 3 * 256, 64, 1)  # not copied, not transposed
    assert out.shape == (2, 37, 4, 64) and out.dtype == dtype
    torch.testing.assert_close(out, manual_attention(q, k, v))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_flash_in_network_global_and_frame_blocks(monkeypatch, dtype):
    """da3-tiny: blocks 0-3 per frame and plain, 4-7 qk-norm + RoPE, 5 and 7 global."""
    kernel = FakeFlash(returns_tuple=True)
    torch.manual_seed(0)
    ref = build_model("da3-tiny", attention_backend="manual").set_dtype(dtype)
    net = build_model("da3-tiny", attention_backend="manual")
    net.load_state_dict(ref.state_dict())
    net.set_dtype(dtype)
    _install(monkeypatch, fa4=kernel)
    net.attention_desc, net._attn_fn = get_attention_fn("flash_attn", "cuda")  # FA4 path, CPU tensors
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    kernel.calls.clear()
    x = torch.randn(1, 3, 3, 28, 42, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        out, want = net(x), ref(x)
    tokens, c = 1 + 2 * 3, 192
    shapes = [call["q"]["shape"] for call in kernel.calls]
    assert shapes == [(3, tokens, 3, 64)] * 5 + [(1, 3 * tokens, 3, 64), (3, tokens, 3, 64),
                                                 (1, 3 * tokens, 3, 64)]
    for i, call in enumerate(kernel.calls):
        n = call["q"]["shape"][1]
        assert call["v"]["stride"] == (n * 3 * c, 3 * c, 64, 1)  # v: always the projection's view
        # q, k: the projection's views before qk-norm/RoPE, new contiguous tensors after
        want_q = (n * 3 * c, 3 * c, 64, 1) if i < 4 else (n * c, c, 64, 1)
        assert call["q"]["stride"] == call["k"]["stride"] == want_q
    torch.testing.assert_close(out.depth, want.depth, rtol=2e-2, atol=2e-2)


def test_flash_refuses_fp32_and_odd_head_dim_auto_routes_them_to_sdpa(monkeypatch):
    kernel = FakeFlash(returns_tuple=True)
    _install(monkeypatch, fa4=kernel)
    _, explicit = get_attention_fn("flash_attn", "cuda")
    _, auto = get_attention_fn("auto", "cuda")
    kernel.calls.clear()
    _, (q, k, v) = _da3_qkv(dtype=torch.float32)
    with pytest.raises(AttentionBackendError, match="needs fp16/bf16 activations"):
        explicit(q, k, v)
    odd = torch.randn(1, 5, 2, 12, dtype=torch.bfloat16)
    with pytest.raises(AttentionBackendError, match="head_dim % 8 == 0"):
        explicit(odd, odd, odd)
    torch.testing.assert_close(auto(q, k, v), manual_attention(q, k, v), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(auto(odd, odd, odd), manual_attention(odd, odd, odd), rtol=2e-2, atol=2e-2)
    assert kernel.calls == []


def test_flash_op_fake_gives_shape_and_dtype_without_running_the_kernel(monkeypatch):
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    from da3_ros.model.attention import flash_attn_op

    kernel = FakeFlash(returns_tuple=True)
    _install(monkeypatch, fa4=kernel)
    _, fn = get_attention_fn("flash_attn", "cuda")
    kernel.calls.clear()
    _, (q, k, v) = _da3_qkv(dtype=torch.float16)
    with FakeTensorMode() as mode:
        fq, fk, fv = (mode.from_tensor(t) for t in (q, k, v))
        out = fn(fq, fk, fv)
        wide = flash_attn_op(fq, fk, mode.from_tensor(torch.empty(2, 37, 4, 32, dtype=torch.float16)),
                             "flash_attn.cute")
    assert isinstance(out, FakeTensor) and out.shape == (2, 37, 4, 64) and out.dtype == torch.float16
    assert out.is_contiguous() and wide.shape == (2, 37, 4, 32)  # head_dim of v
    assert kernel.calls == []
    # the real op agrees with its fake (schema, fake tensor, AOT dispatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # AOT asks, on this CPU torch
    torch.library.opcheck(flash_attn_op, (q, k, v, "flash_attn.cute"),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


def test_flash_compiles_as_one_graph_without_tracing_into_the_kernel(monkeypatch):
    from da3_ros.model.rope import RopeTables
    from da3_ros.model.vit import Block

    kernel = FakeFlash(returns_tuple=True)
    _install(monkeypatch, fa4=kernel)
    _, fn = get_attention_fn("flash_attn", "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # dynamo asks, on this CPU torch
    torch.manual_seed(0)
    blk = Block(192, 3, qk_norm=True).to(torch.bfloat16).eval()  # global block: qk-norm + RoPE
    tables = RopeTables().get(64, 2, 3, torch.device("cpu"), torch.bfloat16)
    rope = tables[2].repeat(3, 1, 1), tables[3].repeat(3, 1, 1)
    x = torch.randn(1, 3 * 7, 192, dtype=torch.bfloat16)
    torch._dynamo.reset()
    # fullgraph: a graph break (dynamo tracing into the kernel's data_ptr()) fails here
    compiled = torch.compile(lambda t: blk(t, fn, rope), backend="aot_eager", fullgraph=True)
    with torch.inference_mode():
        want = blk(x, fn, rope)
        kernel.calls.clear()
        got = compiled(x)
        got_again = compiled(x)
    assert len(kernel.calls) == 2  # ran once per compiled call, never during tracing
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_again, want)


def test_flash_with_grad_uses_the_packages_autograd(monkeypatch):
    kernel = FakeFlash(returns_tuple=True)
    _install(monkeypatch, fa4=kernel)
    _, fn = get_attention_fn("flash_attn", "cuda")
    _, (q, k, v) = _da3_qkv(n=9)
    q = q.detach().requires_grad_()
    fn(q, k, v).float().sum().backward()  # the custom op has no autograd formula; this path does
    assert q.grad is not None and q.grad.shape == q.shape
