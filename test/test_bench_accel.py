"""da3-bench helpers and the fixed-shape accelerator, on the CPU with da3-tiny (fast).

The GPU paths (CUDA-graph capture, the 16 GiB fit, torch.compile speed) were checked on the
GPU machine; their numbers are in bench/RESULTS.md.
"""

import json

import numpy as np
import pytest
import torch

from bench import network as bench
from bench.common import FlopModel, compare, count_flops, ours_runner, timed_peak
from bench.node_path import encode_payloads, node_path
from da3_ros.model import build_model
from da3_ros.model.accel import GraphedDA3


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("da3-tiny").eval()


def test_flop_model_extrapolation_is_exact(tiny):
    meta = build_model("da3-tiny", device="meta")

    def make(s):
        return ours_runner(meta, torch.empty(1, s, 3, 42, 56, device="meta"))

    model = FlopModel(make)
    assert model(12) == pytest.approx(count_flops(make(12)), rel=1e-9)
    assert model(2) == count_flops(make(2))
    # global attention makes FLOPs superlinear in the number of views
    assert model(32) / 32 > model(8) / 8


def test_graphed_wrapper_is_the_network_on_cpu(tiny):
    x = torch.randn(1, 3, 3, 42, 56)
    fast = GraphedDA3(tiny)
    with torch.inference_mode():
        a = fast(x, ref_view_strategy="first")
        b = tiny(x, ref_view_strategy="first")
    assert torch.equal(a.depth, b.depth) and torch.equal(a.extrinsics, b.extrinsics)
    assert fast.warm_up([(3, 42, 56)], "cpu") == [] and fast.cached_keys() == []
    assert fast.preset is tiny.preset and fast.is_metric is False
    key = fast.key(x, "first", False, None)
    assert key[1:6] == (torch.float32, 1, 3, 42, 56)
    assert fast.key(x.expand(1, 3, 3, 42, 56), "first", True, None) != key


def test_compare_reports_relative_errors(tiny):
    with torch.inference_mode():
        out = tiny(torch.randn(1, 2, 3, 42, 56), ref_view_strategy="first")
    same = compare(out, out)
    assert all(v["max_rel"] == 0 for v in same.values())
    out2 = type(out)(**{**out.as_dict(), "depth": out.depth * 1.01})
    assert compare(out2, out)["depth"]["mean_rel"] == pytest.approx(0.01, rel=1e-3)


def test_timed_peak_times_the_call_on_cpu():
    ms, peak = timed_peak(lambda: sum(range(100_000)))
    assert ms > 0 and np.isnan(peak)


def test_bench_main_writes_a_report(tmp_path):
    out = tmp_path / "r.json"
    assert bench.main(["--preset", "da3-tiny", "--res", "56x42", "--views", "1,3", "--iters", "1",
                       "--warmup", "1", "--no-upstream", "--checks", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert [r["views"] for r in rep["rows"]] == [1, 3]
    assert all(r["impl"] == "ours" and r["ms"] > 0 and r["flops"] > 0 for r in rep["rows"])
    check = rep["checks"]["ours_levers_vs_ours_fp32_S8"]["depth"]
    assert 0 < check["mean_rel"] < 1e-2  # bf16 against fp32: close, not identical


def test_node_path_times_every_stage(tiny):
    res = node_path(tiny, torch.device("cpu"), views=2, width=96, height=72, iters=1,
                    dtype=torch.float32, process_res=56)
    for stage in ("preprocess", "network", "postprocess", "point_cloud", "encode", "total"):
        assert res[stage] > 0
    # 2 views of 96x72: two float32 images each, plus 20-byte cloud points
    assert res["payload_bytes"] == 2 * 2 * 96 * 72 * 4 + 20 * res["points"]


def test_encode_payloads_counts_every_byte():
    class Pred:
        depth = [np.ones((4, 5), np.float32)]
        confidence = [np.ones((4, 5), np.float32)]

    pts = np.zeros((7, 3), np.float32)
    assert encode_payloads(Pred, pts, np.zeros((7, 3), np.uint8), np.ones(7, np.float32)) == 2 * 80 + 7 * 20


def test_accelerate_is_a_no_op_off_cuda(tiny):
    from da3_ros.model.accel import accelerate

    assert accelerate(tiny, [(2, 42, 56)]) is tiny
