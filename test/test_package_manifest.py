"""package.xml declares exactly the ROS packages the code imports (and setup.py installs its files)."""

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# ROS packages the code needs without importing them by name: rclpy.lifecycle loads
# lifecycle_msgs itself.
NEEDED_WITHOUT_IMPORT = {"lifecycle_msgs"}
ROSDEP_KEY_OF_IMPORT = {"tf2_ros": "tf2_ros_py"}


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


def test_ros_dependencies_match_imports():
    declared = _exec_depends()
    ros_declared = {d for d in declared if not d.startswith("python3-")}
    imported = {ROSDEP_KEY_OF_IMPORT.get(m, m) for m in _imported_modules()}
    ros_imported = {m for m in imported if m in ros_declared or m.endswith(("_msgs", "_interfaces"))
                    or m in ("rclpy", "launch", "launch_ros", "ament_index_python", "tf2_ros_py")}
    assert ros_imported <= ros_declared, f"imported but not in package.xml: {ros_imported - ros_declared}"
    unused = ros_declared - ros_imported - NEEDED_WITHOUT_IMPORT
    assert not unused, f"declared in package.xml but never imported: {unused}"


def test_python_dependencies_are_declared():
    declared = _exec_depends()
    imported = _imported_modules()
    keys = {"numpy": "python3-numpy", "yaml": "python3-yaml", "cv2": "python3-opencv",
            "scipy": "python3-scipy", "matplotlib": "python3-matplotlib", "tqdm": "python3-tqdm"}
    for module, key in keys.items():
        if module in imported:
            assert key in declared, f"{module} is imported: package.xml needs {key}"
