"""The node's parameters for a bench run and the command that starts it.

Parameters: a ROS 2 params file (``/**: ros__parameters: ...``, nested or dotted names), then
``--set key=value`` overrides (values parsed as YAML), then the synthetic camera's topics, which
the bench always sets: one camera is ``camera`` (``/camera/image_raw``, ``/camera/camera_info``,
as ``config/da3.yaml``), a rig of N is ``cam0`` .. ``cam<N-1>`` (``/cam<i>/...``). Everything is
written flat (dotted names) under ``/**`` so the node reads exactly what the report shows.

Node command: the ``da3_node`` console script beside ``sys.executable`` when it exists, else
``python -c 'from da3_ros.ros.entry import da3_node; ...'`` (the GPU machine: ROS from wheels
without console scripts); ``--node-cmd`` overrides the program; ``--node upstream`` runs
:mod:`bench.live.upstream_wrapper`, ``--node sink`` the stand-in :mod:`bench.live.sink`. The
bench appends ``--ros-args --params-file FILE``.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import yaml

from da3_ros.launch_args import flatten_params

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PARAMS = REPO / "config" / "da3.yaml"
NODE_NAMES = {"da3": "da3_node", "upstream": "da3_upstream_wrapper", "sink": "da3_bench_sink"}
NODE_MODULES = {"upstream": "bench.live.upstream_wrapper", "sink": "bench.live.sink"}
ENTRY_SNIPPET = "from da3_ros.ros.entry import da3_node; import sys; sys.exit(da3_node())"


def read_params_file(path: str | Path) -> dict:
    """Flat parameters of the first node section of a ROS 2 params file (``/**`` or a node name)."""
    doc = yaml.safe_load(Path(path).read_text()) or {}
    for section in doc.values():
        if isinstance(section, dict) and "ros__parameters" in section:
            return flatten_params(section["ros__parameters"])
    raise ValueError(f"{path}: no ros__parameters section")


def parse_sets(items: list[str]) -> dict:
    """``["key=value", ...]`` -> ``{key: yaml value}`` (``num_view=8`` an int, ``accelerate=off`` a str)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set wants key=value, got {item!r}")
        value = yaml.safe_load(raw) if raw.strip() else ""
        if isinstance(value, bool) and raw.strip().lower() in ("off", "on", "yes", "no"):
            value = raw.strip()  # YAML 1.1 booleans: keep words like accelerate=off as strings
        out[key.strip()] = value
    return out


def camera_names(n: int) -> list[str]:
    """``["camera"]`` for one camera, ``["cam0", ..., "cam<n-1>"]`` for a rig."""
    if n < 1:
        raise ValueError("--cameras must be >= 1")
    return ["camera"] if n == 1 else [f"cam{i}" for i in range(n)]


def bench_params(params_file: str | Path | None, sets: dict, cameras: list[str]) -> dict:
    """The node's flat parameters: file, overrides, then the synthetic cameras' topics."""
    params = read_params_file(params_file or DEFAULT_PARAMS)
    params.update(sets)
    params = {k: v for k, v in params.items() if not k.startswith("camera.")}
    params.update({k: v for k, v in sets.items() if k.startswith("camera.") and k.split(".")[1] in cameras})
    params["cameras"] = list(cameras)
    for cam in cameras:
        params[f"camera.{cam}.image_topic"] = f"/{cam}/image_raw"
        params[f"camera.{cam}.camera_info_topic"] = f"/{cam}/camera_info"
    return params


def write_params(params: dict, path: Path) -> Path:
    """Write flat ``params`` under ``/**: ros__parameters`` to ``path``."""
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=True))
    return path


def node_command(kind: str, params_path: Path, node_cmd: str = "") -> list[str]:
    """The command line that starts ``kind`` (``da3``, ``upstream`` or ``sink``) with ``params_path``."""
    if node_cmd:
        prog = shlex.split(node_cmd)
    elif kind in NODE_MODULES:
        prog = [sys.executable, "-m", NODE_MODULES[kind]]
    elif kind == "da3":
        exe = Path(sys.executable).parent / "da3_node"
        prog = [str(exe)] if exe.exists() else [sys.executable, "-c", ENTRY_SNIPPET]
    else:
        raise ValueError(f"--node must be one of {', '.join(NODE_NAMES)}, got {kind!r}")
    return [*prog, "--ros-args", "--params-file", str(params_path)]
