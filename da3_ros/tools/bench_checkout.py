"""``da3-bench``: the network benchmark, which lives in a source checkout's ``bench/`` package.

Benchmarks are not installed with the package (a robot needs none of them). This entry point
finds ``bench/`` next to the ``da3_ros`` sources of an editable or source-tree install and runs
:func:`bench.network.main`; in an installed package it says where the benchmarks are.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    """Run ``bench.network.main(argv)`` from the source checkout; 1 with a message when absent."""
    if not (CHECKOUT / "bench" / "network.py").is_file():
        print("da3-bench: the benchmarks are not installed with da3_ros; run `python -m bench` "
              "from a source checkout (git clone of da3_ros)", file=sys.stderr)
        return 1
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))
    return importlib.import_module("bench.network").main(argv)
