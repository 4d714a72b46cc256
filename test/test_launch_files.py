"""Launch files, configs and the RViz file, checked without ROS 2 `launch` (not on PyPI).

Each launch file must parse, name the `da3_node` executable that setup.py declares,
point at config files that exist, and pass only parameters the node declares.
The launch logic itself runs against small stand-ins of `launch` / `launch_ros`
that record what would be started.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml

from da3_ros.launch_args import flatten_params
from da3_ros.ros.parameters import CAMERA_SPECS, SPECS, camera_param, check_values

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
CONFIGS = sorted((REPO / "config").glob("da3*.yaml"))
ROS_BUILTIN_PARAMS = {"use_sim_time": bool}


def _console_scripts() -> dict[str, str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            scripts = ast.literal_eval(node.value)["console_scripts"]
            return dict(s.replace(" ", "").split("=", 1) for s in scripts)
    raise AssertionError("setup.py declares no entry_points")


def _params_of(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and len(data) == 1, f"{path.name}: one node section expected"
    section = next(iter(data.values()))
    return flatten_params(section["ros__parameters"])


def _declared_types(params: dict) -> dict[str, type]:
    """Parameter name -> python type the node declares, for these values' camera list."""
    types_ = {s.name: (list if s.array_of else type(s.default)) for s in SPECS}
    types_.update(ROS_BUILTIN_PARAMS)
    for cam in params.get("cameras", SPECS[[s.name for s in SPECS].index("cameras")].default):
        for spec in CAMERA_SPECS:
            types_[camera_param(cam, spec.name)] = type(spec.default)
    return types_


def test_launch_and_config_files_exist():
    names = {p.name for p in LAUNCH_FILES}
    assert {"da3.launch.py", "da3_multicam.launch.py", "da3_bag_replay.launch.py"} <= names
    assert {"da3.yaml", "da3_multicam.yaml", "da3_replay.yaml"} <= {p.name for p in CONFIGS}
    assert (REPO / "rviz" / "da3.rviz").is_file()


def test_console_script_declared_and_importable():
    target = _console_scripts()["da3_node"]
    assert target == "da3_ros.ros.entry:da3_node"
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func))
    assert (Path(sys.executable).parent / "da3_node").is_file(), "console script not installed in the venv"


class _InterruptImport:
    """A meta-path finder that raises KeyboardInterrupt on importing one module (a SIGINT then)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, name, path=None, target=None):
        if name == self.name:
            raise KeyboardInterrupt
        return None


def test_console_script_stops_cleanly_when_interrupted_while_importing_ros(monkeypatch):
    from da3_ros.ros import entry

    monkeypatch.delitem(sys.modules, "da3_ros.ros.node", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_InterruptImport("da3_ros.ros.node"), *sys.meta_path])
    try:
        code = entry.da3_node([])
    except KeyboardInterrupt:  # would otherwise abort the whole pytest session
        pytest.fail("a SIGINT while importing the node escaped as KeyboardInterrupt")
    assert code == 0


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_static(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    consts = {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    assert consts["PACKAGE"] == "da3_ros"
    assert consts["EXECUTABLE"] in _console_scripts()
    assert (REPO / "config" / consts["DEFAULT_CONFIG"]).is_file()
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs
    declared = {c.args[0].value for c in ast.walk(tree) if isinstance(c, ast.Call)
                and getattr(c.func, "id", "") == "DeclareLaunchArgument"
                and isinstance(c.args[0], ast.Constant)}
    if "NODE_ARGUMENTS" in {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}:
        from da3_ros.launch_args import NODE_ARGUMENTS

        declared |= {name for name, _, _ in NODE_ARGUMENTS}
    used = {c.args[0].value for c in ast.walk(tree) if isinstance(c, ast.Call)
            and getattr(c.func, "id", "") in ("value", "LaunchConfiguration")
            and c.args and isinstance(c.args[0], ast.Constant)}
    assert used <= declared, f"undeclared launch arguments: {used - declared}"
    assert {"config", "namespace", "remaps"} <= declared
    assert "eval(" not in path.read_text()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parameters_are_declared_with_matching_types(path: Path):
    params = _params_of(path)
    declared = _declared_types(params)
    unknown = sorted(set(params) - set(declared))
    assert not unknown, f"{path.name}: parameters the node does not declare: {unknown}"
    for name, value in params.items():
        want = declared[name]
        # rclpy refuses an integer for a double parameter (and the reverse): types must match exactly
        assert type(value) is want, (f"{path.name}: {name}={value!r} is {type(value).__name__}, "
                                     f"the node declares {want.__name__}")
    values = {s.name: s.default for s in SPECS} | params
    assert check_values(values) is None, check_values(values)


# --------------------------------------------------------------------------- executing the launch logic
class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


class _PathJoin:
    def __init__(self, parts):
        self.parts = parts

    def perform(self, context):
        return str(Path(*[p.perform(context) if hasattr(p, "perform") else p for p in self.parts]))


class _FindPackageShare:
    def __init__(self, package):
        assert package == "da3_ros"

    def perform(self, context):
        return str(REPO)  # the source tree mirrors share/da3_ros (config/, launch/, rviz/)


def _stub_modules(monkeypatch):
    mods = {name: types.ModuleType(name) for name in
            ("launch", "launch.actions", "launch.substitutions", "launch_ros", "launch_ros.actions",
             "launch_ros.substitutions")}
    mods["launch"].LaunchDescription = lambda actions: list(actions)
    acts = mods["launch.actions"]
    acts.DeclareLaunchArgument = type("DeclareLaunchArgument", (_Recorded,), {})
    acts.OpaqueFunction = type("OpaqueFunction", (_Recorded,), {})
    acts.ExecuteProcess = type("ExecuteProcess", (_Recorded,), {})
    mods["launch.substitutions"].LaunchConfiguration = _LaunchConfiguration
    mods["launch.substitutions"].PathJoinSubstitution = _PathJoin
    mods["launch_ros.actions"].Node = type("Node", (_Recorded,), {})
    mods["launch_ros.substitutions"].FindPackageShare = _FindPackageShare
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)


def _run_launch(path: Path, monkeypatch, **overrides):
    _stub_modules(monkeypatch)
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    context = {}
    for action in description:
        if type(action).__name__ == "DeclareLaunchArgument":
            default = action.kwargs.get("default_value")
            context[action.args[0]] = default.perform(context) if hasattr(default, "perform") else default
    context.update(overrides)
    started = []
    for action in description:
        if type(action).__name__ == "OpaqueFunction":
            started += action.kwargs["function"](context)
    return started


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_logic_starts_da3_node_with_declared_parameters(path: Path, monkeypatch):
    overrides = {"bag": "/tmp/some_bag"} if "bag" in path.name else {}
    overrides.update(namespace="robot1", remaps="/a:=/b ~/points:=/cloud")
    started = _run_launch(path, monkeypatch, **overrides)
    nodes = [a for a in started if type(a).__name__ == "Node"]
    assert len(nodes) == 1
    kw = nodes[0].kwargs
    assert kw["package"] == "da3_ros" and kw["executable"] == "da3_node"
    assert kw["namespace"] == "robot1"
    assert ("/a", "/b") in kw["remappings"] and ("~/points", "/cloud") in kw["remappings"]
    config, overrides_dict, launch_overrides = kw["parameters"]
    assert Path(config).is_file(), config
    declared = _declared_types(_params_of(Path(config)))
    assert set(overrides_dict) <= set(declared)
    assert launch_overrides == {}, "empty model/device arguments must keep the params file's values"
    if "bag" in path.name:
        assert overrides_dict["use_sim_time"] is True
        play = [a for a in started if type(a).__name__ == "ExecuteProcess"][0].kwargs["cmd"]
        assert play[:4] == ["ros2", "bag", "play", "/tmp/some_bag"] and "--clock" in play


def test_single_camera_launch_remaps_the_config_topics(monkeypatch):
    path = REPO / "launch" / "da3.launch.py"
    node = _run_launch(path, monkeypatch, image_topic="/cam/img", camera_info_topic="/cam/info")[0]
    params = _params_of(REPO / "config" / "da3.yaml")
    remaps = dict(node.kwargs["remappings"])
    assert remaps[params["camera.camera.image_topic"]] == "/cam/img"
    assert remaps[params["camera.camera.camera_info_topic"]] == "/cam/info"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_model_and_device_arguments_override_the_params_file(path: Path, monkeypatch):
    overrides = {"bag": "/tmp/some_bag"} if "bag" in path.name else {}
    started = _run_launch(path, monkeypatch, model="/weights/DA3-LARGE", device="cuda", **overrides)
    node = [a for a in started if type(a).__name__ == "Node"][0]
    assert node.kwargs["parameters"][-1] == {"model": "/weights/DA3-LARGE", "device": "cuda"}
    declared = _declared_types(_params_of(Path(node.kwargs["parameters"][0])))
    assert {"model", "device"} <= set(declared)


def test_bad_remap_argument_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="from:=to"):
        _run_launch(REPO / "launch" / "da3.launch.py", monkeypatch, remaps="/a/b")


def test_rviz_config_shows_node_outputs_in_fixed_frame():
    rviz = yaml.safe_load((REPO / "rviz" / "da3.rviz").read_text())
    manager = rviz["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "da3_odom"
    topics = {d["Class"].split("/")[-1]: d.get("Topic", {}).get("Value") for d in manager["Displays"]}
    params = _params_of(REPO / "config" / "da3.yaml")
    cam = params["cameras"][0]
    assert topics["PointCloud2"] == "/da3_node/points"
    assert topics["Path"] == "/da3_node/path"
    assert topics["Pose"] == f"/da3_node/{cam}/pose"
    images = [d["Topic"]["Value"] for d in manager["Displays"] if d["Class"].endswith("/Image")]
    assert params[f"camera.{cam}.image_topic"] in images
    assert f"/da3_node/{cam}/depth_colored" in images


def test_node_docs_list_every_parameter():
    text = (REPO / "docs" / "node.md").read_text()
    missing = [s.name for s in SPECS if f"`{s.name}`" not in text]
    missing += [s.name for s in CAMERA_SPECS if f"`camera.<name>.{s.name}`" not in text]
    assert not missing, f"docs/node.md misses parameters: {missing}"
