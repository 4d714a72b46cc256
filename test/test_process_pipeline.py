"""The pipeline in an inference process of its own: shared-memory slots, results, accounting, failures.

The inference process runs the same pipeline as the node's worker thread; these tests check
that what comes out of it is what the in-process pipeline gives for the same frames and
weights, that every frame is still accounted for (including when the process dies), and that no
shared-memory file outlives the pipeline.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import time

import numpy as np
import pytest
from _core_synth import make_sequence

from da3_ros.core import wire
from da3_ros.core.config import PipelineConfig
from da3_ros.core.pipeline import Pipeline
from da3_ros.inference import build
from da3_ros.inference.process_pipeline import OUT_SLOTS, ProcessPipeline, WorkerFailed, use_process
from da3_ros.inference.settings import InferenceSettings
from da3_ros.inference.shm_ring import SHM_DIR, SlotRing, ring_name, sweep_stale
from da3_ros.model import save_pretrained

pytestmark = pytest.mark.timeout(240)


def _files(prefix: str) -> list[str]:
    return [f for f in os.listdir(SHM_DIR) if f.startswith(prefix)]


def _accounted(s) -> bool:
    return s.received == s.processed + s.dropped_total + s.pending


def _wait(predicate, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# --------------------------------------------------------------------------- the slot ring
def test_slot_ring_round_trip_growth_back_pressure_and_cleanup():
    name = ring_name("test_ring")
    producer = SlotRing(name, 2)
    consumer = SlotRing.attach(name, 2)
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.full((5, 2, 3), 7, np.uint8)
    s0 = producer.acquire()
    layout = producer.write(s0, {"a": a, "b": b})
    got = consumer.arrays(layout)
    np.testing.assert_array_equal(got["a"], a)
    np.testing.assert_array_equal(got["b"], b)
    assert got["a"].dtype == np.float32 and got["b"].dtype == np.uint8
    s1 = producer.acquire()
    assert s1 != s0 and producer.acquire() is None  # both slots held: the consumer is behind
    assert consumer.busy() == 2
    consumer.release(s0)
    assert producer.acquire() == s0  # slots go in turn
    big = np.random.default_rng(0).random((300, 400)).astype(np.float32)  # larger than the slot: grows
    layout2 = producer.write(s0, {"big": big})
    assert layout2.path != layout.path
    np.testing.assert_array_equal(consumer.arrays(layout2)["big"], big)
    # a framed array: the consumer reads the array and the whole message, both in place
    framed = wire.Framed(b"\x00\x01\x00\x00head", np.arange(6, dtype=np.float32), b"\x01")
    consumer.release(s1)
    assert producer.acquire() == s1
    layout3 = producer.write(s1, {"plain": a, "msg": framed})
    np.testing.assert_array_equal(consumer.arrays(layout3)["msg"], framed.array)
    messages = consumer.messages(layout3)
    assert list(messages) == ["msg"] and messages["msg"].tobytes() == framed.tobytes()
    consumer.close()
    assert _files(name + ".")
    producer.close()
    assert not _files(name + ".")


def test_sweep_removes_the_files_of_a_dead_process_only():
    import multiprocessing

    dead = multiprocessing.get_context("spawn").Process(target=int)
    dead.start()
    dead.join()
    stale = SlotRing(ring_name("stale", pid=dead.pid), 1)
    stale.write(stale.acquire(), {"x": np.ones(4)})
    mine = SlotRing(ring_name("mine"), 1)
    assert sweep_stale() >= 2  # the dead process's flag and slot files
    assert not _files(f"da3_ros.{dead.pid}.stale.") and _files(mine.name + ".")
    mine.close()


# --------------------------------------------------------------------------- the process pipeline
@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    net, _, _ = build.load_network("da3-tiny", seed=0)
    return str(save_pretrained(net, tmp_path_factory.mktemp("weights") / "da3-tiny"))


def _settings(model: str) -> InferenceSettings:
    return InferenceSettings(model=model, device="cpu", process_res=56, warmup=False, cpu_threads=1)


def test_inference_process_gives_the_in_process_results_and_accounts_for_every_frame(tiny_weights):
    seq = make_sequence(12, width=64, height=48, kind="room", seed=3)
    cfg = {"num_view": 4, "stride": 2, "queue_size": 64}
    engine, _ = build.build_engine(_settings(tiny_weights), logging.getLogger("test"))
    local = Pipeline(PipelineConfig(**cfg), engine)
    expected = [r for f in seq.frames for r in local.push(f)] + local.flush()

    got = []  # copies: a result's arrays live in a shared slot, reused once the result is gone
    proc = ProcessPipeline(PipelineConfig(**cfg), _settings(tiny_weights),
                           on_result=lambda r: got.append(copy.deepcopy(r)), fixed_frame="odom")
    info = proc.launch()
    assert info.device == "cpu" and proc.pid != os.getpid()
    for f in seq.frames:
        assert proc.submit(f)
    assert proc.close(timeout_s=60, drain=True)  # the queued frames run, then the end-of-stream window
    stats = proc.stats
    assert stats.received == 12 and stats.pending == 0 and _accounted(stats)
    assert stats.processed == local.stats.processed and stats.dropped == local.stats.dropped
    assert [r.window_index for r in got] == [r.window_index for r in expected]
    for mine, ref in zip(got, expected):
        np.testing.assert_array_equal(mine.is_new, ref.is_new)
        np.testing.assert_allclose(mine.world_from_cam, ref.world_from_cam, rtol=1e-5, atol=1e-6)
        for i, new in enumerate(ref.is_new):
            frame, ref_frame = mine.prediction.frames[i], ref.prediction.frames[i]
            assert (frame.stamp_ns, frame.camera, frame.height, frame.width) == (
                ref_frame.stamp_ns, ref_frame.camera, ref_frame.height, ref_frame.width)
            if new:  # what the node publishes travels; the rest does not
                np.testing.assert_allclose(mine.prediction.depth[i], ref.prediction.depth[i], rtol=1e-5)
                np.testing.assert_allclose(mine.prediction.confidence[i], ref.prediction.confidence[i],
                                           rtol=1e-5)
            else:
                assert mine.prediction.depth[i] is None
        _assert_messages_are_what_the_node_would_build(mine, "odom", cloud_of=ref)
    assert not _files(f"da3_ros.{os.getpid()}.in") and not _files(f"da3_ros.{os.getpid()}.out")


def _assert_messages_are_what_the_node_would_build(result, fixed_frame: str, cloud_of) -> None:
    """The serialised messages a result carries equal, byte for byte, those the node builds itself.

    The cloud travels once, as its message (the result carries no point arrays): it must be the
    one the node would build of ``cloud_of``'s points (the same window, computed in this process).
    """
    from da3_ros.core.geometry import points_to_fixed
    from da3_ros.ros.conversions import numpy_to_image_cdr, points_to_cloud_cdr

    frames = result.prediction.frames
    views = [i for i, new in enumerate(result.is_new) if new]
    maps = {f"{k}{i}" for i in views for k in ("depth", "conf")} | {f"col{i}" for i in result.colored}
    assert views and set(result.messages) == maps | {"cloud"}
    for i in views:
        for key, arr, enc in ((f"depth{i}", result.prediction.depth[i], "32FC1"),
                              (f"conf{i}", result.prediction.confidence[i], "32FC1"),
                              (f"col{i}", result.colored.get(i), "rgb8")):
            if arr is not None:
                want = numpy_to_image_cdr(arr, enc, frames[i].stamp_ns, frames[i].frame_id)
                assert result.messages[key].tobytes() == want, key
    assert result.points_world is None and result.colors is None and result.points_conf is None
    cloud = points_to_cloud_cdr(points_to_fixed(cloud_of.points_world), max(f.stamp_ns for f in frames),
                                fixed_frame, rgb=cloud_of.colors, confidence=cloud_of.points_conf)
    assert result.messages["cloud"].tobytes() == cloud


def test_config_updates_reach_the_inference_process(tiny_weights):
    seq = make_sequence(8, width=64, height=48, kind="room", seed=4)
    got = []
    proc = ProcessPipeline(PipelineConfig(num_view=2, stride=2, queue_size=64), _settings(tiny_weights),
                           on_result=lambda r: got.append([d is not None for d in r.prediction.depth]))
    proc.launch()
    try:
        for f in seq.frames[:4]:
            proc.submit(f)
        assert _wait(lambda: len(got) >= 2, 60)
        proc.update_config({"publish_all_views": True, "stride": 1})
        for f in seq.frames[4:]:
            proc.submit(f)
        assert _wait(lambda: proc.stats.processed == 8, 60)
    finally:
        proc.close(drain=True)
    assert got[0] == [True, True]  # stride 2: both views new
    assert all(views == [True, True] for views in got[2:])  # all views: with stride 1 too


def test_a_killed_inference_process_loses_no_frame_silently(tiny_weights, caplog):
    seq = make_sequence(10, width=64, height=48, kind="room", seed=5)
    proc = ProcessPipeline(PipelineConfig(num_view=4, stride=4, queue_size=64), _settings(tiny_weights))
    proc.launch()
    for f in seq.frames[:6]:
        proc.submit(f)
    os.kill(proc.pid, signal.SIGKILL)
    assert _wait(lambda: proc.stats.dropped.get("worker_lost", 0) > 0, 10)  # what it held is lost
    for f in seq.frames[6:]:
        assert not proc.submit(f)  # dropped at once, counted
    stats = proc.stats
    assert stats.received == 10 and stats.pending == 0 and _accounted(stats)
    assert stats.dropped["worker_lost"] >= 6
    assert "ended unexpectedly" in caplog.text
    proc.close(timeout_s=2.0)
    assert not _files(f"da3_ros.{os.getpid()}.in")


def test_a_model_that_cannot_load_is_a_clear_error_and_leaves_nothing(tmp_path):
    proc = ProcessPipeline(PipelineConfig(), _settings(str(tmp_path / "no_such_weights")))
    with pytest.raises(WorkerFailed, match="no_such_weights"):
        proc.launch()
    assert not proc._process.is_alive()
    assert not _files(f"da3_ros.{os.getpid()}.in") and not _files(f"da3_ros.{os.getpid()}.out")


def test_where_the_pipeline_runs():
    assert use_process("auto", "da3-large", "cuda:0") and use_process("on", "da3-tiny", "cpu")
    assert not use_process("auto", "da3-large", "cpu") and not use_process("off", "da3-large", "cuda")
    assert not use_process("auto", "truth", "cuda")
    assert not use_process("auto", "da3-tiny", "auto")  # no CUDA on this machine


def test_no_room_in_shared_memory_drops_frames_with_a_reason_and_results_take_the_pipe(
        tiny_weights, monkeypatch, caplog):
    import threading

    from da3_ros.inference.process_pipeline import ProcessPipeline as PP
    from da3_ros.inference.worker_process import ResultSender, join_result, split_result, unframe

    proc = PP(PipelineConfig(num_view=2, stride=2, queue_size=8), _settings(tiny_weights))
    proc.launch()
    try:
        def full(fd, offset, length):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "posix_fallocate", full)  # this process's slot files only
        seq = make_sequence(3, width=64, height=48, kind="room", seed=6)
        assert not any(proc.submit(f) for f in seq.frames)
        stats = proc.stats
        assert stats.dropped == {"shm_full": 3} and _accounted(stats)
        assert "shm-size" in caplog.text
    finally:
        monkeypatch.undo()
        proc.close(drain=False)

    # the inference process's side: a result that finds no room goes through the pipe, whole
    engine, _ = build.build_engine(_settings(tiny_weights), logging.getLogger("test"))
    pipeline = Pipeline(PipelineConfig(num_view=2, stride=2), engine)
    result = [r for f in make_sequence(2, width=64, height=48, seed=7).frames for r in pipeline.push(f)][0]
    sent = []
    ring = SlotRing(ring_name("full"), 1)
    monkeypatch.setattr(os, "posix_fallocate", full)
    try:
        ResultSender(ring, sent.append, PipelineConfig(), threading.Event())(copy.deepcopy(result))
        ResultSender(ring, sent.append, PipelineConfig(), threading.Event(), "odom")(copy.deepcopy(result))
    finally:
        monkeypatch.undo()
    for (kind, light, arrays), fixed_frame in zip(sent, (None, "odom")):
        assert kind == "result" and ring.busy() == 0
        _, expected = split_result(result, False, fixed_frame)
        (got, got_msgs), (want, want_msgs) = unframe(arrays), unframe(expected)
        assert got.keys() == want.keys() and got_msgs.keys() == want_msgs.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
        assert all(got_msgs[k].tobytes() == want_msgs[k].tobytes() for k in want_msgs)
        whole = join_result(light, got, got_msgs)
    _assert_messages_are_what_the_node_would_build(whole, "odom", cloud_of=result)
    ring.close()


def test_a_consumer_that_holds_results_back_pressures_to_counted_drops(tiny_weights):
    """Results hold their shared slots: while the consumer keeps them, the worker waits and
    frames drop at its queue (queue_full), counted; once they are let go, windows flow again."""
    import gc

    held = []
    proc = ProcessPipeline(PipelineConfig(num_view=1, stride=1, queue_size=2), _settings(tiny_weights),
                           on_result=held.append)
    proc.launch()
    seq = make_sequence(40, width=64, height=48, kind="room", seed=8)
    try:
        for f in seq.frames[:30]:
            proc.submit(f)
            time.sleep(0.01)
        assert _wait(lambda: proc.stats.dropped.get("queue_full", 0) > 0, 30)
        assert len(held) <= OUT_SLOTS  # the worker waits for a free slot
        stuck = proc.stats.processed
        proc.on_result = lambda r: None  # from now on results are let go at once
        held.clear()
        gc.collect()
        for f in seq.frames[30:]:
            proc.submit(f)
        assert _wait(lambda: proc.stats.processed > stuck + 2, 30)
    finally:
        proc.close(timeout_s=30, drain=True)
    stats = proc.stats
    assert stats.received == 40 and stats.pending == 0 and _accounted(stats)
    assert set(stats.dropped) == {"queue_full"}


def test_a_reset_reaches_the_inference_process_in_order_with_the_frames(tiny_weights):
    seq = make_sequence(6, width=64, height=48, kind="room", seed=9)
    proc = ProcessPipeline(PipelineConfig(num_view=4, stride=4, queue_size=64), _settings(tiny_weights))
    proc.launch()
    try:
        for f in seq.frames[:2]:  # not a window yet: they wait in the worker's history
            proc.submit(f)
        proc.reset("time_jump_reset")  # a looping bag
        for f in seq.frames[2:]:
            proc.submit(f)
    finally:
        proc.close(timeout_s=60, drain=True)
    stats = proc.stats
    assert stats.dropped == {"time_jump_reset": 2} and stats.processed == 4 and _accounted(stats)
    assert stats.events.get("restarts") == 1


def test_the_inference_process_ends_by_itself_when_the_node_process_is_killed(tiny_weights, tmp_path):
    """A node killed with SIGKILL leaves no inference process behind (it sees its pipe close)."""
    import subprocess
    import sys

    script = tmp_path / "owner.py"
    script.write_text(f"""
import sys, time
from da3_ros.core import wire
from da3_ros.core.config import PipelineConfig
from da3_ros.inference.process_pipeline import ProcessPipeline
from da3_ros.inference.settings import InferenceSettings
if __name__ == "__main__":
    settings = InferenceSettings(model={tiny_weights!r}, device="cpu", process_res=56, warmup=False)
    p = ProcessPipeline(PipelineConfig(), settings)
    p.launch()
    print(p.pid, flush=True)
    time.sleep(60)
""")
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(owner.stdout.readline())
        assert _alive(child)
    finally:
        owner.kill()
        owner.wait()
    assert _wait(lambda: not _alive(child), 15)
    assert _files(f"da3_ros.{owner.pid}.")  # its shared-memory files outlive it ...
    sweep_stale()
    assert not _files(f"da3_ros.{owner.pid}.")  # ... until the next start sweeps them


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line for line in f)
    except OSError:
        return False
