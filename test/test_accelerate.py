"""The ``accelerate`` parameter and the engine's fast-path wiring, checked on the CPU (da3-tiny).

On CUDA ``build_engine`` casts the weights to the half dtype, turns autocast off and wraps the
network with ``da3_ros.model.accel.accelerate``; that GPU branch could not be run here. What is
checked: the choice of mode, the CPU path being unchanged, the wrapper plumbing the CUDA branch
uses (weights counted through ``.module``, bf16 weights without autocast, one log per new shape)
and that the warm-up window has the shape real frames of its size produce.
"""

import logging

import numpy as np
import pytest
import torch

from da3_ros.core import memory
from da3_ros.core.engine import DA3Engine
from da3_ros.core.frames import Frame
from da3_ros.inference import build
from da3_ros.inference.settings import InferenceSettings, PredictorInfo
from da3_ros.inference.sources import bundled_model_dir, resolve_process_settings
from da3_ros.model import build_model
from da3_ros.model.accel import GraphedDA3, compile_network
from da3_ros.ros.parameters import SPEC_BY_NAME, check_values

LOG = logging.getLogger("test_accelerate")


class _Log:
    """Logger stand-in that records messages."""

    def __init__(self):
        self.infos, self.warnings = [], []

    def info(self, msg):
        self.infos.append(msg)

    def warning(self, msg):
        self.warnings.append(msg)


def _settings(**over):
    values = {"model": "da3-tiny", "device": "cpu", "dtype": "auto", "process_res": 56,
              "ref_view_strategy": "first"}
    values.update(over)
    return InferenceSettings(**values)


def _frames(n, w=64, h=48, seed=0):
    rng = np.random.default_rng(seed)
    return [Frame(image=rng.integers(0, 255, (h, w, 3), dtype=np.uint8), stamp_ns=i + 1, camera="c",
                  frame_id="c") for i in range(n)]


def test_accelerate_parameter_is_declared_restart_only_and_validated():
    spec = SPEC_BY_NAME["accelerate"]
    assert spec.default == "auto" and not spec.dynamic
    assert set(spec.choices) == {"auto", "off", "compile", "compile_graphs"}
    assert check_values({"accelerate": "compile_graphs"}) is None
    assert "accelerate" in check_values({"accelerate": "fast"})


@pytest.mark.parametrize("device, setting, want", [
    ("cuda", "auto", "background"),  # eager at once, compiled in the background
    ("cuda:1", "compile_graphs", "compile_graphs"),
    ("cuda", "compile", "compile"),
    ("cuda", "off", "off"),
    ("cpu", "auto", "off"),
    ("cpu", "compile_graphs", "off"),
])
def test_resolve_accelerate(device, setting, want):
    assert build.resolve_accelerate(device, setting) == want


def test_resolve_accelerate_rejects_unknown_modes_on_cuda():
    with pytest.raises(ValueError, match="accelerate"):
        build.resolve_accelerate("cuda", "turbo")


@pytest.mark.parametrize("setting", ["off", "auto", "compile_graphs"])
def test_build_engine_on_cpu_is_the_plain_fp32_engine(setting):
    torch.manual_seed(0)
    ref_net = build_model("da3-tiny").eval()
    ref = DA3Engine(ref_net, process_res=56, ref_view_strategy="first", attention="flash")
    torch.manual_seed(0)
    log = _Log()
    engine, info = build.build_engine(_settings(accelerate=setting), log)
    assert engine.model.__class__ is ref_net.__class__  # not wrapped on the CPU
    assert engine.dtype == torch.float32 and info.accelerate == "off"
    assert next(engine.model.parameters()).dtype == torch.float32
    assert bool(log.warnings[1:]) == (setting == "compile_graphs")  # [0]: random weights warning
    frames = _frames(2)
    a, b = engine.predict(frames), ref.predict(frames)
    for x, y in zip(a.depth + a.confidence, b.depth + b.confidence, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.world_from_cam, b.world_from_cam)


def test_engine_counts_the_weights_of_accel_wrappers():
    net = build_model("da3-tiny").eval()
    plain = DA3Engine(net, process_res=56)
    want = memory.param_bytes(net)
    assert want > 0 and plain._param_bytes == want
    wrappers = [GraphedDA3(net), GraphedDA3(compile_network(net), module=net), compile_network(net),
                build.ShapeLoggedNet(GraphedDA3(net), net, _Log(), "compile_graphs")]
    for wrapped in wrappers:
        engine = DA3Engine(wrapped, process_res=56)
        assert engine._param_bytes == want, type(wrapped).__name__
        assert engine.estimate_bytes(4, 56, 42) == plain.estimate_bytes(4, 56, 42)


def test_half_weights_are_estimated_with_two_byte_activations():
    net = build_model("da3-tiny").eval()
    fp32 = DA3Engine(net, process_res=56).estimate_bytes(4, 56, 42)
    net.set_dtype(torch.bfloat16)
    assert memory.weight_dtype(net) == torch.bfloat16
    engine = DA3Engine(build.ShapeLoggedNet(GraphedDA3(net), net, _Log(), "compile_graphs"),
                       process_res=56, dtype=torch.float32)
    got = engine.estimate_bytes(4, 56, 42)
    want = memory.estimate_peak_bytes(net.preset, 4, 42, 56, memory.param_bytes(net), act_bytes=2,
                                      attention="flash")
    assert got == want and got < fp32


def test_bf16_weights_without_autocast_through_the_wrapper_match_fp32():
    """The CUDA branch's configuration, run on the CPU: set_dtype weights, no autocast, wrapper."""
    torch.manual_seed(0)
    net = build_model("da3-tiny").eval()
    frames = _frames(3)
    ref = DA3Engine(net, process_res=56, ref_view_strategy="first").predict(frames)
    log = _Log()
    net.set_dtype(torch.bfloat16)
    fast = build.ShapeLoggedNet(GraphedDA3(net), net, log, "compile_graphs")
    engine = DA3Engine(fast, process_res=56, ref_view_strategy="first", dtype=torch.float32)
    out = engine.predict(frames)
    for x, y in zip(out.depth, ref.depth, strict=True):
        assert np.isfinite(x).all()
        assert np.median(np.abs(x - y) / np.abs(y)) < 0.05  # bf16 rounding, not a different net
    engine.predict(frames)
    assert len(log.infos) == 1 and "(1, 3, 3, 42, 56)" in log.infos[0]


def test_warm_up_compiles_the_shape_real_frames_of_its_size_produce():
    net = build_model("da3-tiny").eval()
    log = _Log()
    fast = build.ShapeLoggedNet(GraphedDA3(net), net, log, "compile_graphs")
    engine = DA3Engine(fast, process_res=56, ref_view_strategy="first")
    build.warm_up(engine, 2, LOG, size=(80, 60))
    assert len(fast.shapes_seen) == 1
    engine.predict(_frames(2, w=80, h=60))
    assert len(fast.shapes_seen) == 1 and len(log.infos) == 1  # no new compile for real frames
    engine.predict(_frames(2, w=60, h=80))  # another camera size: a new shape, logged once
    assert len(fast.shapes_seen) == 2 and len(log.infos) == 2


def test_da3_eval_passes_accelerate_to_build_engine(monkeypatch):
    from da3_ros.tools import eval as da3_eval

    args = da3_eval.build_parser().parse_args(["some.bag", "--model", "da3-tiny", "--device", "cpu",
                                               "--accelerate", "compile", "--out", "o"])
    opts = da3_eval.options_from_args(args)
    assert opts.accelerate == "compile"
    seen = {}

    def fake_build(settings, logger):
        seen.update(vars(settings))
        return DA3Engine(build_model("da3-tiny").eval(), process_res=56), PredictorInfo("x")

    monkeypatch.setattr(da3_eval, "build_engine", fake_build)
    da3_eval.make_predictor(opts, truth_fn=None)
    assert seen["accelerate"] == "compile" and seen["device"] == "cpu"


def test_release_drops_the_graphs_of_an_accelerated_engine():
    net = build_model("da3-tiny").eval()
    fast = GraphedDA3(net)
    fast._graphs["k"] = object()  # stands for a captured graph (none are captured on the CPU)
    engine = DA3Engine(build.ShapeLoggedNet(fast, net, _Log(), "compile_graphs"), process_res=56)
    build.release(engine)
    assert fast.cached_keys() == []


def test_weights_recommend_their_inference_settings(tmp_path):
    """process_res 0 / ref_view_strategy auto take the weights' config.json da3_ros block."""
    (tmp_path / "config.json").write_text('{"model_name": "da3-tiny", '
                                          '"da3_ros": {"process_res": 224, "ref_view_strategy": "first"}}')
    auto = InferenceSettings(process_res=0, ref_view_strategy="auto")
    assert resolve_process_settings(auto, "path", str(tmp_path)) == (224, "first")
    explicit = InferenceSettings(process_res=336, ref_view_strategy="middle")
    assert resolve_process_settings(explicit, "path", str(tmp_path)) == (336, "middle")
    # official checkpoints and hub ids carry no recommendation: upstream's defaults
    (tmp_path / "config.json").write_text('{"model_name": "da3-large"}')
    assert resolve_process_settings(auto, "path", str(tmp_path)) == (504, "saddle_balanced")
    assert resolve_process_settings(auto, "hub", "depth-anything/DA3-LARGE") == (504, "saddle_balanced")
    # the bundled model records what it was trained with
    bundled = str(bundled_model_dir())
    assert resolve_process_settings(auto, "path", bundled) == (224, "first")


class _SlowCompiled:
    """Stands for ``torch.compile(net)``: its first calls take a while (compiling), then run the net."""

    def __init__(self, net, delay_s=1.5, fail=False):
        self.net, self.delay_s, self.fail = net, delay_s, fail
        self.calls, self.threads = 0, set()

    def __call__(self, images, *args, **kwargs):
        import threading
        import time

        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise RuntimeError("inductor exploded")
        if self.calls == 1:
            time.sleep(self.delay_s)
        return self.net(images, *args, **kwargs)


def _background(monkeypatch, **kw):
    from da3_ros.inference.compiling import BackgroundCompiledNet

    monkeypatch.setattr(BackgroundCompiledNet, "COMPILE_DEVICES", ("cpu",))
    net = build_model("da3-tiny").eval()
    compiled = _SlowCompiled(net, **{k: kw.pop(k) for k in ("delay_s", "fail") if k in kw})
    log = _Log()
    return BackgroundCompiledNet(net, log, graphs=False, compiled=compiled, **kw), compiled, log


def test_background_compile_serves_eagerly_then_switches(monkeypatch):
    import time

    fast, compiled, log = _background(monkeypatch)
    x = torch.randn(1, 2, 3, 28, 42)
    with torch.inference_mode():
        ref = fast.module(x, ref_view_strategy="first").depth
        out = fast(x, ref_view_strategy="first").depth  # eager; the compile starts in the background
        torch.testing.assert_close(out, ref)
        assert fast.status.state == "compiling" and fast.status.compiling == [(2, 28, 42)]
        deadline = time.monotonic() + 30
        while fast.status.state != "ready" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fast.status.state == "ready" and fast.status.ready == [(2, 28, 42)]
        assert compiled.threads == {"da3_compile"}  # compiled off the caller's thread
        before = compiled.calls
        torch.testing.assert_close(fast(x, ref_view_strategy="first").depth, ref)
        assert compiled.calls == before + 1  # now the compiled path serves
        assert "for 1 shape(s)" in fast.status.describe()
        fast(torch.randn(1, 3, 3, 28, 42), ref_view_strategy="first")  # a new shape: compiles too
        assert fast.status.compiling == [(3, 28, 42)] and fast.status.ready == [(2, 28, 42)]
    assert any("compiled in" in m for m in log.infos)


def test_background_compile_failure_and_timeout_stay_eager(monkeypatch):
    import time

    fast, compiled, log = _background(monkeypatch, fail=True)
    x = torch.randn(1, 2, 3, 28, 42)
    with torch.inference_mode():
        fast(x)
        deadline = time.monotonic() + 30
        while fast.status.state == "compiling" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fast.status.state == "failed" and "inductor exploded" in fast.status.describe()
        assert log.warnings
        fast(x)  # stays eager, no new attempt
    assert compiled.calls == 1
    slow, _, log = _background(monkeypatch, delay_s=5.0, timeout_s=0.2)
    with torch.inference_mode():
        slow(x)
        time.sleep(0.4)
        slow(x)
    assert slow.status.state == "timed_out" and "not done after" in slow.status.describe()


def test_compile_cache_dir_goes_to_inductor(monkeypatch, tmp_path):
    from da3_ros.inference.compiling import default_cache_dir, use_cache_dir

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "da3_ros" / "torch_compile"
    got = use_cache_dir(tmp_path / "cache")
    assert got == tmp_path / "cache" and got.is_dir()
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert use_cache_dir(tmp_path / "other") == tmp_path / "mine"  # the user's own choice wins


def test_compiled_forward_does_not_touch_the_eager_caches():
    """Inside torch.compile the UV and RoPE tables are computed in the graph: a background compile
    must not guard on (or fill) caches the eager thread fills meanwhile (it failed on the GPU:
    'Guard failed on the same frame it was created ... _UV_CACHE')."""
    from da3_ros.model import dpt
    from da3_ros.model.rope import RopeTables

    dpt._UV_CACHE.clear()
    tables = RopeTables()

    def f(x):
        uv = dpt.uv_pos_embed(8, 3, 4, 4 / 3, x.device, x.dtype)
        cos = tables.get(8, 3, 4, x.device, x.dtype)[0]
        return x + uv.sum() + cos.sum()

    x = torch.zeros(2)
    out = torch.compile(f, backend="eager", dynamic=False)(x)
    assert dpt._UV_CACHE == {} and tables._cache == {}  # nothing filled by the compiled call
    torch.testing.assert_close(out, f(x))  # eager: same values, and now cached
    assert len(dpt._UV_CACHE) == 1 and len(tables._cache) == 1


def test_background_compile_with_real_dynamo_beside_eager_calls(monkeypatch):
    """The real torch.compile (dynamo, eager backend) traces on its thread while the caller keeps
    running eager windows of the same shape, then serves compiled."""
    import time

    from da3_ros.inference.compiling import BackgroundCompiledNet
    from da3_ros.model import dpt

    monkeypatch.setattr(BackgroundCompiledNet, "COMPILE_DEVICES", ("cpu",))
    dpt._UV_CACHE.clear()
    torch.manual_seed(0)
    net = build_model("da3-tiny").eval()
    fast = BackgroundCompiledNet(net, _Log(), graphs=False,
                                 compiled=torch.compile(net, backend="eager", dynamic=False))
    x = torch.randn(1, 2, 3, 28, 42)
    with torch.inference_mode():
        ref = net(x, ref_view_strategy="first").depth
        deadline = time.monotonic() + 120
        while fast.status.state != "ready" and time.monotonic() < deadline:
            torch.testing.assert_close(fast(x, ref_view_strategy="first").depth, ref)
            assert fast.status.state in ("compiling", "ready"), fast.status.describe()
        assert fast.status.state == "ready", fast.status.describe()
        torch.testing.assert_close(fast(x, ref_view_strategy="first").depth, ref)


def test_cpu_threads_leave_cores_to_the_node():
    assert build.resolve_cpu_threads(0, "cuda:0", cores=16) == build.CUDA_HOST_THREADS
    assert build.resolve_cpu_threads(0, "cpu", cores=2) == 1
    assert build.resolve_cpu_threads(0, "cpu", cores=16) == 14
    assert build.resolve_cpu_threads(3, "cpu", cores=2) == 3  # an explicit value wins
