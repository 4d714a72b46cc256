"""PublishPool: each topic's messages in order, different topics at once, owners held until sent."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

from da3_ros.ros.publish_pool import PublishPool


class RecordingPublisher:
    """A stand-in publisher (``publish(bytes)``: publish_serialized's fallback) that records."""

    def __init__(self, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.sent: list[bytes] = []
        self.threads: set[str] = set()
        self.gate, self.fail = gate, fail
        self.entered = threading.Event()

    def publish(self, data: bytes) -> None:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(5.0), "gate never opened"
        if self.fail:
            raise RuntimeError("rcl said no")
        self.threads.add(threading.current_thread().name)
        self.sent.append(bytes(data))


class Owner:
    """What a message's memory belongs to (a window result)."""


def test_inline_pool_publishes_before_send_returns_and_raises_errors():
    pool = PublishPool(0, on_error=lambda exc: (_ for _ in ()).throw(exc))
    pub = RecordingPublisher()
    done = []
    assert pool.send(pub, b"abc", after=lambda: done.append(1))
    assert pub.sent == [b"abc"] and done == [1]
    with pytest.raises(RuntimeError, match="rcl said no"):
        pool.send(RecordingPublisher(fail=True), b"x")


def test_each_publisher_keeps_its_order_on_one_thread():
    pool = PublishPool(3, on_error=pytest.fail)
    pubs = [RecordingPublisher() for _ in range(5)]
    for n in range(200):
        for k, pub in enumerate(pubs):
            pool.send(pub, f"{k}:{n}".encode())
    assert pool.flush(10.0)
    for k, pub in enumerate(pubs):
        assert pub.sent == [f"{k}:{n}".encode() for n in range(200)]
        assert len(pub.threads) == 1
    used = set().union(*(p.threads for p in pubs))
    assert len(used) == 3  # five publishers spread round robin over the three threads
    pool.close()


def test_a_slow_topic_does_not_hold_another():
    gate = threading.Event()
    slow, fast = RecordingPublisher(gate), RecordingPublisher()
    pool = PublishPool(2, on_error=pytest.fail)
    pool.send(slow, b"big")
    assert slow.entered.wait(5.0)
    pool.send(fast, b"small")
    deadline = time.monotonic() + 5.0
    while not fast.sent and time.monotonic() < deadline:
        time.sleep(0.001)
    assert fast.sent == [b"small"] and slow.sent == []  # sent while the other is still in DDS
    gate.set()
    assert pool.flush(5.0) and slow.sent == [b"big"]
    pool.close()


def test_owner_is_held_until_its_message_is_out():
    gate = threading.Event()
    pub = RecordingPublisher(gate)
    pool = PublishPool(1, on_error=pytest.fail)
    owner = Owner()
    ref = weakref.ref(owner)
    pool.send(pub, b"m", keep=owner)
    del owner
    gc.collect()
    assert ref() is not None  # the pool holds it: its shared-memory slot must not be reused yet
    gate.set()
    assert pool.flush(5.0)
    deadline = time.monotonic() + 5.0
    while ref() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.001)
    assert ref() is None  # released once sent
    pool.close()


def test_send_blocks_at_max_pending_and_after_runs_once_sent():
    gate = threading.Event()
    pub = RecordingPublisher(gate)
    pool = PublishPool(1, on_error=pytest.fail, max_pending=2)
    after = []
    pool.send(pub, b"1", after=lambda: after.append(1))
    pool.send(pub, b"2")
    third = threading.Thread(target=pool.send, args=(pub, b"3"))
    third.start()
    third.join(0.2)
    assert third.is_alive() and pool.pending() == 2  # back-pressure: the caller waits
    assert after == []
    gate.set()
    third.join(5.0)
    assert not third.is_alive() and pool.flush(5.0)
    assert pub.sent == [b"1", b"2", b"3"] and after == [1]
    pool.close()


def test_errors_go_to_on_error_and_the_pool_goes_on():
    errors = []
    pool = PublishPool(1, on_error=errors.append)
    bad, good = RecordingPublisher(fail=True), RecordingPublisher()
    pool.send(bad, b"x", after=pytest.fail)
    pool.send(good, b"y")
    assert pool.flush(5.0)
    assert [str(e) for e in errors] == ["rcl said no"] and good.sent == [b"y"]
    pool.close()


def test_close_without_drain_drops_what_waits_and_refuses_more():
    gate = threading.Event()
    pub = RecordingPublisher(gate)
    pool = PublishPool(1, on_error=pytest.fail)
    for n in range(5):
        pool.send(pub, bytes([n]))
    assert pub.entered.wait(5.0)
    closer = threading.Thread(target=pool.close, kwargs={"drain": False})
    closer.start()
    time.sleep(0.05)
    gate.set()
    closer.join(5.0)
    assert not closer.is_alive()
    assert pub.sent == [bytes([0])]  # the one in DDS finished; the four waiting were dropped
    assert pool.pending() == 0 and not pool.send(pub, b"late")
