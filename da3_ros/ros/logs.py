"""Logging helpers of the node: per-key throttling, and Python ``logging`` routed to rclpy."""

from __future__ import annotations

import logging
import time


class Throttle:
    """At most one log line per key every ``period_s`` seconds (monotonic clock)."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._last: dict[str, float] = {}

    def ready(self, key: str) -> bool:
        """True when a line for ``key`` may be logged now (and records it)."""
        now = time.monotonic()
        if now - self._last.get(key, -1e18) < self.period_s:
            return False
        self._last[key] = now
        return True


class RosLogHandler(logging.Handler):
    """Forwards Python ``logging`` records of ``da3_ros.*`` (core, model) to the node's logger.

    Warnings and errors are throttled per message template so a failing stream cannot flood the log.
    """

    def __init__(self, node) -> None:
        super().__init__()
        self._node = node
        self._throttle = Throttle(5.0)

    def emit(self, record: logging.LogRecord) -> None:
        """Log ``record`` through rclpy at the matching severity."""
        if record.levelno >= logging.WARNING and not self._throttle.ready(f"{record.name}:{record.msg}"):
            return
        logger = self._node.get_logger()
        text = f"[{record.name}] {record.getMessage()}"
        if record.levelno >= logging.ERROR:
            logger.error(text)
        elif record.levelno >= logging.WARNING:
            logger.warning(text)
        elif record.levelno >= logging.INFO:
            logger.info(text)
        else:
            logger.debug(text)
