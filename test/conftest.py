"""Shared test setup: every ROS participant a test starts stays on loopback.

Sets, before any test imports rclpy, the loopback-only Fast DDS profile, a
ROS_DOMAIN_ID of this run's own (unless the caller chose one) and a log
directory under pytest's temporary root. Subprocess tests build their child
environment with :func:`da3_ros.dds_env.loopback_env`.
"""

import os
import tempfile

from da3_ros.dds_env import fastdds_profile_path, pick_domain_id, remove_stale_fastdds_segments

os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(fastdds_profile_path())
os.environ.setdefault("ROS_DOMAIN_ID", str(pick_domain_id()))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="da3_ros_logs_"))
os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
# Node processes that a test had to kill leave their Fast DDS segments in /dev/shm.
remove_stale_fastdds_segments()
