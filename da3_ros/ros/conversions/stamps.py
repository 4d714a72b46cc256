"""builtin_interfaces/Time and std_msgs/Header <-> integer nanoseconds (exact)."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from da3_ros.ros.errors import ConversionError

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (rclpy or rosbags) -> integer nanoseconds (exact)."""
    sec, nsec = int(stamp.sec), int(stamp.nanosec)
    if not 0 <= nsec < NS_PER_S:
        raise ConversionError(f"Time.nanosec {nsec} outside [0, 1e9)")
    return sec * NS_PER_S + nsec


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time (negative times floor to sec < 0)."""
    if isinstance(ns, float | np.floating):
        raise ConversionError(f"stamp must be integer nanoseconds, got float {ns!r}")
    sec, nsec = divmod(int(ns), NS_PER_S)
    if not -(2**31) <= sec < 2**31:
        raise ConversionError(f"stamp {ns} ns does not fit Time.sec (int32)")
    return Time(sec=sec, nanosec=nsec)


def make_header(stamp_ns: int, frame_id: str) -> Header:
    """std_msgs/Header with the given stamp (integer ns) and frame id."""
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=str(frame_id))
