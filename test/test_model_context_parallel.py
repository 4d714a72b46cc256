"""The context-parallel forward on 2 CPU processes (gloo) equals the single-process forward.

One spawn runs every case: 5 views split 3 + 2 over two ranks (the per-rank broadcast path;
one case 4 views, 2 + 2: the all-gather path), fp32, tiny networks with fixed random weights.
Each rank saves the whole-window output it returns; the parent compares both ranks' outputs
with its own single-process forward of the same weights and images.
"""

from __future__ import annotations

import socket
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _tiny_nets import TINY, TINY_NESTED, images, poses, randomize, split_sky

from da3_ros.model import build_model
from da3_ros.model import vit as vit_module
from da3_ros.model.context_parallel import ViewShard, split_views

VIEWS, RANKS = 5, 2
TOL = {"rtol": 1e-4, "atol": 1e-4}
# name: (network, forward keyword arguments); "local_kv" runs with the K/V gather removed.
CASES = {
    "first": ("tiny", {"ref_view_strategy": "first", "return_rays": True}),
    "even": ("tiny", {"ref_view_strategy": "saddle_balanced", "views": 4}),
    "saddle": ("tiny", {"ref_view_strategy": "saddle_balanced"}),
    "poses": ("tiny", {"ref_view_strategy": "saddle_balanced", "with_poses": True}),
    "nested": ("nested", {"ref_view_strategy": "saddle_balanced"}),
    "local_kv": ("tiny", {"ref_view_strategy": "first"}),
}


def _nets():
    torch.manual_seed(0)
    tiny = randomize(build_model(TINY))
    nested = randomize(build_model(TINY_NESTED), 3)
    split_sky(nested.da3_metric)
    return {"tiny": tiny, "nested": nested}


def _call(net, x, name, rank=None):
    kwargs = dict(CASES[name][1])
    views = kwargs.pop("views", VIEWS)
    if kwargs.pop("with_poses", False):
        kwargs["extrinsics"], kwargs["intrinsics"] = poses(views)
    shard = None if rank is None else ViewShard(split_views(views, RANKS), rank)
    x = x[:, :views] if shard is None else shard.local(x[:, :views])
    with torch.inference_mode():
        out = net(x, shard=shard, **kwargs)
    return {k: v.clone() for k, v in out.as_dict().items() if isinstance(v, torch.Tensor)}


def _rank_main(rank, port, state, x, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=RANKS)
    torch.set_num_threads(1)
    nets = {"tiny": build_model(TINY), "nested": build_model(TINY_NESTED)}
    for key, net in nets.items():
        net.load_state_dict(state[key])
    results = {}
    for name, (key, _) in CASES.items():
        if name == "local_kv":  # each rank's queries see only its own views' keys and values
            with mock.patch.object(ViewShard, "global_attention", lambda self, fn: fn):
                results[name] = _call(nets[key], x, name, rank)
        else:
            results[name] = _call(nets[key], x, name, rank)
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def _saddle_images():
    """Images for which saddle_balanced picks a view held by the second rank, and that view."""
    net, picked = _nets()["tiny"], []
    real = vit_module.select_reference_view
    spy = mock.patch.object(vit_module, "select_reference_view",
                            lambda *a: picked.append(int(real(*a)[0])) or real(*a))
    with spy, torch.inference_mode():
        for seed in range(20):
            net(images(VIEWS, seed=seed), ref_view_strategy="saddle_balanced")
            if picked[-1] >= split_views(VIEWS, RANKS)[0]:
                return images(VIEWS, seed=seed), picked[-1]
    raise AssertionError(f"saddle_balanced never picked a view of rank 1: {picked}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("cp")
    x, ref_view = _saddle_images()
    nets = _nets()
    single = {name: _call(nets[key], x, name) for name, (key, _) in CASES.items()}
    state = {k: v.state_dict() for k, v in nets.items()}
    mp.start_processes(_rank_main, args=(_free_port(), state, x, str(out_dir)), nprocs=RANKS,
                       start_method="spawn")
    sharded = [torch.load(out_dir / f"rank{r}.pt") for r in range(RANKS)]
    return single, sharded, ref_view


def test_split_views_is_contiguous_and_uneven():
    assert split_views(5, 2) == (3, 2) and split_views(4, 4) == (1, 1, 1, 1)
    shard = ViewShard((3, 2), 1)
    assert (shard.start, shard.end, shard.num_views, shard.local_views) == (3, 5, 5, 2)
    with pytest.raises(ValueError):
        split_views(1, 2)


def test_the_saddle_reference_view_is_on_the_second_rank(runs):
    assert runs[2] >= split_views(VIEWS, RANKS)[0]


@pytest.mark.parametrize("case", ["first", "even", "saddle", "poses", "nested"])
def test_sharded_forward_equals_single_process(runs, case):
    single, sharded, _ = runs
    want = single[case]
    expected = {"depth", "depth_conf", "extrinsics", "intrinsics"}
    expected |= {"ray", "ray_conf"} if case == "first" else set()
    expected |= {"sky", "scale_factor"} if case == "nested" else set()
    assert set(want) == expected
    for rank, outputs in enumerate(sharded):
        got = outputs[case]
        assert set(got) == set(want), rank
        for key in want:
            assert got[key].shape == want[key].shape, (rank, key)
            torch.testing.assert_close(got[key], want[key], **TOL,
                                       msg=lambda m, k=key, r=rank: f"rank {r} {k}: {m}")


def test_the_reference_view_changes_the_output(runs):
    """Which view gets the reference camera token matters: the saddle case proves it lands right."""
    single = runs[0]
    assert (single["saddle"]["extrinsics"] - single["first"]["extrinsics"]).abs().max() > 0.1


def test_global_attention_crosses_ranks(runs):
    """Without the K/V gather each rank attends only to its own views: clearly another result."""
    single, sharded, _ = runs
    for outputs in sharded:
        got, want = outputs["local_kv"], single["local_kv"]
        assert (got["extrinsics"] - want["extrinsics"]).abs().max() > 1e-2
        assert (got["depth"] - want["depth"]).abs().max() > 10 * TOL["atol"]
