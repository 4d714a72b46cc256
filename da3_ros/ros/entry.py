"""Console-script entry of ``da3_node``: stop signals first, ROS only once it runs.

Importing rclpy, torch and the node module takes a noticeable part of a second (seconds on a
busy machine). The SIGINT / SIGTERM handlers of :mod:`da3_ros.ros.stopping` are installed
before any of that, so a signal while importing (``ros2 launch`` shutting down right after
starting the node, or Ctrl-C) is a clean stop with exit 0, as a signal anywhere later is
(:func:`da3_ros.ros.node.main`). ``-h`` / ``--help`` prints the usage and exits 0 without
starting ROS.
"""

from __future__ import annotations

import contextlib
import os
import sys


def da3_node(args: list[str] | None = None) -> int:
    """Run :func:`da3_ros.ros.node.main`; 0 when interrupted while importing; the usage for ``--help``."""
    # numpy's BLAS threads busy-wait between calls: on a many-core host a few small products per
    # window kept four of them at 100 % CPU. The node's numpy work is small; torch keeps its own.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.setswitchinterval(gil_switch_interval_s())
    from da3_ros.inference.allocator import keep_large_allocations

    keep_large_allocations()  # a received image's buffers come from the heap, not fresh pages
    from da3_ros.ros.stopping import SIGNALS, StopRequested

    installed_here = not SIGNALS.installed
    SIGNALS.install()
    try:
        with SIGNALS.interruptible():
            if wants_help(sys.argv[1:] if args is None else args):
                from da3_ros.ros.usage import usage

                with contextlib.suppress(BrokenPipeError):  # da3_node --help | head
                    print(usage())
                return 0
            from da3_ros.ros.node import main
        return main(args)
    except (KeyboardInterrupt, StopRequested):
        return 0
    finally:
        if installed_here:
            SIGNALS.restore()



#: How long a thread holds the GIL while another waits for it (Python's default: 5 ms). The
#: inference worker hands the GIL over at every CUDA call that waits; with the executor and the
#: publish thread busy in Python, each such wait could cost it up to the interval.
GIL_SWITCH_INTERVAL_S = 0.001


def gil_switch_interval_s() -> float:
    """``DA3_GIL_SWITCH_INTERVAL_S`` from the environment (seconds), else :data:`GIL_SWITCH_INTERVAL_S`."""
    raw = os.environ.get("DA3_GIL_SWITCH_INTERVAL_S", "")
    try:
        value = float(raw) if raw else GIL_SWITCH_INTERVAL_S
    except ValueError:
        value = GIL_SWITCH_INTERVAL_S
    return value if value > 0 else GIL_SWITCH_INTERVAL_S


def wants_help(args: list[str]) -> bool:
    """True when ``-h`` or ``--help`` is among the program's own arguments (not ROS ones).

    ROS arguments run from ``--ros-args`` to ``--`` (or the end) and are rcl's.
    """
    in_ros = False
    for arg in args:
        if arg == "--ros-args":
            in_ros = True
        elif arg == "--":
            in_ros = False
        elif not in_ros and arg in ("-h", "--help"):
            return True
    return False
