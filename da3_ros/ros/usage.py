"""``da3_node --help``: how to run the node, its parameters and topics, where the docs are.

Built from the parameter table (:mod:`da3_ros.ros.parameters`) and the topic table
(:mod:`da3_ros.ros.topics`), so it never disagrees with what the node declares; no torch and no
rclpy initialisation, so it prints at once.
"""

from __future__ import annotations

import textwrap

from da3_ros.ros.parameters import CAMERA_SPECS, SPECS, ParamSpec
from da3_ros.ros.topics import CAMERA_OUTPUTS, NODE_OUTPUTS, type_name

HEAD = """\
usage: da3_node [-h] [--ros-args [--params-file FILE] [-p NAME:=VALUE]... [-r FROM:=TO]...
                [--log-level LEVEL]]

Depth Anything 3 for ROS 2: per-view depth, confidence, intrinsics and poses, a point cloud,
odometry and a path from one camera (temporal windows) or a synchronised rig. A managed
(lifecycle) node; with autostart (default) it configures and activates itself. SIGINT and
SIGTERM stop it cleanly (exit 0); exit 1: invalid parameters or a failed autostart.

examples:
  da3_node --ros-args --params-file config/da3.yaml
  da3_node --ros-args -p model:=/path/to/DA3-LARGE -p device:=cuda \\
      -r /camera/image_raw:=/my_cam/image_raw -r /camera/camera_info:=/my_cam/camera_info
  da3-ctl param set /da3_node conf_threshold 1.5      # at run time, without the ros2 CLI
  da3-ctl lifecycle set /da3_node deactivate

DDS on one machine only: export FASTDDS_DEFAULT_PROFILES_FILE=<da3_ros>/config/fastdds_localhost.xml
"""

TAIL = """\
Values are YAML: on the command line a string parameter takes the text as typed
(-p accelerate:=off); in a params file quote a word YAML reads as a boolean (fixed_frame: 'no').

docs: docs/node.md and README.md of the da3_ros sources (installed with the package in
share/da3_ros/docs/); 'ros2 param describe /da3_node NAME' on a ROS install."""


def _line(name: str, spec: ParamSpec, default) -> list[str]:
    when = "dynamic" if spec.dynamic else "restart"
    limits = " | ".join(spec.choices) if spec.choices else (
        f"[{spec.lo:g}, {spec.hi:g}]" if spec.lo is not None else "")
    head = f"  {name} (default {default!r}; {when}{'; ' + limits if limits else ''})"
    return [head, *textwrap.wrap(spec.description, 92, initial_indent="      ", subsequent_indent="      ")]


def usage() -> str:
    """The full ``--help`` text."""
    lines = [HEAD, "inputs (per camera; relative names follow the node's namespace, all remappable):",
             "  camera.<name>.image_topic       sensor_msgs/msg/Image or CompressedImage (transport)",
             "  camera.<name>.camera_info_topic sensor_msgs/msg/CameraInfo (optional)", "",
             "outputs (~ = the node's name):"]
    lines += [f"  ~/<camera>/{key} ({type_name(t)}): {what}" for key, (t, what) in CAMERA_OUTPUTS.items()]
    lines += [f"  ~/{key} ({type_name(t)}): {what}" for key, (t, what) in NODE_OUTPUTS.items()]
    lines += ["  /diagnostics (diagnostic_msgs/msg/DiagnosticArray): rates, latency, drops by reason", "",
              "parameters (restart: read at configure, settable while unconfigured; dynamic: next window):"]
    for spec in SPECS:
        lines += _line(spec.name, spec, spec.default)
    lines += ["", "per camera, for each name in cameras:"]
    for spec in CAMERA_SPECS:
        lines += _line(f"camera.<name>.{spec.name}", spec, spec.default)
    return "\n".join(lines + ["", TAIL])
