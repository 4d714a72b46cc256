"""Replay a bag into da3_node on sim time (ros2 bag play --clock), optionally recording outputs.

    ros2 launch da3_ros da3_bag_replay.launch.py bag:=data/synth_room
    ros2 launch da3_ros da3_bag_replay.launch.py bag:=my_bag rate:=0.5 loop:=true \
        config:=/path/replay.yaml namespace:=replay record:=/tmp/da3_out \
        remaps:="/cam0/image_raw:=/camera/color/image_raw"

The node uses ``use_sim_time`` so its output stamps, latency figures and TF
all follow the bag's clock; with ``loop:=true`` the stamps jump back at each
loop and the node starts a fresh trajectory (``time_jump_reset_s``).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from da3_ros.launch_args import NODE_ARGUMENTS, node_kwargs

PACKAGE = "da3_ros"
EXECUTABLE = "da3_node"
DEFAULT_CONFIG = "da3_replay.yaml"


def _actions(context):
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    namespace, node_name = value("namespace"), value("node_name")
    node = Node(**node_kwargs(value, PACKAGE, EXECUTABLE, use_sim_time=True, autostart=True))
    play = ["ros2", "bag", "play", value("bag"), "--clock", "--rate", value("rate"),
            "--delay", value("delay_s")]
    if value("loop").lower() == "true":
        play.append("--loop")
    actions = [node, ExecuteProcess(cmd=play, output="screen")]
    if value("record"):
        prefix = "/".join(p for p in ("", namespace.strip("/"), node_name) if p)
        actions.append(ExecuteProcess(
            cmd=["ros2", "bag", "record", "-o", value("record"), "--use-sim-time",
                 "--regex", f"{prefix}/.*", "/diagnostics"],
            output="screen"))
    return actions


def generate_launch_description():
    default_config = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", DEFAULT_CONFIG])
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="Bag directory or file to play"),
        DeclareLaunchArgument("config", default_value=default_config, description="Parameters file"),
        DeclareLaunchArgument("rate", default_value="1.0", description="Playback rate factor"),
        DeclareLaunchArgument("delay_s", default_value="3.0",
                              description="Seconds before playback starts (model loading)"),
        DeclareLaunchArgument("loop", default_value="false", description="Loop the bag"),
        DeclareLaunchArgument("record", default_value="", description="Record the outputs to this bag"),
        *[DeclareLaunchArgument(name, default_value=default, description=text)
          for name, default, text in NODE_ARGUMENTS],
        OpaqueFunction(function=_actions),
    ])
