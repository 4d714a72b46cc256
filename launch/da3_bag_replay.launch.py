"""Replay a bag into da3_node on sim time (ros2 bag play --clock), optionally recording outputs.

    ros2 launch da3_ros da3_bag_replay.launch.py bag:=data/room
    ros2 launch da3_ros da3_bag_replay.launch.py bag:=my_bag rate:=0.5 loop:=true \
        config:=/path/replay.yaml namespace:=replay record:=/tmp/da3_out \
        remaps:="/cam0/image_raw:=/camera/color/image_raw"

``bag:=`` and ``config:=`` relative paths that do not exist from the current directory are
looked up in the package's share directory (``bag:=data/room`` is the installed sample bag).
``use_sim_time`` defaults to true here, so the node's clock, latency figures and TF follow the
bag's ``/clock``; with ``loop:=true`` the stamps jump back at each loop and the node starts a
fresh trajectory (``time_jump_reset_s``). ``record:=DIR`` records the node's topics and
``/diagnostics`` to DIR (mcap; a relative DIR is taken from the current directory).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from da3_ros.launch_args import launch_arguments, launch_bool, node_kwargs, resolve_path

PACKAGE = "da3_ros"
EXECUTABLE = "da3_node"
DEFAULT_CONFIG = "da3_replay.yaml"
RECORD_STORAGE = "mcap"  # rosbag2_storage_mcap (package.xml), the format of the bundled bags


def _actions(context):
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    share = FindPackageShare(PACKAGE).perform(context)
    node = Node(**node_kwargs(value, share, PACKAGE, EXECUTABLE))
    play = ["ros2", "bag", "play", resolve_path(value("bag"), share), "--clock",
            "--rate", value("rate"), "--delay", value("delay_s")]
    if launch_bool(value, "loop"):
        play.append("--loop")
    actions = [node, ExecuteProcess(cmd=play, output="screen")]
    if value("record"):
        # the node's own topics (anchored: rosbag2 searches the regex anywhere in a name)
        prefix = "/" + "/".join(p for p in (value("namespace").strip("/"), value("node_name")) if p)
        record = ["ros2", "bag", "record", "--output", value("record"), "--storage", RECORD_STORAGE,
                  "--regex", f"^{prefix}/", "--topics", "/diagnostics"]
        if launch_bool(value, "use_sim_time"):
            record.append("--use-sim-time")
        actions.append(ExecuteProcess(cmd=record, output="screen"))
    return actions


def generate_launch_description():
    default_config = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", DEFAULT_CONFIG])
    return LaunchDescription([
        *[DeclareLaunchArgument(name, default_value=default, description=text)
          for name, default, text in launch_arguments(config=default_config, use_sim_time="true")],
        DeclareLaunchArgument("bag", description="Bag directory or file to play; a relative path "
                              "not found from the current directory is looked up in the package's "
                              "share directory"),
        DeclareLaunchArgument("rate", default_value="1.0", description="Playback rate factor"),
        DeclareLaunchArgument("delay_s", default_value="3.0",
                              description="Seconds before playback starts (model loading)"),
        DeclareLaunchArgument("loop", default_value="false", description="Loop the bag"),
        DeclareLaunchArgument("record", default_value="", description="Record the outputs to this bag"),
        OpaqueFunction(function=_actions),
    ])
