"""bench.live: the pure helpers (percentiles, rates, accounting, thread CPU, params), exactly."""

import math
import os
import sys
from pathlib import Path

import pytest
import yaml

from bench.live import config, procstat, stats


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
