"""`make demo`'s program end to end: live node replay + evaluation + report files."""

import json
import subprocess
import sys
from pathlib import Path

from da3_ros.dds_env import loopback_env, pick_domain_id

REPO = Path(__file__).resolve().parents[1]


def test_demo_replays_through_live_node_and_writes_report(tmp_path):
    out = tmp_path / "demo"
    env = loopback_env(pick_domain_id(1234), log_dir=str(tmp_path / "logs"))
    proc = subprocess.run([sys.executable, "-m", "da3_ros.tools.demo", "--out", str(out), "--rate", "0.5"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["replay_all_accounted"] is True
    assert summary["model"].endswith("da3-tiny-synth")  # the bundled model, not random weights
    for key in ("abs_rel", "delta1", "ate"):
        assert summary[key] is not None and summary[key] == summary[key], key  # a number, not NaN
    assert 0.0 <= summary["delta1"] <= 1.0
    report = out / "report"
    for name in ("metrics.json", "summary.md", "samples.png", "trajectory.png", "points.ply"):
        assert (report / name).stat().st_size > 0, name
    assert list((out / "replay" / "recorded").glob("*.mcap"))
    assert "report" in proc.stdout and "abs_rel" in proc.stdout
