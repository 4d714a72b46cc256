"""Faithful stand-ins of ROS 2 `launch` / `launch_ros` and of the `ros2 bag` command line.

`launch` and `launch_ros` are not on PyPI (the PyPI package named `launch` is unrelated), so the
launch files run here against stand-ins. Each stand-in binds its arguments to the upstream
constructor's signature, transcribed below with the checks upstream makes while constructing,
so a misspelt or misplaced keyword fails here as it would under `ros2 launch`. Transcribed from
(Kilted releases launch 3.8 / launch_ros 0.28 / rosbag2 0.32, later than these; where the real
packages are installed, test_launch_files also runs the launch files against them):

- ros2/launch 02595bafc7891d4d287667b6aa9161edf738e9f3 (rolling, 3.7.1): launch/launch/
  action.py, actions/declare_launch_argument.py, actions/opaque_function.py,
  actions/execute_process.py, actions/execute_local.py, launch_description.py,
  substitutions/launch_configuration.py, substitutions/path_join_substitution.py,
  utilities/normalize_to_list_of_substitutions_impl.py, logging/__init__.py (output aliases).
- ros2/launch_ros f9ab9371824d470bca47602bc7d277eb2217c90d (rolling): launch_ros/launch_ros/
  actions/node.py, substitutions/find_package.py, utilities/normalize_parameters.py,
  utilities/normalize_remap_rule.py.
- ros2/rosbag2 25304dd36e51cc0fbccf148fded2dd4ba5ccba35 (rolling): ros2bag/ros2bag/verb/
  record.py (add_recorder_arguments), verb/play.py (add_arguments), api/__init__.py
  (add_standard_reader_args).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import runpy
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path

import setuptools
from ament_index_python.packages import get_package_share_directory

REPO = Path(__file__).resolve().parents[1]
# launch.logging.get_output_loggers: the string aliases of `output`
OUTPUT_ALIASES = ("screen", "log", "both", "own_log", "full")


# --------------------------------------------------------------------------- upstream signatures
def _substitutions(value) -> None:
    """normalize_to_list_of_substitutions: a str, a Substitution, or an iterable of them."""
    items = [value] if isinstance(value, (str, Substitution)) else list(value)
    bad = [v for v in items if not isinstance(v, (str, Substitution))]
    if bad:
        raise TypeError(f"only 'str' or 'launch.Substitution' were expected, got {bad!r}")


def _action(*, condition=None):
    """launch.Action.__init__ (the end of every action's **kwargs)."""


def _declare_launch_argument(name, *, default_value=None, description=None, choices=None,
                             **kwargs):
    """launch.actions.DeclareLaunchArgument.__init__."""
    if default_value is not None:
        _substitutions(default_value)
    if choices is not None and not choices:
        raise RuntimeError("Provided choices arg is empty. Use None to ignore the choice list.")
    _action(**kwargs)


def _opaque_function(*, function, args=None, kwargs=None, **left_over_kwargs):
    """launch.actions.OpaqueFunction.__init__."""
    if not callable(function):
        raise TypeError(f"OpaqueFunction expected a callable for 'function', got {type(function)}")
    _action(**left_over_kwargs)


def _execute_local(*, process_description, shell=False, sigterm_timeout=None, sigkill_timeout=None,
                   emulate_tty=False, output="log", output_format=None, cached_output=False,
                   log_cmd=False, on_exit=None, respawn=False, respawn_delay=None,
                   respawn_max_retries=-1, **kwargs):
    """launch.actions.ExecuteLocal.__init__ (upstream's non-None defaults elided)."""
    if isinstance(output, str) and output not in OUTPUT_ALIASES:
        raise ValueError(f"output={output!r}: not one of {OUTPUT_ALIASES}")
    _action(**kwargs)


def _execute_process(*, cmd, prefix=None, name=None, cwd=None, env=None, additional_env=None,
                     **kwargs):
    """launch.actions.ExecuteProcess.__init__: an Executable from cmd, **kwargs to ExecuteLocal."""
    for item in cmd:
        _substitutions(item)
    _execute_local(process_description=cmd, **kwargs)


def _parameter_dict(params: Mapping) -> None:
    """launch_ros normalize_parameter_dict: the value types it accepts."""
    for name, value in params.items():
        _substitutions(name)
        if isinstance(value, Mapping):
            _parameter_dict(value)
        elif not isinstance(value, (str, Substitution, float, bool, int, bytes, Sequence)):
            raise TypeError(f"Unexpected type for parameter value {value!r}")


def _node(*, executable, package=None, name=None, namespace=None, exec_name=None,
          parameters=None, remappings=None, ros_arguments=None, arguments=None, **kwargs):
    """launch_ros.actions.Node.__init__: builds its own cmd; exec_name is ExecuteProcess's name."""
    if parameters is not None:
        if not isinstance(parameters, list):
            raise TypeError(f"'parameters' must be a list, got {type(parameters)}")
        for item in parameters:
            if isinstance(item, Mapping):
                _parameter_dict(item)
            else:
                _substitutions(item)
    for rule in remappings or ():
        if not isinstance(rule, tuple) or len(rule) != 2:
            raise TypeError(f"remap_rule must be a tuple of length 2, got {rule!r}")
        for side in rule:
            _substitutions(side)
    kwargs["name"] = exec_name
    _execute_process(cmd=[executable, *(arguments or ())], **kwargs)


def _launch_description(initial_entities=None, *, deprecated_reason=None):
    """launch.LaunchDescription.__init__."""


def _launch_configuration(variable_name, *, default=None):
    """launch.substitutions.LaunchConfiguration.__init__."""
    _substitutions(variable_name)


def _path_join_substitution(substitutions):
    """launch.substitutions.PathJoinSubstitution.__init__."""
    for item in substitutions:
        _substitutions(item)


def _find_package(package):
    """launch_ros.substitutions.FindPackage.__init__ (FindPackageShare's)."""
    _substitutions(package)


# --------------------------------------------------------------------------- stand-ins
class Substitution:
    """launch.Substitution: what the substitution stand-ins derive from. A context is a dict."""


class _LaunchConfiguration(Substitution):
    def __init__(self, *args, **kwargs):
        _launch_configuration(*args, **kwargs)
        self.name = args[0] if args else kwargs["variable_name"]

    def perform(self, context):
        return context[self.name]


class _PathJoin(Substitution):
    def __init__(self, *args, **kwargs):
        _path_join_substitution(*args, **kwargs)
        self.parts = list(args[0] if args else kwargs["substitutions"])

    def perform(self, context):
        return os.path.join(*[p.perform(context) if isinstance(p, Substitution) else p
                              for p in self.parts])


class _FindPackageShare(Substitution):
    def __init__(self, *args, **kwargs):
        _find_package(*args, **kwargs)
        self.package = args[0] if args else kwargs["package"]

    def perform(self, context):
        return get_package_share_directory(self.package)  # what upstream's find() calls


class Recorded:
    """An action stand-in: checks its arguments against ``signature``, then keeps them."""

    signature = staticmethod(_action)

    def __init__(self, *args, **kwargs):
        type(self).signature(*args, **kwargs)
        self.args, self.kwargs = args, kwargs


def _recorded(name: str, signature) -> type:
    return type(name, (Recorded,), {"signature": staticmethod(signature)})


def _launch_description_standin(*args, **kwargs) -> list:
    _launch_description(*args, **kwargs)
    return list(args[0] if args else kwargs.get("initial_entities") or ())


def stub_modules(monkeypatch) -> None:
    """Put the stand-ins in sys.modules as launch, launch.actions, ... for one test."""
    mods = {name: types.ModuleType(name) for name in
            ("launch", "launch.actions", "launch.substitutions", "launch_ros", "launch_ros.actions",
             "launch_ros.substitutions")}
    mods["launch"].LaunchDescription = _launch_description_standin
    acts = mods["launch.actions"]
    acts.DeclareLaunchArgument = _recorded("DeclareLaunchArgument", _declare_launch_argument)
    acts.OpaqueFunction = _recorded("OpaqueFunction", _opaque_function)
    acts.ExecuteProcess = _recorded("ExecuteProcess", _execute_process)
    mods["launch.substitutions"].LaunchConfiguration = _LaunchConfiguration
    mods["launch.substitutions"].PathJoinSubstitution = _PathJoin
    mods["launch_ros.actions"].Node = _recorded("Node", _node)
    mods["launch_ros.substitutions"].FindPackageShare = _FindPackageShare
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)


def load_launch_file(path: Path) -> types.ModuleType:
    """Import a launch file as `ros2 launch` does (by path), with whatever `launch` is in sys.modules."""
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_launch(path: Path, monkeypatch, **overrides) -> tuple[dict, list]:
    """``ros2 launch <path> name:=value ...`` against the stand-ins, up to the actions it starts.

    Like launch: command-line arguments first, then each DeclareLaunchArgument in order fills
    in its default (a required one with no value is an error), then each OpaqueFunction runs.

    Returns:
        ``(arguments, started)``: every launch argument's value, and the actions the opaque
        functions returned.
    """
    stub_modules(monkeypatch)
    description = load_launch_file(path).generate_launch_description()
    context = dict(overrides)
    for action in description:
        if isinstance(action, Recorded) and action.signature is _declare_launch_argument:
            name, default = action.args[0], action.kwargs.get("default_value")
            if name not in context:
                if default is None:
                    raise RuntimeError(f'Required launch argument "{name}" was not provided.')
                context[name] = default.perform(context) if isinstance(default, Substitution) \
                    else default
    started = []
    for action in description:
        if isinstance(action, Recorded) and action.signature is _opaque_function:
            started += action.kwargs["function"](context) or []
    return context, started


# --------------------------------------------------------------------------- ros2 bag
def ros2_bag_parser(verb: str) -> argparse.ArgumentParser:
    """The options of ``ros2 bag play|record`` that the replay launch uses, as ros2bag declares them."""
    parser = argparse.ArgumentParser(prog=f"ros2 bag {verb}", exit_on_error=False)
    if verb == "play":
        parser.add_argument("bag_path")
        parser.add_argument("-s", "--storage", default="")
        parser.add_argument("-r", "--rate", type=float, default=1.0)
        parser.add_argument("-l", "--loop", action="store_true")
        parser.add_argument("--clock", type=float, nargs="?", const=40, default=0)
        parser.add_argument("-d", "--delay", type=float, default=0.0)
    elif verb == "record":
        parser.add_argument("-o", "--output")
        parser.add_argument("-s", "--storage")
        topics = parser.add_mutually_exclusive_group()
        topics.add_argument("topics_positional", default=[], nargs="*")  # deprecated in Jazzy
        topics.add_argument("--topics", default=[], nargs="+")
        parser.add_argument("-e", "--regex", default="")
        parser.add_argument("--use-sim-time", action="store_true", default=False)
    else:
        raise ValueError(f"ros2 bag {verb}: not transcribed")
    return parser


def parse_ros2_bag(cmd: list[str]) -> tuple[str, argparse.Namespace]:
    """``(verb, options)`` of a ``ros2 bag`` command line.

    Raises:
        AssertionError: an option that verb does not take.
    """
    assert cmd[:2] == ["ros2", "bag"], cmd
    args, unknown = ros2_bag_parser(cmd[2]).parse_known_args(cmd[3:])
    assert not unknown, f"ros2 bag {cmd[2]} takes no {unknown}: {cmd}"
    return cmd[2], args


# --------------------------------------------------------------------------- installed layout
def setup_kwargs() -> dict:
    """The keyword arguments setup.py hands to ``setuptools.setup`` (run in the repository)."""
    captured = {}
    real_setup, cwd = setuptools.setup, os.getcwd()
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        os.chdir(REPO)
        runpy.run_path(str(REPO / "setup.py"))
    finally:
        setuptools.setup = real_setup
        os.chdir(cwd)
    return captured


def install_data_files(prefix: Path) -> Path:
    """Lay out ``prefix`` as installing setup.py's data_files would (links to the sources).

    Returns:
        ``prefix``, ready for ``AMENT_PREFIX_PATH``.
    """
    for dest, files in setup_kwargs()["data_files"]:
        (prefix / dest).mkdir(parents=True, exist_ok=True)
        for name in files:
            (prefix / dest / Path(name).name).symlink_to(REPO / name)
    return prefix
