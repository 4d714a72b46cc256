"""bench.live: the helpers exactly, and short runs of the real node (tiny model, CPU) over loopback DDS.

No timing assertions: the runs check that every frame sent is accounted for, that latencies are
finite and positive, that every output topic has a rate, and that the saturation search on a
stand-in node of known capacity ends inside its stepped range.
"""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bench.live import config, procstat, profile, stats
from bench.live.recorder import VIEW_OUTPUTS, WINDOW_OUTPUTS, output_topics
from bench.live.saturate import search
from bench.live.sink import TokenBucket
from bench.live.table import tables
from bench.live.upstream_shims import _CenterCrop, _Normalize, _ToTensor
from da3_ros.dds_env import loopback_env

REPO = Path(__file__).resolve().parents[1]
HAS_NODE = (Path(sys.executable).parent / "da3_node").exists()


# -- pure helpers ----------------------------------------------------------------------------
def test_latency_summary_percentiles_in_ms():
    s = stats.latency_summary([0.001 * i for i in range(1, 11)])  # 1..10 ms
    assert s["n"] == 10 and s["max"] == pytest.approx(10.0) and s["mean"] == pytest.approx(5.5)
    assert s["p50"] == pytest.approx(5.5) and s["p90"] == pytest.approx(9.1)
    empty = stats.latency_summary([float("nan")])
    assert empty["n"] == 0 and math.isnan(empty["p50"])


def test_rate_and_receipt_latencies():
    assert stats.rate_hz([0.0, 0.1, 0.2, 0.3]) == pytest.approx(10.0)
    assert math.isnan(stats.rate_hz([1.0]))
    receipts = [(1_000_000_000, 1.05), (1_000_000_000, 1.5), (2_000_000_000, 2.02)]
    assert stats.receipt_latencies(receipts) == pytest.approx([0.05, 0.02])
    assert stats.receipt_latencies(receipts, first_only=False) == pytest.approx([0.05, 0.5, 0.02])
    assert stats.receipt_latencies(receipts, min_stamp_ns=1_500_000_000) == pytest.approx([0.02])


def test_drops_delta_and_fraction():
    before = {"drops.queue_full": "3", "drops.late": "1", "state": "active"}
    after = {"drops.queue_full": "10", "drops.late": "1", "drops.input_decode_error": "2"}
    assert stats.drops_delta(before, after) == {"input_decode_error": 2, "queue_full": 7}
    assert stats.drop_fraction(100, 95, 3) == pytest.approx(0.02)
    assert stats.drop_fraction(0, 0, 0) == 0.0


def test_accounting_buckets_add_up_or_say_why_not():
    node = stats.node_counts({"input_count.cam0": "50", "input_count.cam1": "48", "frames_processed": "90",
                              "drops_total": "6", "drops.queue_full": "6", "queue_len": "0"})
    assert node["received"] == 98 and node["pending"] == 2
    acc = stats.account(100, 89, node)
    assert acc["adds_up"] and acc["buckets"] == {"published": 89, "processed_not_recorded": 1,
                                                 "dropped.queue_full": 6, "pending_in_node": 2,
                                                 "not_received_by_node": 2}
    assert not stats.account(97, 89, node)["adds_up"]  # the node received more than was sent
    assert not stats.account(100, 91, node)["adds_up"]  # more published than processed
    assert stats.account(10, 10, {})["adds_up"] and not stats.account(10, 9, {})["adds_up"]


def test_search_brackets_then_bisects_a_threshold():
    calls = []

    def passes(rate):
        calls.append(rate)
        return rate <= 37.0

    found, steps = search(passes, start_hz=5, max_hz=320, min_hz=0.5, refine=4)
    assert [r for r, _ in steps] == calls and calls[:4] == [5, 10, 20, 40]
    assert 20 <= found <= 37 and found > 37 - 20 / 2**4
    assert search(lambda r: True, 5, 50, 1)[0] == 50  # never fails: the cap
    assert search(lambda r: False, 5, 50, 1)[0] is None  # even the minimum fails
    found, steps = search(lambda r: r <= 3, 10, 50, 1, refine=2)  # the first step fails: halve down
    assert [r for r, _ in steps][:3] == [10, 5, 2.5] and 2.5 <= found <= 3
    with pytest.raises(ValueError):
        search(passes, 5, 4, 1)


def test_token_bucket_caps_the_stand_in():
    bucket = TokenBucket(20.0)
    accepted = sum(bucket.accept(i / 10.0) for i in range(100))  # 10 Hz for 10 s: all fit
    assert accepted == 100
    bucket = TokenBucket(20.0)
    accepted = sum(bucket.accept(i / 80.0) for i in range(800))  # 80 Hz for 10 s: ~20 Hz accepted
    assert 200 <= accepted <= 203
    assert all(TokenBucket(0).accept(0.0) for _ in range(5))


def test_procstat_reads_threads_and_names():
    assert procstat.parse_stat("12 (a b) c) S 1 2 3 4 5 6 7 8 9 10 300 200 0 0") == pytest.approx(
        500 / procstat.CLK_TCK)
    sample = procstat.thread_times(os.getpid())
    assert os.getpid() in sample and sample[os.getpid()][1] > 0
    a = {1: ("x", 1.0), 2: ("dds.shm", 0.5)}
    b = {1: ("x", 1.5), 2: ("dds.shm", 0.5), 3: ("y", 0.25)}
    cpu = procstat.cpu_percent(a, b, 1.0, names={1: "MainThread"})
    assert cpu["total_pct"] == pytest.approx(75.0) and cpu["idle_threads"] == 1
    assert [t["tid"] for t in cpu["threads"]] == [1, 3] and cpu["by_name"] == {"MainThread": 50.0, "y": 25.0}
    dump = ('Process 7: python\nThread 4711 (idle): "MainThread"\n    f (x.py:1)\n'
            'Thread 0x7F00 (active): "w"\nThread 4712 (active+gil): "da3_pipeline"\n')
    assert procstat.parse_pyspy_dump(dump) == {4711: "MainThread", 4712: "da3_pipeline"}
    busy, total = procstat.machine_cpu_s()
    assert 0 <= busy <= total and procstat.load_average() >= 0


def test_params_merge_and_node_command(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "num_view": 4, "camera": {"camera": {"image_topic": "/x"}, "cam1": {"frame_id": "f"}}}}}))
    sets = config.parse_sets(["num_view=8", "accelerate=off", "model=da3-large", "camera.cam1.transport=raw"])
    assert sets == {"num_view": 8, "accelerate": "off", "model": "da3-large", "camera.cam1.transport": "raw"}
    p = config.bench_params(f, sets, config.camera_names(2))
    assert p["cameras"] == ["cam0", "cam1"] and p["num_view"] == 8 and p["accelerate"] == "off"
    assert p["camera.cam1.image_topic"] == "/cam1/image_raw"
    assert p["camera.cam0.camera_info_topic"] == "/cam0/camera_info"
    assert "camera.camera.image_topic" not in p and p["camera.cam1.transport"] == "raw"
    assert config.read_params_file(config.write_params(p, tmp_path / "o.yaml")) == p
    with pytest.raises(ValueError):
        config.parse_sets(["novalue"])
    cmd = config.node_command("da3", f, node_cmd="python3 -c 'x'")
    assert cmd == ["python3", "-c", "x", "--ros-args", "--params-file", str(f)]
    assert config.node_command("upstream", f)[1:3] == ["-m", "bench.live.upstream_wrapper"]


def test_node_command_without_console_script(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python3"))  # no da3_node beside it
    cmd = config.node_command("da3", Path("p.yaml"))
    assert cmd[:2] == [str(tmp_path / "python3"), "-c"] and "da3_ros.ros.entry" in cmd[2]


def test_torchvision_stand_in_matches_its_definition():
    img = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    t = _ToTensor()(img)
    assert t.shape == (3, 6, 8) and torch.allclose(t, torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    n = _Normalize([0.5, 0.25, 0.0], [0.5, 0.5, 1.0])(t)
    assert torch.allclose(n[1], (t[1] - 0.25) / 0.5)
    assert torch.equal(_CenterCrop((4, 4))(t), t[:, 1:5, 2:6])


def test_output_topics_cover_every_node_output():
    topics = output_topics("da3_node", ["cam0", "cam1"])
    assert len(topics) == 2 * len(VIEW_OUTPUTS) + len(WINDOW_OUTPUTS)
    assert "/da3_node/cam1/depth_colored" in topics and "/da3_node/points" in topics


# -- the real node and the stand-in, over DDS ------------------------------------------------
def _start(out, domain, *args):
    """``python -m bench.live ...`` in the background, on loopback DDS in ``domain``."""
    env = loopback_env(domain, log_dir=str(out / "ros_logs"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "bench.live", *args, "--out", out, "--no-thread-names",
           "--domain-id", domain]
    return subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)


def _stop(proc):
    """SIGINT a bench (it stops its node on the way out), SIGKILL after 45 s; its (stdout, stderr)."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def _finish(proc, out, timeout=150):
    """Wait for a :func:`_start`-ed bench; its stdout (fails with its stderr and the node's log)."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stdout, stderr = _stop(proc)
    log = out / "node.log"
    assert proc.returncode == 0, stderr + (log.read_text(errors="replace")[-3000:] if log.exists() else "")
    return stdout


TINY = ["--set", "model=default", "--set", "process_res=56", "--set", "num_view=1", "--set", "stride=1",
        "--set", "diagnostics_period_s=0.5", "--set", "path_period_s=0.5"]


@pytest.fixture(scope="module")
def benches(tmp_path_factory):
    """The three DDS runs of this module, started together (on 2 cores most of a run is a process
    starting): the node on one camera and on a 2-camera rig, and the search on the stand-in."""
    root = tmp_path_factory.mktemp("bench_live")
    runs = {}
    for cameras in (1, 2):
        out = root / f"cams{cameras}"
        runs[cameras] = out, _start(out, 1 + (os.getpid() * 11 + 17 * cameras) % 100, "run", *TINY,
                                    "--cameras", cameras, "--rate", 5, "--duration", 2, "--warmup", 1,
                                    "--settle", 2)
    out = root / "out"
    runs["saturate"] = out, _start(out, 1 + (os.getpid() * 11 + 5) % 100, "saturate", "--node", "sink",
                                   "--set", "sink_capacity_hz=20", "--set", "diagnostics_period_s=0.2",
                                   "--set", "input_qos=reliable", "--set", "input_queue_depth=100",
                                   "--start-rate", 5, "--max-rate", 80, "--min-rate", 2,
                                   "--step-duration", 1.5, "--refine", 1, "--settle", 0.5)
    yield runs
    for _, proc in runs.values():  # a test that failed early leaves its bench running: stop it
        if proc.poll() is None:
            _stop(proc)


@pytest.mark.skipif(not HAS_NODE, reason="da3_node console script missing")
def test_run_accounts_for_every_frame_one_camera_and_a_rig(benches):
    for cameras in (1, 2):
        out, proc = benches[cameras]
        stdout = _finish(proc, out)
        r = json.loads((out / "report.json").read_text())
        assert "accounted True" in stdout and r["node_exit_code"] == 0
        acc = r["accounting"]
        assert acc["sent"] == 15 * cameras == r["camera"]["frames"] and acc["adds_up"]
        assert sum(acc["buckets"].values()) == acc["sent"] and acc["outputs_unmatched"] == 0
        assert acc["buckets"]["published"] > 0 and r["node_counts"]["received"] <= acc["sent"]
        for key in ("window_latency_ms", "depth_latency_ms"):
            lat = r["all"][key]
            assert lat["n"] > 0 and 0 < lat["p50"] <= lat["p90"] <= lat["max"] < math.inf
        names = ["camera"] if cameras == 1 else ["cam0", "cam1"]
        by_cam = r["all"]["depth_latency_ms_by_camera"]
        assert list(by_cam) == names
        assert sum(v["n"] for v in by_cam.values()) == r["all"]["depth_latency_ms"]["n"]
        for topic in output_topics("da3_node", names):
            assert topic in r["all"]["rates_hz"], topic
        assert r["all"]["rates_hz"]["/da3_node/points"] > 0 and r["all"]["rates_hz"]["/diagnostics"] > 0
        assert r["steady"]["sent"] == 10 * cameras and r["time_to_ready_s"] > 0
        assert r["cpu"]["steady"]["total_pct"] > 0 and r["cpu"]["steady"]["threads"]
        row = tables([str(out)]).splitlines()[-1]
        assert row.startswith(f"| cams{cameras} | da3, default @56 | 1/1, {cameras} | 5 | ")


def test_saturation_on_a_stand_in_of_known_capacity(benches):
    out, proc = benches["saturate"]
    stdout = _finish(proc, out)
    r = json.loads((out / "saturation.json").read_text())
    rates = [s["rate_hz"] for s in r["steps"]]
    assert "saturation" in stdout and all(2 <= x <= 80 for x in rates)
    assert r["rate_found_hz"] in rates and 5 <= r["rate_found_hz"] < 40  # capacity 20 Hz: 40 Hz loses half
    failed = [s for s in r["steps"] if not s["passed"]]
    assert failed and all(s["node_drops"].get("capacity", 0) > 0 for s in failed)
    for s in r["steps"]:
        assert s["sent"] == s["published"] + s["pending"] + s["lost"] and s["published"] <= s["sent"]
        assert s["not_received_by_node"] == 0  # reliable QoS: every frame reaches the stand-in
    assert f"| out | sink | -, 1 | {r['rate_found_hz']:g} (" in tables([str(out)])


def test_profile_summary_per_thread(tmp_path):
    doc = {"shared": {"frames": [{"name": "main", "file": "/a/x.py", "line": 1},
                                 {"name": "run", "file": "/a/y.py", "line": 5},
                                 {"name": "run", "file": "/a/y.py", "line": 9},
                                 {"name": "wait", "file": "/a/z.py", "line": 2}]},
           "profiles": [{"type": "sampled", "name": 'Thread 7 "worker"', "unit": "seconds",
                         "samples": [[0, 1], [0, 2], [0, 1, 3], [0, 3]], "weights": [0.01] * 4},
                        {"type": "sampled", "name": 'Thread 8 "idle"', "samples": [], "weights": []}]}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    s = profile.summarize(path)
    assert list(s) == ['Thread 7 "worker"']  # a thread without samples is left out
    w = s['Thread 7 "worker"']
    assert w["samples"] == 4 and w["self"][0] == ["run (y.py)", 50.0, 75.0]  # both lines of run merged
    assert ["wait (z.py)", 50.0, 50.0] in w["self"] and w["total"][0] == ["main (x.py)", 100.0]
    assert "| `run (y.py)` | 50.0 | 75.0 |" in profile.markdown(s)


def test_cpu_of_a_process_counts_its_children_and_leaves_out_the_excluded():
    """The node's inference process counts as the node's; the node does not count as the bench's."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in procstat.family(os.getpid())
        threads = procstat.thread_times(os.getpid())
        assert any(name.startswith("child:") for name, _ in threads.values())
        assert child.pid in threads  # its main thread's id is its pid
        assert child.pid not in procstat.thread_times(os.getpid(), exclude=(child.pid,))
    finally:
        child.kill()
        child.wait()
