"""A thread that takes results off the inference worker, so it starts the next window at once.

In the node it publishes (building and sending a window's messages: 8 views of 640 x 480, ~30 MB
of depth, confidence and colour images and a cloud, takes the CPU tens of milliseconds; on the
inference worker that time would leave the GPU idle). In the inference process
(:mod:`da3_ros.inference.worker_process`) it writes each result into shared memory. The worker
hands each result over and goes on; the hand-over holds at most ``depth`` results and blocks the
worker beyond that (back-pressure: frames then wait, and drop by ``queue_policy``, at the
pipeline's input, where they are counted).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable


class HandoffThread:
    """Calls ``publish(result)`` for each submitted result, in order, on a thread of its own.

    Args:
        publish: takes one result (the node: ``OutputPublishers.publish_result``; the inference
            process: the result into shared memory and a message to the node).
        on_error: called with any exception ``publish`` raises (the thread carries on).
        depth: results waiting at most; :meth:`submit` blocks while that many wait.
    """

    def __init__(self, publish: Callable[[object], None], on_error: Callable[[BaseException], None],
                 depth: int = 2) -> None:
        self._publish, self._on_error, self._depth = publish, on_error, depth
        self._queue: deque = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._busy = False
        self._thread: threading.Thread | None = None

    def start(self, name: str = "da3_publish") -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def submit(self, result) -> bool:
        """Queue a result; blocks while ``depth`` wait. False (not queued) once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or len(self._queue) < self._depth)
            if self._closed:
                return False
            self._queue.append(result)
            self._cond.notify_all()
            return True

    def idle(self) -> bool:
        """True when nothing waits and nothing is being published."""
        with self._cond:
            return not self._queue and not self._busy

    def wait_idle(self) -> None:
        """Return once nothing waits and nothing is being published (at once when never started)."""
        with self._cond:
            if self._thread is not None:
                self._cond.wait_for(lambda: not self._queue and not self._busy)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return
                result = self._queue.popleft()
                self._busy = True
                self._cond.notify_all()
            try:
                self._publish(result)
            except Exception as exc:  # noqa: BLE001 - one bad window must not stop publishing
                self._on_error(exc)
            finally:
                result = None  # noqa: F841 - no reference kept while waiting (a shared-memory slot frees)
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def close(self, timeout_s: float = 5.0, drain: bool = True) -> bool:
        """Publish what waits (``drain``) or drop it, then stop; True when the thread ended in time."""
        with self._cond:
            self._closed = True
            if not drain:
                self._queue.clear()
            self._cond.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()
