"""Launch files, configs and the RViz file, checked without ROS 2 `launch` (not on PyPI).

Each launch file must parse, name the `da3_node` executable that setup.py declares,
point at config files that exist, and pass only parameters the node declares.
The launch logic itself runs against stand-ins of `launch` / `launch_ros` that hold the
upstream constructor signatures (test/_launch_api.py), in a package laid out as setup.py
installs it; where the real `launch` / `launch_ros` are installed it also runs against them.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import yaml
from _launch_api import (
    install_data_files,
    load_launch_file,
    parse_ros2_bag,
    run_launch,
    stub_modules,
)

from da3_ros.launch_args import NODE_ARGUMENTS, flatten_params, launch_arguments, resolve_path
from da3_ros.ros.parameters import CAMERA_SPECS, SPECS, camera_param, check_values

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
CONFIGS = sorted((REPO / "config").glob("da3*.yaml"))
ROS_BUILTIN_PARAMS = {"use_sim_time": bool}
# what every launch file takes (docs/node.md)
SHARED_ARGUMENTS = {"use_sim_time", "autostart", "namespace", "config"}
REPLAY = REPO / "launch" / "da3_bag_replay.launch.py"


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
    if {"NODE_ARGUMENTS", "launch_arguments"} & {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}:
        declared |= {name for name, _, _ in NODE_ARGUMENTS}
    used = {c.args[0].value for c in ast.walk(tree) if isinstance(c, ast.Call)
            and getattr(c.func, "id", "") in ("value", "LaunchConfiguration")
            and c.args and isinstance(c.args[0], ast.Constant)}
    assert used <= declared, f"undeclared launch arguments: {used - declared}"
    assert {"config", "namespace", "remaps"} <= declared
    assert SHARED_ARGUMENTS <= declared
    assert "eval(" not in path.read_text()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parameters_are_declared_with_matching_types(path: Path):
    params = _params_of(path)
    declared = _declared_types(params)
    unknown = sorted(set(params) - set(declared))
    assert not unknown, f"{path.name}: parameters the node does not declare: {unknown}"
    for name, value in params.items():
        want = declared[name]
        # the shipped files are what users copy: exact types (the node would take an integer for a
        # double, but a file that relies on it would mislead)
        assert type(value) is want, (f"{path.name}: {name}={value!r} is {type(value).__name__}, "
                                     f"the node declares {want.__name__}")
    values = {s.name: s.default for s in SPECS} | params
    assert check_values(values) is None, check_values(values)


# --------------------------------------------------------------------------- executing the launch logic
@pytest.fixture(scope="module")
def install_prefix(tmp_path_factory) -> Path:
    """An install prefix as colcon would lay it out from setup.py's data_files."""
    return install_data_files(tmp_path_factory.mktemp("install"))


@pytest.fixture(autouse=True)
def _package_installed(install_prefix, monkeypatch):
    # FindPackageShare (stand-in and real) finds da3_ros through the ament index
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(install_prefix))


def _run_launch(path: Path, monkeypatch, **overrides):
    return run_launch(path, monkeypatch, **overrides)[1]


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


# --------------------------------------------------------------------------- shared arguments, paths
def _share(install_prefix: Path) -> Path:
    return install_prefix / "share" / "da3_ros"


def _with_bag(path: Path, overrides: dict) -> dict:
    """``overrides`` plus the replay's required ``bag`` argument (when not given)."""
    return {"bag": "/tmp/some_bag", **overrides} if path == REPLAY else overrides


def _declared(path: Path, monkeypatch, **overrides) -> dict:
    """Every launch argument of ``path`` with its value, run against the stand-ins."""
    return run_launch(path, monkeypatch, **_with_bag(path, overrides))[0]


def _started(path: Path, monkeypatch, kind: str, **overrides) -> list:
    started = _run_launch(path, monkeypatch, **_with_bag(path, overrides))
    return [a for a in started if type(a).__name__ == kind]


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_launch_file_declares_the_shared_arguments(path: Path, monkeypatch):
    declared = _declared(path, monkeypatch)
    assert SHARED_ARGUMENTS <= set(declared)
    assert {name for name, _, _ in NODE_ARGUMENTS} <= set(declared)
    assert declared["use_sim_time"] == ("true" if path == REPLAY else "false")
    assert declared["autostart"] == "true"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
@pytest.mark.parametrize(("sim", "auto"), [("true", "false"), ("False", "1"), ("0", "TRUE")])
def test_use_sim_time_and_autostart_reach_the_node(path: Path, monkeypatch, sim, auto):
    node = _started(path, monkeypatch, "Node", use_sim_time=sim, autostart=auto)[0]
    assert node.kwargs["parameters"][1] == {"use_sim_time": sim.lower() in ("true", "1"),
                                            "autostart": auto.lower() in ("true", "1")}


@pytest.mark.parametrize("name", ["use_sim_time", "autostart"])
def test_boolean_argument_typo_is_a_clear_error(monkeypatch, name):
    with pytest.raises(ValueError, match=f"{name}:='ture'"):
        _run_launch(REPO / "launch" / "da3.launch.py", monkeypatch, **{name: "ture"})


def test_relative_bag_and_config_are_found_in_the_installed_share(install_prefix, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anywhere but the source tree
    started = _run_launch(REPLAY, monkeypatch, bag="data/room", config="config/da3.yaml")
    node = next(a for a in started if type(a).__name__ == "Node")
    _, play = parse_ros2_bag(next(a for a in started if type(a).__name__ == "ExecuteProcess").kwargs["cmd"])
    assert play.bag_path == str(_share(install_prefix) / "data" / "room")
    assert (Path(play.bag_path) / "metadata.yaml").is_file() and list(Path(play.bag_path).glob("*.mcap"))
    assert node.kwargs["parameters"][0] == str(_share(install_prefix) / "config" / "da3.yaml")


def test_relative_path_in_the_current_directory_comes_first(install_prefix, tmp_path, monkeypatch):
    (tmp_path / "data" / "room").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_path("data/room", _share(install_prefix)) == str(tmp_path / "data" / "room")
    assert resolve_path("/abs/missing", _share(install_prefix)) == "/abs/missing"


def test_relative_path_found_nowhere_names_both_places(install_prefix, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    places = re.escape(f"neither in {tmp_path} nor in {_share(install_prefix)}")
    with pytest.raises(FileNotFoundError, match=places):
        _run_launch(REPLAY, monkeypatch, bag="data/no_such_bag")


def test_replay_runs_ros2_bag_with_options_it_takes(monkeypatch, tmp_path):
    started = _run_launch(REPLAY, monkeypatch, bag=str(tmp_path), record="/tmp/da3_out", loop="true",
                          rate="0.5", delay_s="1.5", namespace="/robot1/")
    procs = [a for a in started if type(a).__name__ == "ExecuteProcess"]
    (_, play), (_, record) = [parse_ros2_bag(p.kwargs["cmd"]) for p in procs]
    assert all(p.kwargs["output"] == "screen" for p in procs)
    assert (play.bag_path, play.rate, play.delay, play.loop) == (str(tmp_path), 0.5, 1.5, True)
    assert play.clock, "the node runs on the bag's /clock"
    assert record.topics_positional == [], "positional topics: deprecated in Jazzy, removed upstream"
    assert record.topics == ["/diagnostics"]
    assert (record.output, record.storage, record.use_sim_time) == ("/tmp/da3_out", "mcap", True)
    assert re.search(record.regex, "/robot1/da3_node/camera/depth")
    for other in ("/robot2/robot1/da3_node/points", "/robot1/da3_node_2/points", "/diagnostics"):
        assert not re.search(record.regex, other), other


def test_replay_on_wall_time_records_on_wall_time(monkeypatch):
    started = _run_launch(REPLAY, monkeypatch, bag="/tmp/some_bag", record="out", use_sim_time="false")
    node, _, record = started
    assert node.kwargs["parameters"][1]["use_sim_time"] is False
    assert parse_ros2_bag(record.kwargs["cmd"])[1].use_sim_time is False
    assert len(_started(REPLAY, monkeypatch, "ExecuteProcess")) == 1, "no record:= -> no recorder"


def test_launch_arguments_table_needs_a_config_and_known_names():
    assert {n: d for n, d, _ in launch_arguments(config="x.yaml")}["config"] == "x.yaml"
    with pytest.raises(ValueError, match="config"):
        launch_arguments(use_sim_time="true")
    with pytest.raises(ValueError, match="bag"):
        launch_arguments(config="x.yaml", bag="b")


def test_node_docs_list_every_launch_argument(monkeypatch):
    section = (REPO / "docs" / "node.md").read_text().split("## Lifecycle")[0]
    missing = {f"{path.name}: {name}" for path in LAUNCH_FILES
               for name in _declared(path, monkeypatch) if f"`{name}:=" not in section}
    assert not missing, f"docs/node.md's launch section misses: {sorted(missing)}"


# --------------------------------------------------------------------------- the stand-ins themselves
@pytest.mark.parametrize(("module", "name", "args", "kwargs"), [
    ("launch_ros.actions", "Node", (), {"executable": "da3_node", "remapings": []}),
    ("launch_ros.actions", "Node", (), {"executable": "da3_node", "parameters": ("a.yaml",)}),
    ("launch_ros.actions", "Node", (), {"executable": "da3_node", "remappings": [["/a", "/b"]]}),
    ("launch_ros.actions", "Node", (), {"executable": "da3_node", "parameters": [{"p": None}]}),
    ("launch_ros.actions", "Node", (), {"executable": "da3_node", "cmd": ["x"]}),
    ("launch_ros.actions", "Node", ("da3_node",), {}),
    ("launch.actions", "ExecuteProcess", (), {"cmd": ["ros2"], "outptu": "screen"}),
    ("launch.actions", "ExecuteProcess", (), {"cmd": ["ros2", 1]}),
    ("launch.actions", "DeclareLaunchArgument", ("x",), {"default": "1"}),
    ("launch.actions", "DeclareLaunchArgument", ("x",), {"default_value": True}),
    ("launch.actions", "OpaqueFunction", (), {"func": print}),
    ("launch.actions", "OpaqueFunction", (), {"function": "print"}),
    ("launch.substitutions", "LaunchConfiguration", ("x",), {"default_value": "1"}),
])
def test_stand_ins_reject_what_upstream_rejects(monkeypatch, module, name, args, kwargs):
    stub_modules(monkeypatch)
    with pytest.raises(TypeError):
        getattr(sys.modules[module], name)(*args, **kwargs)


def test_stand_ins_take_upstream_keywords(monkeypatch):
    stub_modules(monkeypatch)
    from launch.actions import ExecuteProcess
    from launch_ros.actions import Node

    Node(executable="x", package="p", name="n", namespace="ns", exec_name="e", parameters=[{"a": [1.0]}],
         remappings=[("/a", "/b")], ros_arguments=[], arguments=[], output="log", emulate_tty=True,
         respawn=True, respawn_delay=1.0, sigterm_timeout="5", additional_env={"A": "1"}, condition=None)
    ExecuteProcess(cmd=["x"], cwd="/", shell=False, cached_output=True, log_cmd=True, name="x")


# --------------------------------------------------------------------------- the real launch, where installed
def _ros_launch():
    """ROS 2's `launch` where it is installed with `launch_ros` (a ROS install), else None."""
    try:
        import launch
        import launch_ros.actions  # noqa: F401
    except ImportError:
        return None
    return launch if hasattr(launch, "LaunchService") else None  # not PyPI's unrelated `launch`


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files_build_real_actions_where_ros_launch_is_installed(path: Path, install_prefix, tmp_path,
                                                                      monkeypatch):
    launch = _ros_launch()
    if launch is None:
        pytest.skip("ROS 2 launch / launch_ros not installed (not on PyPI); the stand-ins carry "
                    "their signatures")
    from launch.actions import ExecuteProcess, OpaqueFunction
    from launch.utilities import perform_substitutions
    from launch_ros.actions import Node

    monkeypatch.chdir(tmp_path)
    description = load_launch_file(path).generate_launch_description()
    assert isinstance(description, launch.LaunchDescription)
    context = launch.LaunchContext()
    if path == REPLAY:
        context.launch_configurations.update(bag="data/room", record="out")
    started = []
    for entity in description.entities:  # DeclareLaunchArgument fills in defaults, in order
        result = entity.visit(context)
        started += (result or []) if isinstance(entity, OpaqueFunction) else []
    assert SHARED_ARGUMENTS <= {a.name for a in description.get_launch_arguments()}
    nodes = [a for a in started if isinstance(a, Node)]
    assert [(n.node_package, n.node_executable) for n in nodes] == [("da3_ros", "da3_node")]
    commands = [parse_ros2_bag([perform_substitutions(context, part) for part in a.process_description.cmd])
                for a in started if isinstance(a, ExecuteProcess) and not isinstance(a, Node)]
    if path == REPLAY:
        (_, play), (_, record) = commands
        assert play.bag_path == str(_share(install_prefix) / "data" / "room")
        assert record.topics == ["/diagnostics"] and record.topics_positional == []
