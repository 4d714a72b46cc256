"""Console-script entry of ``da3_node``: imports ROS only once it runs.

Importing rclpy and the node module takes a noticeable part of a second. A SIGINT in that
window (``ros2 launch`` shutting down right after starting the node, or Ctrl-C) used to end in a
``KeyboardInterrupt`` traceback from the import. Here it is a clean stop with exit 0, as a
signal anywhere later in start-up already is (:func:`da3_ros.ros.node.main`).
"""

from __future__ import annotations

import os


def da3_node(args: list[str] | None = None) -> int:
    """Import the node and run :func:`da3_ros.ros.node.main`; 0 when interrupted while importing."""
    # numpy's BLAS threads busy-wait between calls: on a many-core host a few small products per
    # window kept four of them at 100 % CPU. The node's numpy work is small; torch keeps its own.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        from da3_ros.ros.node import main
    except KeyboardInterrupt:
        return 0
    return main(args)
