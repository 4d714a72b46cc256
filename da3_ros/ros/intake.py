"""The cameras' subscriptions served on a thread of their own, outside rclpy's executor.

rclpy's executor rebuilds its wait set from every entity of the node and creates a task for each
callback, in Python, for every message: on the GPU machine, receiving da3-small's camera at 350
frames/s, images were lost in DDS before the node took them (its reader keeps
``input_queue_depth`` images; bench/RESULTS.md, "fifth session"), and at 300 frames/s the
executor thread had spent a quarter of its time in that loop ("fourth session").
:class:`SubscriptionThread` waits on just the cameras' subscriptions (and their message-lost
events) with one reused rcl wait set, the GIL released while it waits, and takes every message
that is ready before it waits again.

The subscriptions stay the node's own (``ros2 node info`` lists them; QoS, remapping and
lifecycle are unchanged): they are created in :attr:`SubscriptionThread.group`, a callback group
whose ``can_execute`` is False, so the node's executor leaves them out of its wait set and only
this thread takes their messages. Callbacks run on this thread, one at a time, in the order their
messages are taken; they must not block (``CameraInputs``' callbacks decode, check and hand over).
"""

from __future__ import annotations

import contextlib
import logging
import threading

from rclpy.callback_groups import CallbackGroup
from rclpy.guard_condition import GuardCondition
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

LOG = logging.getLogger("da3_ros.ros.intake")
#: Messages taken from one subscription before the others get their turn.
TAKE_BURST = 16
#: Longest wait before the thread looks at its stop flag again, seconds.
WAIT_S = 0.1


class ThreadOwnedGroup(CallbackGroup):
    """A callback group rclpy's executor never runs: :class:`SubscriptionThread` serves its entities."""

    def can_execute(self, entity) -> bool:
        """Never: the executor leaves these entities out of its wait set."""
        return False

    def beginning_execution(self, entity) -> bool:
        """Never (see :meth:`can_execute`)."""
        return False

    def ending_execution(self, entity) -> None:
        """Nothing to end."""


class SubscriptionThread:
    """Takes the messages of the subscriptions in :attr:`group` and calls their callbacks.

    Args:
        context: the node's rclpy context.
        name: the thread's name.
        on_error: called with any exception a callback raises (the thread goes on).
    """

    def __init__(self, context, name: str = "da3_images", on_error=None) -> None:
        self.group = ThreadOwnedGroup()
        self._context = context
        self._on_error = on_error or (lambda exc: LOG.error("subscription callback failed: %s", exc))
        self._lock = threading.Lock()
        self._subs: list = []
        self._changed = True
        self._stop = threading.Event()
        self._wake = GuardCondition(None, None, context)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def add(self, subscriptions) -> None:
        """Serve these subscriptions (created with ``callback_group=self.group``); starts the thread."""
        with self._lock:
            self._subs += list(subscriptions)
            self._changed = True
        self._wake.trigger()
        if not self._started:
            self._started = True
            self._thread.start()

    def close(self, timeout_s: float = 5.0) -> bool:
        """Stop taking messages (the callback running now finishes first); True when the thread ended.

        Destroy the subscriptions only after this returned.
        """
        self._stop.set()
        with contextlib.suppress(Exception):  # a context already shut down
            self._wake.trigger()
        if self._started:
            self._thread.join(timeout_s)
        ended = not self._thread.is_alive()
        if ended:
            with contextlib.suppress(Exception):
                self._wake.destroy()
        return ended

    # -- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        wait_set, subs, handlers = None, [], []
        timeout_ns = int(WAIT_S * 1e9)
        while not self._stop.is_set():
            with self._lock:
                if self._changed:
                    subs = list(self._subs)
                    handlers = [h for s in subs for h in getattr(s, "event_handlers", ())]
                    self._changed = False
                    wait_set = None
            try:
                if wait_set is None:
                    with self._context.handle:
                        wait_set = _rclpy.WaitSet(len(subs), 1, 0, 0, 0, len(handlers), self._context.handle)
                self._wait_and_take(wait_set, subs, handlers, timeout_ns)
            except Exception as exc:  # noqa: BLE001 - context shut down, or an entity destroyed
                if self._stop.is_set() or not self._context.ok():
                    return
                LOG.warning("subscription thread: %s: %s (waiting again)", type(exc).__name__, exc)
                wait_set = None
                self._stop.wait(WAIT_S)

    def _wait_and_take(self, wait_set, subs: list, handlers: list, timeout_ns: int) -> None:
        with contextlib.ExitStack() as alive:  # entities in use cannot be destroyed meanwhile
            for entity in (*subs, *handlers):
                alive.enter_context(entity.handle if hasattr(entity, "handle") else entity)
            alive.enter_context(self._wake.handle)
            wait_set.clear_entities()
            for sub in subs:
                wait_set.add_subscription(sub.handle)
            wait_set.add_guard_condition(self._wake.handle)
            for handler in handlers:
                handler.add_to_wait_set(wait_set)
            wait_set.wait(timeout_ns)  # the GIL is released while rcl waits
            for handler in handlers:
                if handler.is_ready(wait_set):
                    self._call(handler.callback, handler.take_data())
            ready = wait_set.get_ready_entities("subscription")
            for sub in subs:
                if sub.handle.pointer in ready:
                    self._take(sub)

    def _take(self, sub) -> None:
        for _ in range(TAKE_BURST):
            if self._stop.is_set():
                return
            taken = sub.handle.take_message(sub.msg_type, sub.raw)
            if taken is None:
                return
            self._call(sub.callback, taken[0])

    def _call(self, callback, arg) -> None:
        if arg is None:
            return
        try:
            callback(arg)
        except Exception as exc:  # noqa: BLE001 - a callback bug must not stop the cameras
            self._on_error(exc)
