"""Serialised messages sent on a few threads at once, each topic's in order.

A window of 8 views at 640x480 is about 25 serialised messages and 27 MB (depth, confidence and
colour images, the cloud). :func:`~da3_ros.ros.serialized_publish.publish_serialized` sends each
with the GIL released, but one after the other: on the GPU, the node's publish thread spent
24.5 ms a window in it with da3-small at 300 frames/s (bench/RESULTS.md, "fourth session"), the
limit of the whole node there. Fast DDS copies each message into its history and shared memory
while the calling thread waits, and messages of different topics have nothing to wait for in
each other, so :class:`PublishPool` spreads them over ``threads`` threads: each publisher is
bound to one thread at its first message (round robin over publishers in the order they first
appear), so the messages of one topic leave in the order given, and different topics' copies run
on different cores.

Lifetime of what is sent: ``send(pub, data, keep)`` holds ``keep`` (the window's result, whose
collection frees its shared-memory slot) until ``data`` is out. Back-pressure: :meth:`send`
blocks while ``max_pending`` messages wait, so a publisher slower than the windows holds the
publish thread and, behind it, the pipeline (frames then drop at its input, counted).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from da3_ros.ros.serialized_publish import publish_serialized

#: Messages waiting in a pool before :meth:`PublishPool.send` blocks: about two windows of 8 views.
MAX_PENDING = 64


class PublishPool:
    """Publishes serialised messages on ``threads`` threads (module docstring).

    Args:
        threads: publishing threads; 0: :meth:`send` publishes at once on the caller's thread.
        on_error: called (on a pool thread) with any exception a publish raises; the pool goes on.
        max_pending: messages queued before :meth:`send` blocks.
        name: thread name prefix.
    """

    def __init__(self, threads: int, on_error: Callable[[BaseException], None],
                 max_pending: int = MAX_PENDING, name: str = "da3_send") -> None:
        self._on_error = on_error
        self._max_pending = max(1, int(max_pending))
        self._cond = threading.Condition()
        self._queues: list[deque] = [deque() for _ in range(max(0, int(threads)))]
        self._lane: dict[int, int] = {}  # id(publisher) -> its thread
        self._pending = 0  # queued or being published
        self._closed = False
        self._threads = [threading.Thread(target=self._run, args=(q,), name=f"{name}{i}", daemon=True)
                         for i, q in enumerate(self._queues)]
        for t in self._threads:
            t.start()

    @property
    def threads(self) -> int:
        """Publishing threads (0: inline)."""
        return len(self._threads)

    def pending(self) -> int:
        """Messages queued or being published now."""
        with self._cond:
            return self._pending

    def send(self, pub, data, keep=None, after: Callable[[], None] | None = None) -> bool:
        """Publish ``data`` (a whole serialised message) on ``pub``, now or on the publisher's thread.

        Args:
            pub: an rclpy publisher (see :func:`publish_serialized`).
            data: ``bytes`` or a C-contiguous uint8 array; must stay unchanged until sent.
            keep: held until ``data`` is sent (the owner of its memory).
            after: called once ``data`` is out (not when publishing failed).

        Returns:
            False when the pool is closed (nothing sent).
        """
        if not self._queues:
            if self._closed:
                return False
            self._publish(pub, data, after)
            return True
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._pending < self._max_pending)
            if self._closed:
                return False
            lane = self._lane.setdefault(id(pub), len(self._lane) % len(self._queues))
            self._queues[lane].append((pub, data, keep, after))
            self._pending += 1
            self._cond.notify_all()
        return True

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued message is out; True when none is left."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout_s)

    def close(self, drain: bool = True, timeout_s: float = 5.0) -> bool:
        """Send what waits (``drain``) or drop it, then stop the threads; True when they ended in time."""
        if drain:
            self.flush(timeout_s)
        with self._cond:
            self._closed = True
            for q in self._queues:
                self._pending -= len(q)
                q.clear()
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout_s)
        return not any(t.is_alive() for t in self._threads)

    def _publish(self, pub, data, after) -> None:
        try:
            publish_serialized(pub, data)
        except Exception as exc:  # noqa: BLE001 - one failed message must not stop publishing
            self._on_error(exc)
            return
        if after is not None:
            after()

    def _run(self, queue: deque) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: queue or self._closed)
                if not queue:
                    return
                pub, data, keep, after = queue.popleft()
            try:
                self._publish(pub, data, after)
            finally:
                pub = data = keep = after = None  # noqa: F841 - let the slot go before waiting again
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()
