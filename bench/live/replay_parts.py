"""What the live bench reuses from the ``da3-replay`` tool, imported in this one place.

The replay tool is being reorganised (``NodeRunner`` moves to ``da3_ros.tools.replay.node_runner``);
when its modules move, only these imports change.

- :class:`NodeRunner`: a child process on loopback DDS with its log in ``out/node.log``
  (the node, the camera child process).
- :func:`prepare_dds`: this process's loopback profile and ROS domain.
- :func:`header_stamp_ns` / :func:`set_header_stamp`: read / replace the header stamp of a
  serialised message; :func:`message_class`: the rclpy class of ``pkg/msg/Name``.
- :func:`node_counts`: received / processed / drops / pending from the node's diagnostics.
"""

from da3_ros.tools.replay import NodeRunner, prepare_dds
from da3_ros.tools.replay_report import node_counts
from da3_ros.tools.replay_ros import header_stamp_ns, message_class, set_header_stamp

__all__ = ["NodeRunner", "header_stamp_ns", "message_class", "node_counts", "prepare_dds", "set_header_stamp"]
