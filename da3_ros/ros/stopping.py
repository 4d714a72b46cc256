"""SIGINT and SIGTERM for ``da3_node``: a clean stop (exit 0) at any moment.

rclpy's own signal handlers shut the rcl context down from another thread the moment a
signal arrives. Whatever the node was doing then (creating a subscription during activation,
publishing a window, logging to ``/rosout``) fails with "context is invalid", and SIGINT also
raises ``KeyboardInterrupt`` wherever the main thread happens to be (teardown included). So the
node starts rclpy without them (``SignalHandlerOptions.NO``) and handles both signals here:

- the signal is recorded (:attr:`StopSignals.signum`); the main loop
  (:func:`da3_ros.ros.node.main`) polls it between executor turns and then tears the node down
  in order (unsubscribe, stop the worker and the publish thread, release the model, destroy
  the node) while the context is still valid, and only then shuts rclpy down;
- inside an :meth:`StopSignals.interruptible` block (imports, ``rclpy.init``, configure, model
  load, compilation, warm-up) the first signal also raises :class:`StopRequested`, so a long
  start-up step ends at once instead of running to completion;
- further signals while stopping are only recorded: the teardown is never interrupted.

stdlib only: :mod:`da3_ros.ros.entry` installs the handlers before it imports rclpy, torch
or the node, so even a signal during those imports is a clean stop.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

#: The signals that stop the node.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(BaseException):  # noqa: N818 - not an error: a request, like KeyboardInterrupt
    """SIGINT or SIGTERM arrived during an interruptible start-up step.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that the ``except Exception`` blocks
    of rclpy's lifecycle machinery and of the node's own error handling let it through.
    """


class StopSignals:
    """Records SIGINT / SIGTERM and, inside :meth:`interruptible` blocks, raises once.

    Python runs signal handlers on the main thread between bytecodes, so :meth:`_handle`
    never runs in the middle of a C call (an rcl wait, a torch kernel); callers that block
    in C poll :attr:`signum` instead (the node spins with a timeout).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._depth = 0  # nesting of interruptible() blocks (main thread only)
        self._raised = False
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """True once SIGINT or SIGTERM arrived."""
        return self.signum is not None

    @property
    def installed(self) -> bool:
        """True while this object's handlers are installed."""
        return bool(self._previous)

    def install(self) -> None:
        """Install the handlers (main thread only; idempotent); :meth:`restore` puts the old ones back."""
        if self._previous or threading.current_thread() is not threading.main_thread():
            return
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        """Put back the handlers :meth:`install` replaced and forget any recorded signal."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        self.signum, self._raised, self._depth = None, False, 0

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A block that the first stop signal cuts short with :class:`StopRequested`.

        Entering it after a signal raises at once. Code that calls back into Python from C
        (torch, for one) may turn the raised exception into another one (a ``ValueError``);
        any exception leaving the block after a signal becomes :class:`StopRequested` again.
        Without installed handlers (the node built in-process, by tests) it is a no-op.
        """
        if not self.installed:
            yield
            return
        if self.requested and not self._raised:
            self._raised = True
            raise StopRequested(self.signum)
        self._depth += 1
        try:
            yield
        except Exception as exc:
            if self.requested:
                raise StopRequested(self.signum) from exc
            raise
        finally:
            self._depth -= 1

    def _handle(self, signum: int, _frame) -> None:
        if self.signum is None:
            self.signum = signum
        if self._depth > 0 and not self._raised:
            self._raised = True
            raise StopRequested(signum)


#: The process's stop signals (installed by :mod:`da3_ros.ros.entry`).
SIGNALS = StopSignals()
