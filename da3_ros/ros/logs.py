"""Logging helpers of the node: throttling per kind of message, and Python ``logging`` routed to rclpy.

Throttling is keyed by the *kind* of a message (:func:`message_kind`: its text with the numbers
taken out), so each distinct problem is logged once per period: an unsupported ``16UC1`` image
does not silence a later ``yuv422`` one, while a stream of frames with backward stamps (each
message naming other stamps) is one kind.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict

_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def message_kind(text: str) -> str:
    """``text`` with every number replaced by ``#``: messages of one kind share it."""
    return _NUMBER.sub("#", text)


class Throttle:
    """At most one log line per key every ``period_s`` seconds (monotonic clock).

    Remembers at most ``max_keys`` keys (the least recently logged are forgotten first), so
    messages with unbounded variety cannot grow it.
    """

    def __init__(self, period_s: float, max_keys: int = 256) -> None:
        self.period_s = period_s
        self.max_keys = max_keys
        self._last: OrderedDict[str, float] = OrderedDict()

    def ready(self, key: str) -> bool:
        """True when a line for ``key`` may be logged now (and records it)."""
        now = time.monotonic()
        if now - self._last.get(key, -1e18) < self.period_s:
            return False
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return True


class RosLogHandler(logging.Handler):
    """Forwards Python ``logging`` records of ``da3_ros.*`` (core, model) to the node's logger.

    Warnings and errors are throttled per logger and kind of message (:func:`message_kind` of the
    formatted text), with ``throttle`` (the node's, so ``log_throttle_s`` applies; default: 5 s),
    so a failing stream cannot flood the log while each distinct failure still shows.
    """

    def __init__(self, node, throttle: Throttle | None = None) -> None:
        super().__init__()
        self._node = node
        self._throttle = throttle or Throttle(5.0)

    def emit(self, record: logging.LogRecord) -> None:
        """Log ``record`` through rclpy at the matching severity."""
        text = record.getMessage()
        key = f"{record.name}:{message_kind(text)}"
        if record.levelno >= logging.WARNING and not self._throttle.ready(key):
            return
        logger = self._node.get_logger()
        text = f"[{record.name}] {text}"
        if record.levelno >= logging.ERROR:
            logger.error(text)
        elif record.levelno >= logging.WARNING:
            logger.warning(text)
        elif record.levelno >= logging.INFO:
            logger.info(text)
        else:
            logger.debug(text)
