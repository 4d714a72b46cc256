"""DA3Engine over several devices: 2 CPU processes (gloo) give the single-device engine's windows."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.distributed as dist
from _tiny_nets import TINY, randomize

from da3_ros.core.engine import DA3Engine
from da3_ros.core.frames import Frame
from da3_ros.core.sharded import check_devices
from da3_ros.model import build_model


def _frames(n, seed):
    rng = np.random.default_rng(seed)
    return [Frame(image=rng.integers(0, 256, (56, 70, 3), dtype=np.uint8), stamp_ns=i + 1, camera="cam",
                  frame_id="cam_optical_frame") for i in range(n)]


def _engine(net, **kw):
    return DA3Engine(net, process_res=70, device="cpu", ref_view_strategy="saddle_balanced", **kw)


@pytest.fixture(scope="module")
def engines():
    torch.manual_seed(0)
    net = randomize(build_model(TINY))
    single = _engine(copy.deepcopy(net))  # its own copy: the hook below sees only rank 0's calls
    sharded = _engine(net, devices=["cpu", "cpu"])
    yield single, sharded
    sharded.close()


def _assert_same(got, want):
    for name in ("depth", "confidence"):
        for g, w in zip(getattr(got, name), getattr(want, name)):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(got.world_from_cam, want.world_from_cam, rtol=1e-4, atol=1e-4)
    for g, w in zip(got.intrinsics, want.intrinsics):
        np.testing.assert_allclose(g.K, w.K, rtol=1e-4, atol=1e-3)


def test_sharded_engine_equals_the_single_device_engine(engines):
    single, sharded = engines
    assert sharded.ranks == 2 and single.ranks == 1
    local_views = []
    hook = sharded.model.module.register_forward_pre_hook(
        lambda m, args, kwargs: local_views.append(getattr(kwargs.get("shard"), "local_views", None)),
        with_kwargs=True)
    try:
        # The workers stay alive across windows of different sizes; one view runs on rank 0 alone.
        for n, seed in ((5, 0), (4, 1), (3, 2), (1, 3)):
            frames = _frames(n, seed)
            _assert_same(sharded.predict(frames), single.predict(frames))
    finally:
        hook.remove()
    assert local_views == [3, 2, 2, None]  # rank 0's views: 5 -> 3 + 2, 4 -> 2 + 2, 3 -> 2 + 1, 1 alone


def test_sharded_engine_plans_memory_per_device(engines):
    _, sharded = engines
    assert sharded.estimate_bytes(8, 70, 56) < engines[0].estimate_bytes(8, 70, 56)
    plan = sharded.plan(_frames(4, 0))
    assert plan.ranks == 2 and plan.budget_bytes is None  # CPU: no budget


def test_check_devices():
    assert check_devices(["cpu", "cpu"]) == ["cpu", "cpu"]
    assert check_devices(["cuda", "cuda:1"]) == ["cuda:0", "cuda:1"]
    for bad in (["cpu"], ["cuda:0", "cuda"], ["cpu", "cuda:0"]):
        with pytest.raises(ValueError):
            check_devices(bad)


def test_close_stops_the_workers_and_leaves_the_group(engines):
    """Last in this file: it closes the module's sharded engine (one process group per process)."""
    sharded = engines[1]
    procs = list(sharded.model._procs)
    assert procs and all(p.is_alive() for p in procs) and dist.is_initialized()
    sharded.close()
    assert all(p.exitcode == 0 for p in procs) and not dist.is_initialized()
    with pytest.raises(RuntimeError, match="closed"):
        sharded.predict(_frames(3, 0))
