"""A synchronised camera rig described in YAML (cameras, topics, transports, sync slop).

    ros2 launch da3_ros da3_multicam.launch.py
    ros2 launch da3_ros da3_multicam.launch.py config:=/path/rig.yaml namespace:=robot1 \
        remaps:="/front/image_raw:=/cams/front/image"

The rig is the ``cameras`` list of the params file with one ``camera.<name>``
block per camera (image_topic, camera_info_topic, frame_id, transport); see
config/da3_multicam.yaml. All views of ``num_view`` synchronised sets share one
window (global attention across cameras and time).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from da3_ros.launch_args import launch_arguments, node_kwargs

PACKAGE = "da3_ros"
EXECUTABLE = "da3_node"
DEFAULT_CONFIG = "da3_multicam.yaml"


def _node(context):
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    share = FindPackageShare(PACKAGE).perform(context)
    return [Node(**node_kwargs(value, share, PACKAGE, EXECUTABLE))]


def generate_launch_description():
    default_config = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", DEFAULT_CONFIG])
    return LaunchDescription([
        *[DeclareLaunchArgument(name, default_value=default, description=text)
          for name, default, text in launch_arguments(config=default_config)],
        OpaqueFunction(function=_node),
    ])
