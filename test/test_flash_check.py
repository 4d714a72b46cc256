"""bench/flash_check.py on the CPU (its --dry settings): every step's plumbing and its report."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def flash_check():
    spec = importlib.util.spec_from_file_location("flash_check", ROOT / "bench" / "flash_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_reports_every_backend_and_the_global_attention_calls(flash_check, tmp_path, capsys):
    rc = flash_check.main(["--out", str(tmp_path), "--dry", "--views", "2,3", "--parity-views", "2",
                           "--backends", "flash_attn,sdpa,manual", "--steps", "parity,kernel,network"])
    assert rc == 0
    report = json.loads((tmp_path / "flash_check.json").read_text())
    assert all(s["status"] == "ok" for s in report["steps"].values()), report["steps"]
    # flash_attn cannot run on the CPU: dropped with the reason, the other backends still run
    assert report["backends"] == ["sdpa", "manual"]
    assert "needs a CUDA device" in report["dropped_backends"]["flash_attn"]
    assert set(report["parity"]["rows"]) == {"sdpa", "manual"}
    assert report["parity"]["tolerance"]["depth.mean_rel"] == 5e-4
    assert {(r["views"], r["backend"]) for r in report["network_eager"]} == {
        (s, b) for s in (2, 3) for b in ("sdpa", "manual")}
    # da3-tiny at 56x42: 13 tokens a view, 3 heads of 64; blocks 5 and 7 are global
    for backend in ("sdpa", "manual"):
        attn = report["attention_in_network"][backend]
        n = 3 * 13
        assert attn["views"] == 3 and attn["calls"] == 2
        assert attn["flops"] == 2 * 4 * 1 * 3 * n * n * 64
    assert "network, eager" in capsys.readouterr().out
