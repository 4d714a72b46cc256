"""Console-script entry of ``da3_node``: stop signals first, ROS only once it runs.

Importing rclpy, torch and the node module takes a noticeable part of a second (seconds on a
busy machine). The SIGINT / SIGTERM handlers of :mod:`da3_ros.ros.stopping` are installed
before any of that, so a signal while importing (``ros2 launch`` shutting down right after
starting the node, or Ctrl-C) is a clean stop with exit 0, as a signal anywhere later is
(:func:`da3_ros.ros.node.main`). ``-h`` / ``--help`` prints the usage and exits 0 without
starting ROS.
"""

from __future__ import annotations


def da3_node(args: list[str] | None = None) -> int:
    """Run :func:`da3_ros.ros.node.main`; 0 when interrupted while importing."""
    from da3_ros.ros.stopping import SIGNALS, StopRequested

    installed_here = not SIGNALS.installed
    SIGNALS.install()
    try:
        with SIGNALS.interruptible():
            from da3_ros.ros.node import main
        return main(args)
    except (KeyboardInterrupt, StopRequested):
        return 0
    finally:
        if installed_here:
            SIGNALS.restore()

