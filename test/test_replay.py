"""da3-replay over real DDS (loopback) into a da3_node it spawns: every message accounted for."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _bags import chunk_compression

from da3_ros.dds_env import loopback_env
from da3_ros.tools.bag.io import BagReader
from da3_ros.tools.synth import synthesize

BIN = Path(sys.executable).parent
N = 20
pytestmark = pytest.mark.skipif(not (BIN / "da3_node").exists(), reason="da3_node console script missing")


def _domain(k):
    return 1 + (os.getpid() * 7 + 53 * k) % 100


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "room"
    synthesize(path, frames=N, seed=2, width=96, height=72)
    return path


def _params(tmp_path):
    params = {"model": "truth", "cameras": ["camera"], "camera.camera.image_topic": "/camera/image_raw",
              "camera.camera.camera_info_topic": "/camera/camera_info", "input_qos": "reliable",
              "input_queue_depth": 100, "num_view": 4, "stride": 2, "queue_size": 64,
              "diagnostics_period_s": 0.5, "warmup": False}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    return path


def _replay(tmp_path, bag, domain, *extra, timeout=240):
    env = loopback_env(domain, log_dir=str(tmp_path / "ros_logs"))
    cmd = [str(BIN / "da3-replay"), str(bag), "--out", str(tmp_path / "out"), "--domain-id", str(domain),
           "--quiet", *map(str, extra)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)


def test_replay_accounts_for_every_message(tmp_path, bag):
    res = _replay(tmp_path, bag, _domain(1), "--spawn-node", "--params", _params(tmp_path), "--settle", 3,
                  "--record-stride", 1)
    out = tmp_path / "out"
    assert res.returncode == 0, res.stderr + (out / "node.log").read_text(errors="replace")[-3000:]
    r = json.loads((out / "report.json").read_text())
    node = r["node"]
    assert r["inputs"] == N and node["received"] == N and r["all_accounted"] is True
    # every input ends as an output the recorder got, or as a drop / pending frame the node reports
    assert r["outputs_matched"] == node["processed"] and r["lost_in_transport"] == 0
    assert r["outputs_matched"] + node["drops_total"] + node["pending"] == N
    assert r["inputs_without_output"] == node["drops_total"] + node["pending"]
    assert r["outputs_unmatched"] == 0 and r["outputs_matched"] >= N // 2
    assert r["latency_ms"]["n"] == r["outputs_matched"] and 0 < r["latency_ms"]["mean"] < 60_000
    # the recorded bag holds exactly one depth per input with output, stamped like that input
    rows = [line.split(",") for line in (out / "latency.csv").read_text().splitlines()[1:]]
    assert len({int(row[1]) for row in rows}) == N
    answered = {int(row[1]) for row in rows if row[4]}
    with BagReader(out / "recorded") as rec:
        assert rec.topics["/da3_node/camera/depth"][1] == r["outputs_matched"]
        assert rec.topics["/diagnostics"][1] > 0
        stamps = set()
        for topic, _, raw in rec.messages(["/da3_node/camera/depth"]):
            m = rec.decode(raw, rec.msgtype(topic))
            stamps.add(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec)
    assert stamps == answered
    assert r["node_exit_code"] == 0  # the spawned node stopped cleanly
    assert not (out / "PARTIAL").exists()  # a finished run is not marked partial


def test_replay_loop_samples_memory_and_accounts(tmp_path, bag):
    res = _replay(tmp_path, bag, _domain(2), "--spawn-node", "--params", _params(tmp_path), "--loop",
                  "--duration", 0.12, "--rate", 2.0, "--sample-period", 0.5, "--settle", 3)
    out = tmp_path / "out"
    assert res.returncode == 0, res.stderr + (out / "node.log").read_text(errors="replace")[-3000:]
    r = json.loads((out / "report.json").read_text())
    assert r["loops"] >= 2 and r["inputs"] > N  # looped past the end of the bag
    assert r["all_accounted"] is True
    assert r["inputs_without_output"] == r["node"]["drops_total"] + r["node"]["pending"]
    assert r["node"]["drops"].get("input_stamp_backwards", 0) == 0  # restamping keeps time monotonic
    rows = (out / "memory.csv").read_text().splitlines()
    assert rows[0].startswith("t_s,rss_mb") and len(rows) > 8
    rss = [float(x.split(",")[1]) for x in rows[1:]]
    assert min(rss) > 50  # the node process tree's resident memory, in MiB
    assert r["memory"]["samples"] == len(rows) - 1 and r["memory"]["rss_end_mb"] > 50
    assert (out / "memory.png").stat().st_size > 0
    # by default the recorder keeps every 10th image / cloud of a topic (all poses), zstd-compressed
    received = r["recorded_counts"]["/da3_node/camera/depth"]
    with BagReader(out / "recorded") as rec:
        assert rec.topics["/da3_node/camera/depth"][1] == (received + 9) // 10
        assert rec.topics["/da3_node/camera/pose"][1] == r["recorded_counts"]["/da3_node/camera/pose"]
    assert chunk_compression(out / "recorded") == {"zstd"}
    assert "wrote " in res.stdout and " to " in res.stdout


def test_replay_without_a_node_fails_with_one_line(tmp_path, bag):
    res = _replay(tmp_path, bag, _domain(3), "--wait-ready", 2, timeout=60)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no subscriber on /camera/image_raw" in lines[0], res.stderr
    out = tmp_path / "out"  # what it had started (node-less: the empty recorded bag) is marked, and named
    assert "partial output left in" in lines[0] and (out / "PARTIAL").exists()


def test_replay_bad_arguments_fail_with_one_line(tmp_path, bag):
    for extra, words in ((("--loop",), "--loop needs --duration"), (("--spawn-node",), "needs --params"),
                         (("--rate", 0), "--rate must be > 0")):
        res = _replay(tmp_path, bag, _domain(4), *extra, timeout=60)
        assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1 and words in res.stderr
    res = _replay(tmp_path, tmp_path / "missing_bag", _domain(4), timeout=60)
    assert res.returncode != 0 and "bag not found" in res.stderr and "Traceback" not in res.stderr


def test_node_exit_is_reported(tmp_path, bag):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"num_view": 0}}}))  # out of range
    res = _replay(tmp_path, bag, _domain(5), "--spawn-node", "--params", bad, "--wait-ready", 60)
    assert res.returncode != 0 and "the node exited" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
