"""The node's output topics: names, message types and what each carries.

One table for :class:`~da3_ros.ros.publishers.OutputPublishers` (which creates them) and for
``da3_node --help`` (which lists them); light imports only (message types), so ``--help``
stays fast.
"""

from __future__ import annotations

from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

#: Per-camera outputs ``~/<camera>/<key>``: (message type, what it carries).
CAMERA_OUTPUTS: dict[str, tuple[type, str]] = {
    "depth": (Image, "32FC1 z-depth, REP-118 (metres or model units; NaN = unknown)"),
    "confidence": (Image, "32FC1, larger = more confident"),
    "camera_info": (CameraInfo, "the given or estimated intrinsics at the depth image's size"),
    "depth_colored": (Image, "rgb8 turbo colormap of inverse depth, for viewing"),
    "pose": (PoseStamped, "the camera's optical frame in fixed_frame"),
}
#: Window-level outputs ``~/<key>``: (message type, what it carries).
NODE_OUTPUTS: dict[str, tuple[type, str]] = {
    "points": (PointCloud2, "x y z rgb confidence of each window's new views, in fixed_frame"),
    "odometry": (Odometry, "the reference (first) camera's pose and twist"),
    "path": (Path, "the reference camera's poses so far"),
}
#: Outputs that ``points_qos: best_effort`` makes best effort (the heavy viewing ones).
HEAVY_OUTPUTS = frozenset({"depth_colored", "points"})


def type_name(msg_type: type) -> str:
    """``package/msg/Name`` of a message class."""
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"
