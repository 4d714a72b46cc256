"""The package layout: dependencies point one way, no import cycles, core/ holds only runtime code.

ARCHITECTURE: ``model`` <- ``core`` <- ``sim`` / ``inference`` <- ``evaluation`` / ``ros`` /
``training`` <- ``tools``. Imports are read from the source (module level and inside
functions alike), so a cycle cannot hide behind a function-level import.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "da3_ros"

#: subpackage -> the subpackages it may import (itself always).
ALLOWED = {
    "model": set(),
    "core": {"model"},
    "sim": {"core", "model"},
    "inference": {"core", "model"},
    "evaluation": {"core", "model", "inference"},
    "training": {"core", "model", "inference", "sim", "evaluation"},
    "ros": {"core", "model", "inference"},
    "tools": {"core", "model", "inference", "sim", "evaluation", "ros"},
}
#: Single modules allowed one more dependency, with the reason.
EXCEPTIONS = {
    "da3_ros.ros.truth_topics": {"sim"},  # TEST AID: the ground-truth stand-in's topic feed
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every da3_ros module ``path`` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("da3_ros"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("da3_ros"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # "from pkg import mod" names a module; "from mod import func" names the module itself
        graph[name] = {m if m in modules else m.rsplit(".", 1)[0] for m in _imports(path)}
        graph[name] = {m for m in graph[name] if m in modules and m != name}
    return graph


def test_dependencies_point_one_way():
    bad = []
    for name, deps in _graph().items():
        parts = name.split(".")
        if len(parts) < 3:
            continue
        sub = parts[1]
        allowed = ALLOWED.get(sub, set()) | {sub} | EXCEPTIONS.get(name, set())
        for dep in deps:
            dep_sub = dep.split(".")[1] if dep.count(".") >= 1 else ""
            if dep_sub in ALLOWED and dep_sub not in allowed:
                bad.append(f"{name} -> {dep}")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, ()):
            if dep.startswith(node + "."):
                continue  # a package __init__ importing its own modules is not a cycle
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_nothing_outside_ros_and_tools_imports_rclpy():
    for path in PKG.rglob("*.py"):
        name = _module_name(path)
        if name.count(".") and name.split(".")[1] in ("ros", "tools"):
            continue
        tree = ast.parse(path.read_text())
        roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        roots |= {n.module.split(".")[0] for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) and n.module}
        assert not roots & {"rclpy", "sensor_msgs", "geometry_msgs", "std_msgs"}, name


_RUNTIME_PROBE = r"""
import json, logging, sys
import numpy as np
from da3_ros.core.frames import Frame
from da3_ros.ros import node  # the node's module, as da3_node imports it
from da3_ros.inference.build import build_engine
from da3_ros.inference.settings import InferenceSettings
from da3_ros.core.config import PipelineConfig
from da3_ros.core.pipeline import AsyncPipeline

settings = InferenceSettings(model="da3-tiny", device="cpu", process_res=56)
engine, _ = build_engine(settings, logging.getLogger("x"))
results = []
p = AsyncPipeline(PipelineConfig(num_view=2, stride=1), engine, on_result=results.append)
p.start()
rng = np.random.default_rng(0)
for i in range(3):
    p.submit(Frame(image=rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), stamp_ns=i + 1))
p.close(timeout_s=60)
assert results, "no window ran"
print(json.dumps(sorted(m for m in sys.modules if m.startswith("da3_ros"))))
"""


def test_core_holds_only_what_the_node_runs():
    """Every core module is loaded by the node's runtime path; sim/ and evaluation/ never are."""
    out = subprocess.run([sys.executable, "-c", _RUNTIME_PROBE], capture_output=True, text=True, timeout=240,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    core = {_module_name(p) for p in (PKG / "core").glob("*.py")}
    assert core - loaded == set(), f"core modules the node never imports: {sorted(core - loaded)}"
    assert not {m for m in loaded if m.startswith(("da3_ros.sim", "da3_ros.evaluation", "da3_ros.tools"))}


def test_parameter_table_imports_without_torch():
    """The node's parameters (and so ``da3_node --help`` and start-up) need no torch."""
    code = "import sys, da3_ros.ros.parameters; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
