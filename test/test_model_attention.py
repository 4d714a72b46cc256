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
