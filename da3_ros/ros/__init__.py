"""rclpy glue: the node, its parameters and message <-> numpy conversions.

Everything that imports rclpy or ROS message packages lives here (or in the
tools that play bags over DDS); :mod:`da3_ros.core` and :mod:`da3_ros.model`
stay ROS-free.
"""
