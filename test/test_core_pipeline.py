import threading
from dataclasses import replace

import numpy as np
import pytest
from _core_synth import ate_after_sim3, collect_published, make_sequence

from da3_ros.core.config import PipelineConfig
from da3_ros.core.frames import Frame
from da3_ros.core.pipeline import AsyncPipeline, Pipeline
from da3_ros.sim.standin import GroundTruthPredictor


def _run(seq_frames, predictor, **cfg):
    p = Pipeline(PipelineConfig(**cfg), predictor)
    results = [r for f in seq_frames for r in p.push(f)] + p.flush()
    return p, results


def _accounted(stats):
    return stats.received == stats.processed + stats.dropped_total + stats.pending >= stats.queue_len


@pytest.fixture(scope="module")
def seq300():
    return make_sequence(300, width=64, height=48, kind="room", seed=0)


def test_done_criterion_300_frames_ate_below_one_percent_and_all_frames_accounted(seq300):
    gt = GroundTruthPredictor(seq300, scale_range=(0.5, 2.0), depth_noise=0.01, pose_noise=0.002, seed=1)
    p, results = _run(seq300.frames, gt, num_view=8, stride=4)
    s = p.stats
    assert s.received == 300 and s.processed + s.dropped_total == 300 and s.pending == 0
    assert s.processed == 300 and s.errors == 0
    est = collect_published(results)
    assert len(est) == 300
    ate, path = ate_after_sim3(est, seq300)
    assert path > 5.0
    assert ate < 0.01 * path
    # Continuity: no jump between consecutive published frames beyond noise.
    keys = sorted(est, key=lambda k: k[1])
    E = np.array([est[k][:3, 3] for k in keys])
    G = np.array([seq300.truth[k][1][:3, 3] for k in keys])
    steps_e = np.linalg.norm(np.diff(E, axis=0), axis=1)
    steps_g = np.linalg.norm(np.diff(G, axis=0), axis=1)
    scale = np.median(steps_g / np.maximum(steps_e, 1e-12))
    assert np.max(np.abs(scale * steps_e - steps_g)) < 0.05
    assert len(set(np.round(gt.scales, 4))) > 50  # the chain really absorbed per-window scale jumps
    for r in results:
        assert r.points_world.shape[1] == 3 and len(r.points_world) == len(r.colors) == len(r.points_conf)
        assert np.isfinite(r.points_world).all()


def test_without_chaining_the_same_sequence_fails_the_criterion(seq300):
    gt = GroundTruthPredictor(seq300, scale_range=(0.5, 2.0), depth_noise=0.01, pose_noise=0.002, seed=1)
    _, results = _run(seq300.frames[:100], gt, num_view=8, stride=4, align="none")
    ate, path = ate_after_sim3(collect_published(results), seq300)
    assert ate > 0.05 * path


def test_every_frame_accounted_with_gaps_disorder_duplicates_and_bad_frames():
    seq = make_sequence(40)
    frames = list(seq.frames)
    frames.insert(10, frames[5])                                     # duplicate stamp (older) -> out_of_order
    frames.insert(20, replace(frames[19]))                           # exact duplicate
    frames.insert(30, Frame(image=np.zeros((4, 4), np.uint8), stamp_ns=frames[29].stamp_ns + 1))  # invalid
    frames.insert(31, replace(frames[0], camera="other"))            # unknown camera
    gt = GroundTruthPredictor(seq, seed=0)
    p, results = _run(frames, gt, num_view=3, stride=5)              # stride > num_view: gaps
    s = p.stats
    assert s.received == 44 and _accounted(s) and s.pending == 0
    assert s.dropped["out_of_order"] == 1 and s.dropped["duplicate"] == 1
    assert s.dropped["invalid"] == 1 and s.dropped["unknown_camera"] == 1
    # Windows at items 2, 7, ..., 37 cover 3 of every 5 frames; the final window (37, 38, 39)
    # covers the two tail frames.
    assert s.dropped["not_in_window"] == 40 - s.processed
    assert s.processed == 3 * 8 + 2 and s.windows == 9
    assert all(len(r.prediction.frames) == 3 for r in results)


def test_predictor_failure_is_counted_and_the_stream_goes_on():
    seq = make_sequence(20)
    gt = GroundTruthPredictor(seq, seed=0)
    calls = {"n": 0}

    class Flaky:
        is_metric, name = False, "flaky"

        def predict(self, frames):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("driver hiccup")
            return gt.predict(frames)

    errors = []
    p = Pipeline(PipelineConfig(num_view=4, stride=4), Flaky(), on_error=errors.append)
    results = [r for f in seq.frames for r in p.push(f)] + p.flush()
    s = p.stats
    assert len(errors) == 1 and s.errors == 1 and "driver hiccup" in s.last_error
    assert len(results) == 4 and s.dropped == {"window_failed": 4} and s.processed == 16
    assert _accounted(s)


def test_multicam_pipeline_global_attention_over_sets():
    cams = ("left", "front", "right")
    seq = make_sequence(24, cameras=cams, jitter_ns=3_000_000)
    gt = GroundTruthPredictor(seq, depth_noise=0.005, pose_noise=0.001, seed=4)
    p, results = _run(seq.frames, gt, mode="multicam", cameras=list(cams), num_view=4, stride=2, slop_s=0.01)
    s = p.stats
    assert s.received == 72 == s.processed and s.dropped_total == 0
    assert all(len(r.prediction.frames) == 12 for r in results)
    assert [f.camera for f in results[0].prediction.frames[:3]] == list(cams)
    ate, path = ate_after_sim3(collect_published(results), seq)
    assert ate < 0.01 * path


class _Gate:
    """Predictor that blocks its first call until released (deterministic queue tests)."""

    is_metric, name = False, "gate"

    def __init__(self, inner):
        self.inner, self.entered, self.release = inner, threading.Event(), threading.Event()

    def predict(self, frames):
        self.entered.set()
        assert self.release.wait(30)
        return self.inner.predict(frames)


@pytest.mark.parametrize("policy,processed,dropped", [("drop_oldest", 5, 7), ("keep_latest", 3, 9)])
def test_async_queue_policies_count_every_drop(policy, processed, dropped):
    seq = make_sequence(12)
    gate = _Gate(GroundTruthPredictor(seq, seed=0))
    results = []
    ap = AsyncPipeline(PipelineConfig(num_view=2, stride=1, queue_size=3, queue_policy=policy), gate,
                       on_result=results.append)
    ap.start()
    ap.submit(seq.frames[0])
    ap.submit(seq.frames[1])
    assert gate.entered.wait(30)  # worker is now inside predict for window (0, 1)
    for f in seq.frames[2:]:
        assert ap.submit(f)
    assert ap.stats.queue_len <= 3 and _accounted(ap.stats)
    gate.release.set()
    assert ap.close(timeout_s=30)
    s = ap.stats
    assert s.received == 12 and s.processed == processed and s.dropped == {"queue_full": dropped}
    assert s.queue_len == 0 and s.pending == 0
    assert not ap.submit(seq.frames[0]) and s.dropped["closed"] == 1
    assert len(results) == s.windows > 0


def test_auto_queue_holds_two_windows_of_new_frames():
    assert PipelineConfig(num_view=8, stride=8).queue_capacity == 16
    assert PipelineConfig(num_view=4, stride=2).queue_capacity == 8  # never below 8
    assert PipelineConfig(mode="multicam", cameras=["a", "b", "c"], stride=3).queue_capacity == 18
    assert PipelineConfig(stride=8, queue_size=5).queue_capacity == 5  # an explicit size is kept
    seq = make_sequence(40)
    gate = _Gate(GroundTruthPredictor(seq, seed=0))
    ap = AsyncPipeline(PipelineConfig(num_view=8, stride=8), gate, on_result=lambda r: None)
    ap.start()
    for f in seq.frames[:8]:
        ap.submit(f)
    assert gate.entered.wait(30)  # the first window runs; the next frames wait
    for f in seq.frames[8:24]:
        ap.submit(f)
    assert ap.stats.queue_len == 16 and not ap.stats.dropped  # two windows wait, none dropped
    ap.submit(seq.frames[24])
    assert ap.stats.dropped == {"queue_full": 1}
    gate.release.set()
    assert ap.close(timeout_s=30)


def test_async_close_without_drain_and_consumer_errors():
    seq = make_sequence(8)
    gate = _Gate(GroundTruthPredictor(seq, seed=0))
    errors = []

    def bad_consumer(result):
        raise ValueError("consumer bug")

    ap = AsyncPipeline(PipelineConfig(num_view=2, stride=1, queue_size=8), gate, on_result=bad_consumer,
                       on_error=errors.append)
    ap.start()
    for f in seq.frames[:2]:
        ap.submit(f)
    assert gate.entered.wait(30)
    for f in seq.frames[2:]:
        ap.submit(f)
    threading.Timer(0.05, gate.release.set).start()
    assert ap.close(timeout_s=30, drain=False)
    s = ap.stats
    assert s.dropped == {"closed": 6} and s.processed == 2 and s.received == 8
    assert any(isinstance(e, ValueError) for e in errors)


def test_async_reset_restarts_windows_on_the_same_worker_and_accounts_for_every_frame():
    """A time-jump reset drops the old epoch's waiting frames, discards the in-flight window's
    result and chains the new epoch from scratch; counts carry on."""
    seq = make_sequence(12)
    gate = _Gate(GroundTruthPredictor(seq, seed=0))
    results = []
    ap = AsyncPipeline(PipelineConfig(num_view=2, stride=1, queue_size=8), gate, on_result=results.append)
    ap.start()
    for f in seq.frames[:2]:
        ap.submit(f)
    assert gate.entered.wait(30)  # window (0, 1) is running
    for f in seq.frames[2:4]:
        ap.submit(f)
    ap.reset("time_jump_reset")  # frames 2, 3 were waiting: dropped; window (0, 1) is stale
    gate.release.set()
    for f in seq.frames[4:12]:  # the new epoch (stamps later here; a real jump goes back)
        ap.submit(f)
    assert ap.close(timeout_s=30)
    s = ap.stats
    assert s.received == 12 and s.pending == 0
    assert s.dropped == {"time_jump_reset": 2} and s.processed == 10
    assert s.events["restarts"] == 1
    published = [f.stamp_ns for r in results for f, new in zip(r.prediction.frames, r.is_new) if new]
    assert published == [f.stamp_ns for f in seq.frames[4:12]]  # nothing of the stale window
    assert results[0].alignment.method != "shared"  # the new epoch's first window starts a chain


def test_dilated_windows_align_onto_published_frames():
    seq = make_sequence(30)
    gt = GroundTruthPredictor(seq, scale_range=(0.3, 3.0), seed=9)
    p, results = _run(seq.frames, gt, num_view=4, stride=2, dilations=(1, 3))
    dilated = [r for r in results if len(r.prediction.frames) == 4
               and np.diff([f.stamp_ns for f in r.prediction.frames]).min() > 2.5e8]
    assert len(dilated) >= 5 and all(not r.is_new.any() for r in dilated)
    assert all(r.alignment.method == "shared" and r.residual < 1e-6 for r in dilated)
    first = np.linalg.inv(seq.truth[("cam", seq.frames[0].stamp_ns)][1])
    for r in dilated:  # noise-free: re-predicted frames land exactly on the published poses
        for f, T in zip(r.prediction.frames, r.world_from_cam):
            want = first @ seq.truth[(f.camera, f.stamp_ns)][1]
            want[:3, 3] *= gt.scales[0]
            np.testing.assert_allclose(T, want, atol=1e-6)
    assert p.stats.processed == 30 and p.stats.dropped_total == 0
