"""da3_ros: Depth Anything 3 multi-view depth, poses and point clouds for ROS 2.

Subpackages (dependencies point one way: tools -> ros -> core -> model):

- :mod:`da3_ros.model`: the DA3-compatible network (torch only).
- :mod:`da3_ros.core`: ROS-free pipeline (windows, engine, geometry, alignment).
- :mod:`da3_ros.ros`: rclpy glue (node, parameters, message conversions).
- :mod:`da3_ros.tools`: command-line programs (synth, eval, replay, bench).
"""

__version__ = "0.1.0"
