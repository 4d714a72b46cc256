"""The memory planner's estimate stays within 15 % of the peaks measured on the GPU (issue 7.4).

The measurements are the per-implementation peaks da3-bench wrote to bench/raw (H200, bf16
weights, compiled network, 504x378); bench/RESULTS.md shows the table.
"""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _planner_check():
    spec = importlib.util.spec_from_file_location("planner_check", ROOT / "bench" / "planner_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_estimates_within_15_percent_of_measured_gpu_peaks():
    from da3_ros.core import memory
    from da3_ros.model import get_preset

    check = _planner_check()
    rows = check.measured()
    assert {(p, s) for p, s, *_ in rows} >= {("da3-large", 1), ("da3-large", 8), ("da3-large", 512),
                                             ("da3-small", 8)}
    for preset, views, peak_gib, _src, w, h in rows:
        est = memory.estimate_peak_bytes(get_preset(preset), views, h, w,
                                         int(check.PARAM_GIB[preset] * 2**30), act_bytes=2) / 2**30
        assert est == pytest.approx(peak_gib, rel=0.15), (preset, views)
