"""Shared pieces of the command-line tools: one-line errors and exit codes, strict-JSON reports."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import numpy as np


def one_line(exc: BaseException) -> str:
    """``exc``'s message collapsed to one line (its type name when it has none)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def json_safe(v):
    """``v`` for strict JSON: NaN / inf -> None, numpy scalars -> Python, through dicts, lists, tuples."""
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_safe(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def run_main(work: Callable[[], int], prog: str, debug: bool = False) -> int:
    """Run ``work()`` and turn any exception into ``<prog>: error: <one line>`` and exit code 1.

    With ``debug`` the exception propagates (full traceback). Ctrl-C exits with 130.
    """
    from da3_ros.tools.bagio import BagError

    try:
        return int(work() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the user gets one line; --debug shows the trace
        if debug:
            raise
        known = isinstance(exc, BagError | FileNotFoundError | ValueError | OSError)
        prefix = "" if known else f"{type(exc).__name__}: "
        hint = "" if known else " (run with --debug for a traceback)"
        print(f"{prog}: error: {prefix}{one_line(exc)}{hint}", file=sys.stderr)
        return 1
