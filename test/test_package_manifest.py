"""package.xml declares exactly the ROS packages the code imports or runs, with rosdep keys only.

Imported: every top-level module the package and its launch files import. Run: the launch files
themselves (`ros2 launch`), each `ros2 <verb>` command line a launch file builds, and the rosbag2
storage plugins those bag commands need (what they write, and what the bags shipped to be played
are stored in).
"""

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
# ROS packages the code needs without importing them by name: rclpy.lifecycle loads
# lifecycle_msgs itself.
NEEDED_WITHOUT_IMPORT = {"lifecycle_msgs"}
ROSDEP_KEY_OF_IMPORT = {"tf2_ros": "tf2_ros_py"}
# The package providing each `ros2 <verb>` (ros2/launch_ros: ros2launch, ros2/rosbag2: ros2bag).
ROS2_VERB_PACKAGE = {"launch": "ros2launch", "bag": "ros2bag"}
# rosbag2's storage plugin package of each storage id (ros2/rosbag2).
STORAGE_PLUGIN_PACKAGE = {"mcap": "rosbag2_storage_mcap", "sqlite3": "rosbag2_storage_sqlite3"}


def _imported_modules() -> set[str]:
    names = set()
    for path in list((REPO / "da3_ros").rglob("*.py")) + list((REPO / "launch").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def _exec_depends() -> set[str]:
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3"
    return {e.text for e in root.findall("exec_depend")}


def _ros2_command_lines(path: Path) -> list[list]:
    """The ``ros2 ...`` list literals of a launch file: strings (module constants resolved), else None."""
    tree = ast.parse(path.read_text())
    consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
              and isinstance(n.value, ast.Constant) for t in n.targets if isinstance(t, ast.Name)}

    def text(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        return consts.get(node.id) if isinstance(node, ast.Name) else None

    return [[text(e) for e in node.elts] for node in ast.walk(tree)
            if isinstance(node, ast.List) and node.elts and text(node.elts[0]) == "ros2"]


def _shipped_bag_storages() -> set[str]:
    """Storage ids of the bags the package ships (data/*/metadata.yaml), which the replay plays."""
    return {yaml.safe_load(m.read_text())["rosbag2_bagfile_information"]["storage_identifier"]
            for m in (REPO / "data").glob("*/metadata.yaml")}


def _run_dependencies() -> set[str]:
    """rosdep keys of what the package runs rather than imports."""
    run = {ROS2_VERB_PACKAGE["launch"]} if LAUNCH_FILES else set()
    for cmd in (c for path in LAUNCH_FILES for c in _ros2_command_lines(path)):
        assert cmd[1] in ROS2_VERB_PACKAGE, f"which package provides `ros2 {cmd[1]}`? {cmd}"
        run.add(ROS2_VERB_PACKAGE[cmd[1]])
        if cmd[1] == "bag":
            storages = {cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a in ("-s", "--storage")}
            storages |= _shipped_bag_storages() if cmd[2] == "play" else set()
            assert None not in storages, f"a storage given at run time cannot be checked: {cmd}"
            run |= {STORAGE_PLUGIN_PACKAGE[s] for s in storages}
    return run


def test_ros_dependencies_match_imports():
    declared = _exec_depends()
    ros_declared = {d for d in declared if not d.startswith("python3-")}
    imported = {ROSDEP_KEY_OF_IMPORT.get(m, m) for m in _imported_modules()}
    ros_imported = {m for m in imported if m in ros_declared or m.endswith(("_msgs", "_interfaces"))
                    or m in ("rclpy", "launch", "launch_ros", "ament_index_python", "tf2_ros_py")}
    assert ros_imported <= ros_declared, f"imported but not in package.xml: {ros_imported - ros_declared}"
    unused = ros_declared - ros_imported - NEEDED_WITHOUT_IMPORT - _run_dependencies()
    assert not unused, f"declared in package.xml but never imported (nor run): {unused}"


def test_what_the_launch_files_run_is_declared():
    run = _run_dependencies()
    # the replay launch runs `ros2 bag play` on the shipped mcap bags and `ros2 bag record --storage mcap`
    assert {"ros2launch", "ros2bag", "rosbag2_storage_mcap"} <= run
    missing = run - _exec_depends()
    assert not missing, f"run by the launch files but not in package.xml: {missing}"


def test_manifest_has_the_ament_python_shape():
    """As `ros2 pkg create --build-type ament_python` writes it (ros2/ros2cli ros2pkg/verb/create.py).

    ament_python is the build type, declared only in <export>: it is not a rosdep key, and
    `rosdep install --from-paths src` fails on it with "Cannot locate rosdep definition".
    """
    root = ET.parse(REPO / "package.xml").getroot()
    assert [e.text for e in root.findall("export/build_type")] == ["ament_python"]
    assert root.findall("buildtool_depend") == [], "ament_python packages declare no buildtool_depend"
    depends = [e.text for e in root if e.tag.endswith("depend")]
    assert "ament_python" not in depends, "ament_python is not a rosdep key"
    assert "python3-pytest" in {e.text for e in root.findall("test_depend")}


def test_python_dependencies_are_declared():
    declared = _exec_depends()
    imported = _imported_modules()
    keys = {"numpy": "python3-numpy", "yaml": "python3-yaml", "cv2": "python3-opencv",
            "scipy": "python3-scipy", "matplotlib": "python3-matplotlib", "tqdm": "python3-tqdm"}
    for module, key in keys.items():
        if module in imported:
            assert key in declared, f"{module} is imported: package.xml needs {key}"
