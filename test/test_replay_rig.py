"""da3-replay of a rig bag without a hand-written params file; a wrong params file found fast (issue 16)."""

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from _bags import DATA, run_tool

from da3_ros.tools.bag.io import BagReader, find_cameras
from da3_ros.tools.cli import ToolError
from da3_ros.tools.replay.rig import (
    check_params_cover_bag,
    node_image_topics,
    rig_params,
    rig_summary,
    sync_report,
)

BIN = Path(sys.executable).parent
STEREO, STREET = DATA / "real_camera" / "stereo_mono8", DATA / "real_camera" / "street_jpeg"
MODEL = DATA.parents[1] / "data" / "models" / "da3-tiny-synth"
needs_node = pytest.mark.skipif(not (BIN / "da3_node").exists(), reason="da3_node console script missing")


def _domain(k):
    return 1 + (os.getpid() * 11 + 37 * k) % 100


def _base(tmp_path) -> Path:
    """A params file for one camera on /camera/image_raw: the wrong file for the stereo bag."""
    params = {"model": str(MODEL), "process_res": 56, "device": "cpu", "num_view": 2, "stride": 1,
              "warmup": False, "input_qos": "reliable", "input_queue_depth": 50, "queue_size": 16,
              "diagnostics_period_s": 0.5, "cameras": ["camera"],
              "camera": {"camera": {"image_topic": "/camera/image_raw"}}}
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    return path


@needs_node
def test_rig_maps_the_bags_cameras_says_so_and_replays(tmp_path):
    out = tmp_path / "out"
    res, _ = run_tool("da3-replay", STEREO, "--out", out, "--spawn-node", "--params", _base(tmp_path),
                      "--rig", "--rate", 0.5, "--settle", 3, "--quiet", "--domain-id", _domain(1),
                      cwd=tmp_path, domain=_domain(1), timeout=240)
    assert res.returncode == 0, res.stderr + (out / "node.log").read_text(errors="replace")[-2000:]
    assert ("da3-replay: rig: 2 camera(s), mode multicam: stereo_left <- /stereo/left/image_raw (+ "
            "/stereo/left/camera_info), stereo_right <- /stereo/right/image_raw (+ "
            "/stereo/right/camera_info); 6/6 time steps have every camera within 20 ms (largest offset "
            "1.0 ms)") in res.stdout
    params = yaml.safe_load((out / "node_params.yaml").read_text())["/**"]["ros__parameters"]
    assert params["cameras"] == ["stereo_left", "stereo_right"] and params["mode"] == "multicam"
    assert params["camera"]["stereo_right"] == {"image_topic": "/stereo/right/image_raw",
                                               "camera_info_topic": "/stereo/right/camera_info",
                                               "transport": "raw"}
    assert params["model"] == str(MODEL) and params["process_res"] == 56  # the rest of --params kept
    r = json.loads((out / "report.json").read_text())
    assert r["inputs"] == 12 and r["node"]["received"] == 12 and r["all_accounted"] is True
    assert r["inputs_by_camera"] == {"stereo_left": 6, "stereo_right": 6}
    with BagReader(out / "recorded") as rec:
        for cam in ("stereo_left", "stereo_right"):
            assert rec.topics[f"/da3_node/{cam}/pose"][1] > 0


def test_wrong_params_file_fails_before_the_node_starts(tmp_path):
    res, wall = run_tool("da3-replay", STEREO, "--out", tmp_path / "out", "--spawn-node", "--params",
                         _base(tmp_path), "--quiet", cwd=tmp_path, domain=_domain(2))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1, res.stderr
    assert "do not match the bag: the bag has no /camera/image_raw" in lines[0] and "pass --rig" in lines[0]
    assert wall < 15 and not (tmp_path / "out").exists()


@needs_node
def test_node_on_other_topics_fails_after_the_short_wait(tmp_path):
    node = f"{BIN / 'da3_node'} --ros-args --params-file {_base(tmp_path)}"
    res, wall = run_tool("da3-replay", STEREO, "--out", tmp_path / "out", "--node-cmd", node, "--quiet",
                         "--wait-subscribers", 3, "--domain-id", _domain(3), cwd=tmp_path, domain=_domain(3))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1, res.stderr
    assert "no subscriber on /stereo/left/image_raw, /stereo/right/image_raw" in lines[0]
    assert "node /da3_node is up but subscribes to /camera/image_raw" in lines[0]
    assert wall < 60, wall  # node start-up plus --wait-subscribers, not --wait-ready's 120 s


def test_rig_params_node_topics_and_sync():
    with BagReader(STREET) as r:
        cams = find_cameras(r)
    doc = rig_params(cams, Path(__file__).resolve().parents[1] / "config" / "da3_replay.yaml")
    p = doc["/**"]["ros__parameters"]
    assert p["cameras"] == ["street"] and p["mode"] == "temporal"
    assert p["camera"]["street"]["transport"] == "compressed"
    assert p["camera"]["street"]["image_topic"] == "/street/image_raw/compressed"
    assert node_image_topics({"cameras": ["a", "b"], "camera.b.image_topic": "x/img"}) == {
        "a": "/a/image_raw", "b": "/x/img"}  # node defaults, relative names in the root namespace
    assert node_image_topics({}) == {"camera": "/camera/image_raw"}
    s = 10**9
    assert sync_report({"l": [0, s, 2 * s], "r": [1_000_000, s + 2_000_000, 2 * s + 500_000_000]}, 0.02) == (
        2, 3, pytest.approx(0.002))
    other = replace(cams[0], name="b", image="/b/image_raw")  # half a period late: never within slop
    stamps = {cams[0].image: [0, s, 2 * s], other.image: [s // 2, 3 * s // 2]}
    line = rig_summary([cams[0], other], stamps, 0.02)
    assert "b <- /b/image_raw" in line and "0/3 time steps" in line and "NOT synchronised" in line


def test_params_check_accepts_a_matching_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"da3_node": {"ros__parameters": {
        "cameras": ["left", "right"], "camera": {"left": {"image_topic": "/stereo/left/image_raw"},
                                                 "right": {"image_topic": "/stereo/right/image_raw"}}}}}))
    both = ["/stereo/left/image_raw", "/stereo/right/image_raw"]
    check_params_cover_bag(good, both)
    with pytest.raises(ToolError, match="the bag has no /stereo/right/image_raw"):
        check_params_cover_bag(good, both[:1])
    with pytest.raises(ToolError, match="no camera of the node subscribes to /x/image_raw"):
        check_params_cover_bag(good, [*both, "/x/image_raw"])
