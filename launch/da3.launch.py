"""One camera: da3_node with a params file.

    ros2 launch da3_ros da3.launch.py
    ros2 launch da3_ros da3.launch.py config:=/path/my.yaml namespace:=robot1 \
        image_topic:=/my_cam/image_raw camera_info_topic:=/my_cam/camera_info
    ros2 launch da3_ros da3.launch.py remaps:="/da3_node/points:=/cloud ~/path:=/da3/path"

The node configures and activates itself (parameter ``autostart``); pass
``autostart:=false`` to drive its lifecycle from a manager instead.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from da3_ros.launch_args import launch_arguments, node_kwargs

PACKAGE = "da3_ros"
EXECUTABLE = "da3_node"
DEFAULT_CONFIG = "da3.yaml"


def _node(context):
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    remaps = [("/camera/image_raw", value("image_topic")),
              ("/camera/camera_info", value("camera_info_topic"))]
    share = FindPackageShare(PACKAGE).perform(context)
    return [Node(**node_kwargs(value, share, PACKAGE, EXECUTABLE, remaps=remaps))]


def generate_launch_description():
    default_config = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", DEFAULT_CONFIG])
    return LaunchDescription([
        *[DeclareLaunchArgument(name, default_value=default, description=text)
          for name, default, text in launch_arguments(config=default_config)],
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="Remap the config's /camera/image_raw to this topic"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/camera_info",
                              description="Remap the config's /camera/camera_info to this topic"),
        OpaqueFunction(function=_node),
    ])
