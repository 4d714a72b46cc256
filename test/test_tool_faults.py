"""Faults found early, outputs never mixed or left looking complete (da3-eval, da3-replay; issue 16)."""

import json

import pytest
from _bags import damage_middle_chunk, run_tool

from da3_ros.tools.bag.check import check_bag
from da3_ros.tools.bag.io import BagError, BagReader
from da3_ros.tools.cli import ToolError
from da3_ros.tools.eval import EvalOptions, evaluate
from da3_ros.tools.outdir import MARKER, PartialOutputError, RunOutput
from da3_ros.tools.synth import synthesize

N = 40


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    """A zstd-compressed bag of several chunks; copies with its middle chunk damaged in the middle
    (rosbags then reads that chunk short, silently) and at its start (rosbags fails there)."""
    root = tmp_path_factory.mktemp("faults")
    synthesize(root / "good", frames=N, seed=5, width=160, height=120, compress=True)
    damage_middle_chunk(root / "good", root / "bad")
    damage_middle_chunk(root / "good", root / "bad_start", where="start")
    return root / "good", root / "bad", root / "bad_start"


def _opts(**kw):
    return EvalOptions(**{"model": "truth", "plots": False, "progress": False, **kw})


def test_check_reads_every_chunk_and_counts_messages(bags):
    good, bad, bad_start = bags
    with BagReader(good) as r:
        c = check_bag(r, ["/camera/image_raw"])
    topics = ("/camera/image_raw", "/camera/camera_info", "/camera/depth_gt", "/camera/pose_gt")
    assert c.counts == dict.fromkeys(topics, N)
    assert c.chunks >= 3 and len(c.stamps["/camera/image_raw"]) == N
    with BagReader(bad) as r:
        assert sum(1 for _ in r.messages()) < 4 * N  # read short without a word: only the check sees it
        with pytest.raises(BagError, match="is damaged or truncated: it holds other messages"):
            check_bag(r)
    with BagReader(bad_start) as r, pytest.raises(BagError, match=r"damaged: chunk \d+ \(messages .* s into"):
        check_bag(r)


def test_damaged_bag_fails_in_seconds_before_any_output(bags, tmp_path):
    bad = bags[1]
    for tool, extra in (("da3-eval", ("--model", "truth")), ("da3-replay", ("--wait-ready", 60))):
        res, wall = run_tool(tool, bad, *extra, "--out", tmp_path / tool, cwd=tmp_path)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 1 and len(lines) == 1, res.stderr
        assert "is damaged" in lines[0] and "partial output" not in lines[0], lines[0]
        assert wall < 30, wall  # found by the check, not after playing / evaluating half the bag
        assert not (tmp_path / tool).exists()  # nothing written, nothing to clean up


def test_failure_mid_run_leaves_marked_partial_output(bags, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(PartialOutputError) as err:
        evaluate(bags[2], out, _opts(check_bag=False, write_bag=True))
    msg = str(err.value)
    assert "corrupt or truncated" in msg and f"partial output left in {out}" in msg
    assert "predictions/" in msg and str(out / MARKER) in msg
    marker = (out / MARKER).read_text()
    assert "FAILED" in marker and "predictions/" in marker
    m = json.loads((out / "metrics.json").read_text())
    assert m["partial"] is True and "corrupt" in m["error"] and 0 < m["frames_read"] < N
    assert "PARTIAL RUN" in (out / "summary.md").read_text()
    with BagReader(out / "predictions") as r:  # what was written is still a readable bag
        assert 0 < r.topics["/da3_node/camera/depth"][1] < N


def test_complete_run_is_not_marked(bags, tmp_path):
    m = evaluate(bags[0], tmp_path / "out", _opts())
    assert not m["partial"] and not (tmp_path / "out" / MARKER).exists()
    assert "messages on 4 topics" in m["bag_check"]


def test_existing_out_is_refused_unless_overwrite(bags, tmp_path):
    good = bags[0]
    out = tmp_path / "out"
    evaluate(good, out, _opts(max_frames=4))
    (out / "stale_from_an_old_version.txt").write_text("old")
    with pytest.raises(ToolError, match="exists and is not empty; pass --overwrite"):
        evaluate(good, out, _opts(max_frames=4))
    assert (out / "stale_from_an_old_version.txt").exists()
    evaluate(good, out, _opts(max_frames=6, overwrite=True))
    assert not (out / "stale_from_an_old_version.txt").exists()  # a fresh run, no stale files
    assert json.loads((out / "metrics.json").read_text())["frames_read"] == 6
    other = tmp_path / "home_like"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    with pytest.raises(ToolError, match="no da3 tool wrote"):
        RunOutput(other, "t", overwrite=True).prepare()
    assert (other / "precious.txt").exists()


def test_cli_overwrite_flag(bags, tmp_path):
    args = (bags[0], "--model", "truth", "--out", tmp_path / "e", "--max-frames", 4, "--quiet")
    assert run_tool("da3-eval", *args, cwd=tmp_path)[0].returncode == 0
    res, _ = run_tool("da3-eval", *args, cwd=tmp_path)
    assert res.returncode == 1 and "pass --overwrite" in res.stderr
    assert run_tool("da3-eval", *args, "--overwrite", cwd=tmp_path)[0].returncode == 0


def test_failure_before_output_removes_the_empty_folder(tmp_path):
    out = RunOutput(tmp_path / "o", "t")
    with pytest.raises(ValueError, match="boom"), out.running():
        raise ValueError("boom")
    assert not (tmp_path / "o").exists()


def test_marker_is_there_while_running_and_says_interrupted(tmp_path, capsys):
    out = RunOutput(tmp_path / "o", "da3-eval")
    with pytest.raises(KeyboardInterrupt), out.running():
        assert (tmp_path / "o" / MARKER).exists()  # a run killed here leaves it marked
        (tmp_path / "o" / "predictions").mkdir()
        (tmp_path / "o" / "predictions" / "x.mcap").write_bytes(b"0" * 2000)
        raise KeyboardInterrupt
    marker = (tmp_path / "o" / MARKER).read_text()
    assert "FAILED" in marker and "error: interrupted" in marker
    err = capsys.readouterr().err
    assert err.startswith("da3-eval: interrupted; partial output left in") and "predictions/ 2.0 kB" in err
