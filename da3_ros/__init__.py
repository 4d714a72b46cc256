"""da3_ros: Depth Anything 3 multi-view depth, poses and point clouds for ROS 2.

Subpackages (dependencies point one way; see README "Layout"):

- :mod:`da3_ros.model`: the DA3-compatible network (torch only).
- :mod:`da3_ros.core`: ROS-free runtime pipeline (frames, windows, engine, alignment, clouds).
- :mod:`da3_ros.inference`: settings, model sources, building and releasing a predictor.
- :mod:`da3_ros.sim`: synthetic scenes, camera effects, the ground-truth stand-in.
- :mod:`da3_ros.evaluation`: metrics, scoring and reports.
- :mod:`da3_ros.ros`: rclpy glue (node, parameters, message conversions).
- :mod:`da3_ros.tools`: command-line programs (synth, eval, replay, demo).
"""

__version__ = "0.1.0"
