"""The node's cameras and the bag's image topics: map them (``--rig``), or check that they match.

- :func:`rig_params`: the node's parameters for every camera of the bag (``cameras``,
  ``camera.<name>.image_topic`` / ``camera_info_topic`` / ``transport``, ``mode``) on top of a base
  params file, so a rig bag replays without a hand-written file.
- :func:`node_image_topics` / :func:`check_params_cover_bag`: the image topics a params file makes the
  node subscribe to, compared with the topics the bag plays, before the node is started: a
  mismatch fails at once instead of after the wait for subscribers.
- :func:`sync_report`: from the image header stamps (read by the bag check), how many time steps of
  the rig have a frame of every camera within ``slop_s``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from da3_ros.dds_env import fastdds_profile_path
from da3_ros.launch_args import flatten_params
from da3_ros.ros.parameters import CAMERA_SPECS, SPEC_BY_NAME
from da3_ros.tools.bag.io import IMAGE_TYPES, CameraTopics
from da3_ros.tools.cli import ToolError

_DEFAULT_IMAGE_TOPIC = next(s.default for s in CAMERA_SPECS if s.name == "image_topic")


def default_params_file() -> Path:
    """The package's ``config/da3_replay.yaml`` (next to the loopback DDS profile)."""
    return fastdds_profile_path().parent / "da3_replay.yaml"


def doc_params(doc) -> dict:
    """Every ``ros__parameters`` block of a params document, merged in order, with flat dotted keys."""
    params: dict = {}
    for block in (doc.values() if isinstance(doc, dict) else []):
        if isinstance(block, dict) and isinstance(block.get("ros__parameters"), dict):
            params.update(flatten_params(block["ros__parameters"]))
    return params


def load_node_params(path: str | Path) -> dict:
    """:func:`doc_params` of a ROS 2 params file (ToolError when it cannot be read)."""
    try:
        return doc_params(yaml.safe_load(Path(path).read_text()) or {})
    except (OSError, yaml.YAMLError) as exc:
        raise ToolError(f"cannot read params file {path}: {exc}") from exc


def slop_s(params: dict) -> float:
    """The node's multi-camera sync tolerance with these (flat) parameters, seconds."""
    return float(params.get("slop_s", SPEC_BY_NAME["slop_s"].default))


def node_image_topics(params: dict) -> dict[str, str]:
    """``{camera: image topic}`` the node subscribes to with these (flat) parameters (root namespace)."""
    out = {}
    for cam in params.get("cameras", SPEC_BY_NAME["cameras"].default):
        topic = str(params.get(f"camera.{cam}.image_topic", _DEFAULT_IMAGE_TOPIC.format(camera=cam)))
        out[cam] = topic if topic.startswith("/") else "/" + topic
    return out


def check_params_cover_bag(params_file: str | Path, image_topics: list[str]) -> None:
    """Raise ToolError unless the node of ``params_file`` subscribes to exactly the played image topics."""
    wanted = node_image_topics(load_node_params(params_file))
    extra = sorted(set(wanted.values()) - set(image_topics))
    unheard = sorted(set(image_topics) - set(wanted.values()))
    if extra or unheard:
        parts = ([f"the bag has no {', '.join(extra)}"] if extra else []) + (
            [f"no camera of the node subscribes to {', '.join(unheard)}"] if unheard else [])
        node = ", ".join(f"{c} <- {t}" for c, t in wanted.items())
        raise ToolError(f"params {params_file} do not match the bag: {'; '.join(parts)} (node cameras: "
                        f"{node}); pass --rig to map the bag's cameras, or --image-topics to play fewer")


def rig_params(cams: list[CameraTopics], base_file: str | Path) -> dict:
    """A params document: ``base_file``'s parameters with the node's cameras set to the bag's ``cams``."""
    doc = yaml.safe_load(Path(base_file).read_text()) or {}
    blocks = [b for b in doc.values() if isinstance(b, dict) and isinstance(b.get("ros__parameters"), dict)]
    if not blocks:
        doc["/**"] = {"ros__parameters": {}}
        blocks = [doc["/**"]]
    params = blocks[-1]["ros__parameters"]
    for b in blocks:  # the camera settings of the base file are replaced, whichever block had them
        for key in ("cameras", "camera", "mode"):
            b["ros__parameters"].pop(key, None)
    params["cameras"] = [c.name for c in cams]
    params["mode"] = "multicam" if len(cams) > 1 else "temporal"
    params["camera"] = {c.name: {"image_topic": c.image, "camera_info_topic": c.camera_info,
                                 "transport": "compressed" if c.image_type == IMAGE_TYPES[1] else "raw"}
                        for c in cams}
    return doc


def sync_report(stamps: dict[str, list[int]], slop_s: float) -> tuple[int, int, float]:
    """How synchronised a rig's image topics are.

    Args:
        stamps: header stamps (ns) per image topic (the first topic is the reference).
        slop_s: tolerance of a set.

    Returns:
        (time steps of the reference with a frame of every other camera within ``slop_s``, time steps
        of the reference, the largest offset in those sets in seconds).
    """
    topics = list(stamps)
    ref = np.sort(np.asarray(stamps[topics[0]], dtype=np.int64))
    matched, worst = np.ones(len(ref), dtype=bool), np.zeros(len(ref))
    for t in topics[1:]:
        other = np.sort(np.asarray(stamps[t], dtype=np.int64))
        if not len(other):
            return 0, len(ref), float("nan")
        j = np.searchsorted(other, ref)  # the nearest stamp of the other camera is other[j - 1] or other[j]
        before, after = other[np.clip(j - 1, 0, len(other) - 1)], other[np.clip(j, 0, len(other) - 1)]
        off = np.minimum(np.abs(before - ref), np.abs(after - ref)) * 1e-9
        matched &= off <= slop_s
        worst = np.maximum(worst, off)
    return int(matched.sum()), len(ref), float(worst[matched].max()) if matched.any() else float("nan")


def rig_summary(cams: list[CameraTopics], stamps: dict[str, list[int]] | None, slop_s: float) -> str:
    """One line for the terminal: which camera gets which topics, and how well they are synchronised."""
    mapped = ", ".join(f"{c.name} <- {c.image}" + (f" (+ {c.camera_info})" if c.camera_info else "")
                       for c in cams)
    line = f"rig: {len(cams)} camera(s), mode {'multicam' if len(cams) > 1 else 'temporal'}: {mapped}"
    if len(cams) > 1 and stamps:
        n, total, worst = sync_report({c.image: stamps.get(c.image, []) for c in cams}, slop_s)
        line += f"; {n}/{total} time steps have every camera within {slop_s * 1e3:.0f} ms"
        line += f" (largest offset {worst * 1e3:.1f} ms)" if n else ""
        if n < total / 2:
            line += ("; NOT synchronised: multicam windows need a frame of every camera per time step "
                     "(raise slop_s in --params, or play one camera with --image-topics)")
    return line
