"""rosbag2 reading and writing with ``rosbags`` (no ROS install).

:mod:`.io` (reader, writer, cameras of a bag), :mod:`.frames` (frames and truth from a bag) and
:mod:`.node` (a stand-in node whose publishers write into a bag).
"""
