import logging

import numpy as np
import pytest
import torch
from _core_synth import make_sequence

from da3_ros.core import memory
from da3_ros.core.config import PipelineConfig
from da3_ros.core.pipeline import Pipeline
from da3_ros.model.presets import get_preset
from da3_ros.sim.standin import GroundTruthPredictor


def test_estimate_grows_with_views_resolution_and_model():
    est = memory.estimate_peak_bytes
    small, large = get_preset("da3-small"), get_preset("da3-large")
    assert est(small, 8, 378, 504, 0) > est(small, 4, 378, 504, 0) > 0
    assert est(small, 4, 504, 672, 0) > est(small, 4, 378, 504, 0)
    assert est(large, 4, 378, 504, 0) > est(small, 4, 378, 504, 0)
    # The math backend materialises (heads, N, N): quadratic in the number of views.
    a1 = est(small, 8, 378, 504, 0, attention="math") - est(small, 8, 378, 504, 0)
    a2 = est(small, 16, 378, 504, 0, attention="math") - est(small, 16, 378, 504, 0)
    assert a2 == pytest.approx(4 * a1, rel=1e-6)
    nested, giant = get_preset("da3nested-giant-large"), get_preset("da3-giant")
    assert est(nested, 2, 378, 504, 7) > est(giant, 2, 378, 504, 7)


def test_plan_views_shrinks_in_groups_or_refuses():
    def per_view(n):
        return 100 * n

    plan = memory.plan_views(per_view, 12, budget_bytes=None)
    assert plan.num_views == 12 and not plan.shrunk
    plan = memory.plan_views(per_view, 12, budget_bytes=750, group=3)
    assert plan.num_views == 6 and plan.shrunk and "running 6 views" in plan.message
    plan = memory.plan_views(per_view, 12, budget_bytes=750, group=1)
    assert plan.num_views == 7 and plan.estimate_bytes == 700
    with pytest.raises(memory.WindowTooLargeError, match="2 views needs"):
        memory.plan_views(per_view, 12, budget_bytes=150, min_views=2)


def test_per_rank_estimate_splits_activations_but_not_weights_or_gathered_kv():
    est, large = memory.estimate_peak_bytes, get_preset("da3-large")
    weights = 800 * 2**20
    one, two = (est(large, 512, 378, 504, weights, act_bytes=2, ranks=r) for r in (1, 2))
    assert weights < two < one
    # Per-view activations halve; every rank also holds k and v of all 512 views.
    tokens = 512 * (27 * 36 + 1)
    kv = memory.KV_TENSORS * tokens * large.embed_dim * 2
    assert two - weights > (one - weights) / 2 + 0.9 * kv
    four = est(large, 512, 378, 504, weights, act_bytes=2, ranks=4)
    assert four - weights < (two - weights) * 0.8 and two - weights < (one - weights) * 0.85
    # Uneven shards: the largest one counts (5 views on 2 ranks: 3 per rank).
    assert est(large, 5, 378, 504, 0, ranks=2) > est(large, 4, 378, 504, 0, ranks=2)
    # Per-view models have no global block: no gathered k, v, just their share of the views.
    metric = get_preset("da3metric-large")
    assert est(metric, 8, 378, 504, 0, ranks=2) < est(metric, 8, 378, 504, 0) * 0.6
    with pytest.raises(ValueError):
        est(large, 1, 378, 504, 0, ranks=2)


class _ShardedStub:
    """Stands for a ShardedNet: 2 ranks, each device with a fixed budget."""

    preset, world_size = get_preset("da3-large"), 2

    def __init__(self, budget):
        self.budget = budget

    def budget_bytes(self, fraction):
        return self.budget

    def __call__(self, *args, **kwargs):
        raise AssertionError("planning only")


def test_a_window_too_large_for_one_device_is_planned_onto_two_before_shrinking():
    from da3_ros.core.engine import DA3Engine
    from da3_ros.core.frames import Frame

    frames = [Frame(image=np.zeros((378, 504, 3), np.uint8), stamp_ns=i + 1, camera="c", frame_id="c")
              for i in range(256)]
    single = memory.estimate_peak_bytes(get_preset("da3-large"), 256, 378, 504, 0, act_bytes=2)
    budget = int(0.9 * single)  # one device cannot hold the window
    one = DA3Engine(_ShardedStub(budget), process_res=504, dtype=torch.bfloat16)
    one.model.world_size = 1
    assert one.plan(frames).shrunk
    engine = DA3Engine(_ShardedStub(budget), process_res=504, dtype=torch.bfloat16)
    plan = engine.plan(frames)
    assert not plan.shrunk and plan.ranks == 2 and plan.estimate_bytes <= budget
    assert plan.estimate_bytes == engine.estimate_bytes(256, 504, 378)
    # Twice the views do not fit even on two devices: shrunk, still spread over both.
    plan = engine.plan(frames * 2)
    assert plan.shrunk and plan.ranks == 2 and 256 <= plan.num_views < 512
    assert "per device on 2 devices" in plan.message


def test_select_views_keeps_one_shared_group_then_newest():
    shared = [True, True, True, True, False, False, False, False]
    assert memory.select_views(8, 4, shared) == [3, 5, 6, 7]
    assert memory.select_views(8, 4, shared, group=2) == [2, 3, 6, 7]
    assert memory.select_views(4, 2, [False] * 4) == [2, 3]
    assert memory.select_views(4, 10, [True] * 4) == [0, 1, 2, 3]


def test_is_oom_error():
    assert memory.is_oom_error(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    assert memory.is_oom_error(RuntimeError("CUDA error: out of memory"))
    assert not memory.is_oom_error(RuntimeError("shape mismatch"))
    assert not memory.is_oom_error(ValueError("out of memory"))


def test_run_with_oom_retry_shrinks_until_it_fits():
    calls = []

    def predict(frames):
        calls.append(list(frames))
        if len(frames) > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return "ok"

    retries = []
    out, kept = memory.run_with_oom_retry(predict, list(range(10)), [True] * 3 + [False] * 7,
                                          on_retry=lambda a, b, e: retries.append((a, b)))
    assert out == "ok" and retries == [(10, 7), (7, 5)]
    assert kept == [2, 6, 7, 8, 9]
    assert [len(c) for c in calls] == [10, 7, 5]
    with pytest.raises(ValueError):
        memory.run_with_oom_retry(lambda f: (_ for _ in ()).throw(ValueError("bug")), [1, 2, 3], [False] * 3)
    with pytest.raises(memory.WindowTooLargeError):
        memory.run_with_oom_retry(lambda f: (_ for _ in ()).throw(RuntimeError("out of memory")),
                                  [1, 2, 3, 4], [False] * 4, min_views=2)


class _OomAbove(GroundTruthPredictor):
    """Stand-in that runs out of memory for windows above ``limit`` views."""

    def __init__(self, truth, limit, **kw):
        super().__init__(truth, **kw)
        self.limit, self.sizes = limit, []

    def predict(self, frames):
        self.sizes.append(len(frames))
        if len(frames) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return super().predict(frames)


def test_pipeline_recovers_from_injected_oom_and_loses_nothing_else():
    seq = make_sequence(24)
    pred = _OomAbove(seq, limit=5, seed=0)
    p = Pipeline(PipelineConfig(num_view=8, stride=4), pred)
    results = [r for f in seq.frames for r in p.push(f)] + p.flush()
    s = p.stats
    assert s.events["oom_retries"] >= len(results) > 0
    assert max(len(r.prediction.frames) for r in results) <= 5
    assert all(r.shrunk_from == 8 for r in results)
    assert s.errors == 0
    assert s.received == 24 == s.processed + s.dropped_total and s.pending == 0
    # Shrunk windows keep the newest views; older ones left out of every window are counted.
    assert set(s.dropped) <= {"memory"}
    assert s.processed > 12


class _PlannedGT(GroundTruthPredictor):
    def plan(self, frames, min_views=2, group=1):
        return memory.plan_views(lambda n: n * 100, len(frames), 450, min_views, group)


def test_pipeline_memory_plan_shrinks_with_one_warning(caplog):
    seq = make_sequence(20)
    p = Pipeline(PipelineConfig(num_view=6, stride=2), _PlannedGT(seq))
    with caplog.at_level(logging.WARNING, logger="da3_ros.core.pipeline"):
        results = [r for f in seq.frames for r in p.push(f)] + p.flush()
    assert all(len(r.prediction.frames) == 4 for r in results)
    assert p.stats.events["memory_shrunk"] == len(results) > 1
    assert len([r for r in caplog.records if "running 4 views" in r.getMessage()]) == 1
    assert p.stats.received == p.stats.processed + p.stats.dropped_total
    assert np.all([np.isfinite(r.world_from_cam).all() for r in results])


class _Refuse(GroundTruthPredictor):
    def plan(self, frames, min_views=2, group=1):
        return memory.plan_views(lambda n: n * 100, len(frames), 50, min_views, group)


def test_pipeline_refuses_windows_that_cannot_fit_with_clear_error():
    seq = make_sequence(8)
    errors = []
    p = Pipeline(PipelineConfig(num_view=4, stride=2), _Refuse(seq), on_error=errors.append)
    results = [r for f in seq.frames for r in p.push(f)] + p.flush()
    assert results == [] and errors and all(isinstance(e, memory.WindowTooLargeError) for e in errors)
    assert "GiB is available" in p.stats.last_error
    assert p.stats.dropped == {"memory": 8} and p.stats.processed == 0
