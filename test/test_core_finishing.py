"""The finishing thread: a window's chaining, cloud and colours beside the next window's network."""

import threading

import numpy as np
import pytest
from _core_synth import collect_published, make_sequence

from da3_ros.core.config import PipelineConfig
from da3_ros.core.pipeline import AsyncPipeline, Pipeline
from da3_ros.sim.standin import GroundTruthPredictor


class _CountingPredictor:
    """Ground truth that records each call's start (an Event per call number)."""

    is_metric, name = False, "counting"

    def __init__(self, inner, calls: int):
        self.inner = inner
        self.started = [threading.Event() for _ in range(calls)]
        self.count = 0

    def predict(self, frames):
        if self.count < len(self.started):
            self.started[self.count].set()
        self.count += 1
        return self.inner.predict(frames)


def _hold_finishing(ap: AsyncPipeline) -> tuple[threading.Event, threading.Event]:
    """Make the pipeline's finishing block until released: (entered, release)."""
    entered, release = threading.Event(), threading.Event()
    finish = ap.pipeline.finish_window

    def held(started):
        entered.set()
        assert release.wait(30)
        return finish(started)

    ap.pipeline.finish_window = held
    return entered, release


def test_the_next_windows_network_runs_while_a_window_is_being_finished():
    seq = make_sequence(8)
    pred = _CountingPredictor(GroundTruthPredictor(seq, seed=0), calls=2)
    ap = AsyncPipeline(PipelineConfig(num_view=4, stride=4, queue_size=16), pred, on_result=lambda r: None)
    entered, release = _hold_finishing(ap)
    ap.start()
    for f in seq.frames:
        ap.submit(f)
    assert entered.wait(30)  # window 0 is being finished (held) ...
    assert pred.started[1].wait(30)  # ... and window 1's network ran meanwhile
    release.set()
    assert ap.close(timeout_s=30)
    assert ap.stats.processed == 8 and ap.stats.windows == 2


def test_without_the_finishing_thread_the_worker_finishes_before_the_next_network():
    seq = make_sequence(8)
    pred = _CountingPredictor(GroundTruthPredictor(seq, seed=0), calls=2)
    ap = AsyncPipeline(PipelineConfig(num_view=4, stride=4, queue_size=16, finish_thread=False), pred,
                       on_result=lambda r: None)
    entered, release = _hold_finishing(ap)
    ap.start()
    for f in seq.frames:
        ap.submit(f)
    assert entered.wait(30)
    assert not pred.started[1].wait(0.5)  # the worker itself is held: no second network
    release.set()
    assert ap.close(timeout_s=30)
    assert ap.stats.processed == 8


def test_frames_evicted_while_their_window_finishes_are_not_dropped():
    """The windower lets a window's frames go as new ones come; while that window is still being
    finished they stay pending, and end processed, not ``not_in_window``."""
    seq = make_sequence(12)
    pred = _CountingPredictor(GroundTruthPredictor(seq, seed=0), calls=2)
    ap = AsyncPipeline(PipelineConfig(num_view=4, stride=4, queue_size=16), pred, on_result=lambda r: None)
    entered, release = _hold_finishing(ap)
    ap.start()
    for f in seq.frames[:8]:  # window 0 = frames 0-3 (held); 4-7 evict them, window 1 waits
        ap.submit(f)
    assert entered.wait(30) and pred.started[1].wait(30)
    for _ in range(300):  # until the worker has let frames 0-3 go (it does so after window 1 started)
        if len(ap.pipeline._evicted) == 4:
            break
        threading.Event().wait(0.01)
    assert ap.pipeline._evicted == {0, 1, 2, 3}
    s = ap.stats
    assert s.received == 8 and s.pending == 8 and s.dropped == {} and s.processed == 0
    release.set()
    for f in seq.frames[8:]:
        ap.submit(f)
    assert ap.close(timeout_s=30)
    s = ap.stats
    assert s.received == 12 and s.processed == 12 and s.dropped == {} and s.pending == 0


def test_frames_of_a_failed_finish_are_resolved_once_with_its_reason():
    """Chaining raises on every window: the same windows run and fail as without the thread."""
    seq = make_sequence(8)
    runs = []
    for finish_thread in (True, False):
        ap = AsyncPipeline(PipelineConfig(num_view=4, stride=4, queue_size=16, finish_thread=finish_thread),
                           GroundTruthPredictor(seq, seed=0), on_result=lambda r: None)
        calls = []

        def broken_chain(pred, in_place=False, calls=calls):
            calls.append(len(pred.frames))
            raise RuntimeError("chain broke")

        ap.pipeline.chainer.chain = broken_chain
        ap.start()
        for f in seq.frames:
            ap.submit(f)
        assert ap.close(timeout_s=30)
        s = ap.stats
        assert s.errors == len(calls) >= 2 and s.processed == 0 and s.pending == 0
        assert s.received == 8 and s.dropped == {"window_failed": 8}
        runs.append(calls)
    assert runs[0] == runs[1]  # the end-of-stream window over the failed frames included


@pytest.mark.parametrize("finish_thread", [True, False])
def test_results_match_the_synchronous_pipeline(finish_thread):
    """Same frames, same poses, same order: the finishing thread changes where, not what."""
    seq = make_sequence(40)
    sync = Pipeline(PipelineConfig(num_view=4, stride=2),
                    GroundTruthPredictor(seq, scale_range=(0.5, 2), seed=3))
    want = [r for f in seq.frames for r in sync.push(f)] + sync.flush()
    got, threads = [], set()

    def on_result(r):
        got.append(r)
        threads.add(threading.current_thread().name)

    ap = AsyncPipeline(PipelineConfig(num_view=4, stride=2, queue_size=64, finish_thread=finish_thread),
                       GroundTruthPredictor(seq, scale_range=(0.5, 2), seed=3), on_result=on_result)
    ap.start("worker")
    for f in seq.frames:
        ap.submit(f)
    assert ap.close(timeout_s=60)
    assert threads == {"worker_finish" if finish_thread else "worker"}
    assert [r.window_index for r in got] == [r.window_index for r in want]
    a, b = collect_published(want), collect_published(got)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], atol=1e-9)
    assert ap.stats.processed == sync.stats.processed == 40


def test_a_window_is_still_finished_when_its_stream_cannot_be_had(caplog):
    """The finishing thread's CUDA stream failing must not leave the window's frames in flight."""
    seq = make_sequence(8)
    ap = AsyncPipeline(PipelineConfig(num_view=4, stride=4, queue_size=16), GroundTruthPredictor(seq, seed=0),
                       on_result=lambda r: None)

    def no_stream(pred):
        raise RuntimeError("CUDA error: out of resources")

    ap._finisher._side_stream = no_stream
    ap.start()
    for f in seq.frames:
        ap.submit(f)
    assert ap.close(timeout_s=30)
    assert ap.stats.processed == 8 and ap.stats.windows == 2 and ap.stats.errors == 0
    assert caplog.text.count("no CUDA stream of its own") == 1  # once, not per window


def test_stage_times_name_each_threads_half():
    """``finish`` is the finishing thread's half (align + cloud + colour), ``total`` both halves."""
    seq = make_sequence(12)
    ap = AsyncPipeline(PipelineConfig(num_view=4, stride=4, queue_size=16), GroundTruthPredictor(seq, seed=0),
                       on_result=lambda r: None)
    ap.start()
    for f in seq.frames:
        ap.submit(f)
    assert ap.close(timeout_s=30)
    ms = ap.stats.stage_ms
    assert ms["finish"] > 0 and ms["predict"] > 0
    assert ms["finish"] == pytest.approx(ms["align"] + ms["cloud"] + ms["colour"], rel=1e-6)
    assert ms["total"] == pytest.approx(ms["predict"] + ms["finish"], rel=1e-6)
