"""Shared pieces of the command-line tools: user errors, one-line messages and exit codes."""

from __future__ import annotations

import sys
from collections.abc import Callable


class ToolError(RuntimeError):
    """A problem the user can fix (a bad path, a missing topic, a broken bag): one line, exit 1."""


def one_line(exc: BaseException) -> str:
    """``exc``'s message collapsed to one line (its type name when it has none)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def describe(exc: BaseException) -> str:
    """One line for the user: the message of a known error, ``Type: message`` for an unexpected one."""
    known = isinstance(exc, ToolError | FileNotFoundError | ValueError | OSError)
    return one_line(exc) if known else f"{type(exc).__name__}: {one_line(exc)}"


def run_main(work: Callable[[], int], prog: str, debug: bool = False) -> int:
    """Run ``work()`` and turn any exception into ``<prog>: error: <one line>`` and exit code 1.

    With ``debug`` the exception propagates (full traceback). Ctrl-C exits with 130.
    """
    try:
        return int(work() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the user gets one line; --debug shows the trace
        if debug:
            raise
        known = isinstance(exc, ToolError | FileNotFoundError | ValueError | OSError)
        hint = "" if known else " (run with --debug for a traceback)"
        print(f"{prog}: error: {describe(exc)}{hint}", file=sys.stderr)
        return 1
