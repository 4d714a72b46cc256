"""da3-eval on a bag without ground truth: no NaN scores, but statistics that need no truth (issue 16)."""

import csv
import json
import math

import numpy as np
import pytest
from _bags import copy_topics

from da3_ros.evaluation import consistency as C
from da3_ros.sim.standin import GroundTruthPredictor
from da3_ros.tools.bag.frames import BagFrameStream, TruthCache
from da3_ros.tools.bag.io import BagReader, find_cameras
from da3_ros.tools.eval import EvalOptions, evaluate, result_line
from da3_ros.tools.synth import synthesize

N = 24


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    """A synthetic bag, the same without its truth topics, and the truth it had (stamp -> pose)."""
    root = tmp_path_factory.mktemp("notruth")
    synthesize(root / "full", frames=N, seed=8, width=96, height=72)
    copy_topics(root / "full", root / "bare", lambda t: t.endswith(("image_raw", "camera_info")))
    truth = TruthCache(capacity=10 * N)
    with BagReader(root / "full") as r:
        frames = list(BagFrameStream(r, find_cameras(r), truth))
    return root / "bare", truth, frames


def _run(bare, truth, out, **predictor_kw):
    """evaluate() on the bare bag with a truth stand-in fed from the full bag's truth (the model)."""
    made = []

    def factory(_bag_truth_fn):  # the bare bag's own truth function would have nothing to give
        made.append(GroundTruthPredictor(truth.lookup, **predictor_kw))
        return made[0]

    m = evaluate(bare, out, EvalOptions(model="truth-outside-the-bag", progress=False, samples=2),
                 predictor_factory=factory)
    return m, made[0]


def _true_path_length(frames, truth):
    c = np.array([truth.get(f.camera, f.stamp_ns).world_from_cam[:3, 3] for f in frames])
    return float(np.linalg.norm(np.diff(c, axis=0), axis=1).sum())


def test_exact_model_with_scale_jumps(bags, tmp_path):
    bare, truth, frames = bags
    m, model = _run(bare, truth, tmp_path, scale_range=(0.5, 2.0), seed=3)
    c = m["consistency"]
    assert m["ground_truth"] == "none" and math.isnan(m["abs_rel"]) and math.isnan(m["ate"])
    assert any("no ground truth in the bag" in n for n in m["notes"])
    # every window re-predicted what was published exactly: no disagreement left after the scale fit
    assert c["windows"] == m["windows"] and c["windows_aligned"] == m["windows"] - 1
    assert c["depth_residual"]["n"] == c["windows_aligned"] and c["depth_residual"]["max"] < 1e-5
    # the model's scale jumped by s_k / s_k-1 between windows; the chain measured exactly that
    s = np.array(model.scales)
    assert len(s) == m["windows"]
    assert c["scale_step"]["n"] == len(s) - 1
    assert c["scale_step"]["median"] == pytest.approx(np.median(np.abs(np.diff(np.log(s)))), rel=1e-4)
    assert c["scale_step"]["max"] == pytest.approx(np.abs(np.diff(np.log(s))).max(), rel=1e-4)
    # length in the run's global units: those of the first window, s_0 model units per metre
    assert c["trajectory_units"] == "model units"
    traj = c["trajectory"]["camera"]
    assert traj["poses"] == N
    assert traj["length"] == pytest.approx(s[0] * _true_path_length(frames, truth), rel=1e-4)
    assert traj["rate_hz"] == pytest.approx(10.0, rel=0.05)  # da3-synth's 10 Hz
    assert c["window_time_s"]["n"] == m["windows"] and c["processing_fps"] > 0


def test_metric_model_reports_metres_and_no_scale_steps(bags, tmp_path):
    bare, truth, frames = bags
    m, _ = _run(bare, truth, tmp_path, metric=True)
    c = m["consistency"]
    assert c["trajectory_units"] == "m" and c["scale_step"]["n"] == 0
    assert c["trajectory"]["camera"]["length"] == pytest.approx(_true_path_length(frames, truth), rel=1e-4)
    assert "depth consistency" in result_line(m, "o") and "scale change" not in result_line(m, "o")


def test_depth_noise_shows_as_disagreement_on_re_predicted_views(bags, tmp_path):
    bare, truth, _ = bags
    sigma = 0.05
    m, _ = _run(bare, truth, tmp_path, depth_noise=sigma, scale_range=(1.0, 1.0), seed=1)
    d = m["consistency"]["depth_residual"]
    # two independent draws of the same pixel: |log ratio| ~ |N(0, sigma * sqrt 2)|, median 0.674 of that
    assert d["median"] == pytest.approx(0.6745 * sigma * math.sqrt(2), rel=0.15)


def test_no_truth_report_explains_what_is_absent(bags, tmp_path):
    bare, truth, _ = bags
    m, _ = _run(bare, truth, tmp_path, scale_range=(0.8, 1.25))
    summary = (tmp_path / "summary.md").read_text()
    assert "ground truth: none" in summary
    assert "Not scored: no camera has `<ns>/depth_gt`" in summary
    assert "Not scored: no camera has `<ns>/pose_gt`" in summary
    assert "## Consistency between windows" in summary and "## Rates and latency" in summary
    assert "| abs_rel |" not in summary  # no table of n/a rows
    rows = list(csv.DictReader((tmp_path / "per_frame.csv").open()))
    assert len(rows) == N and all(r["abs_rel"] == "" and float(r["depth_median"]) > 0 for r in rows)
    windows = list(csv.DictReader((tmp_path / "windows.csv").open()))
    assert len(windows) == m["windows"] and windows[0]["method"] == "first"
    for name in ("samples.png", "trajectory.png", "consistency.png", "points.ply", "trajectory_camera.tum"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert not (tmp_path / "per_frame.png").exists()  # needs truth; the summary says so
    assert json.loads((tmp_path / "metrics.json").read_text())["consistency"]["windows"] == m["windows"]
    line = result_line(m, "o")
    assert "nan" not in line.lower() and "abs_rel" not in line and "trajectory" in line


def test_consistency_functions():
    def rec(i, method, scale, dres=math.nan):
        return C.WindowRecord(i, i, 4, 2, method, 2, scale, dres, 0.0, 0.0, 0.0, 0.01)

    recs = [rec(0, "first", 1.0), rec(1, "shared", 2.0, 0.1), rec(2, "extrapolated", 2.0),
            rec(3, "shared", 1.0, 0.3)]
    assert C.scale_steps(recs) == pytest.approx([math.log(2), math.log(2)])
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[1, :3, 3], poses[2, :3, 3] = (3, 4, 0), (3, 4, 2)
    assert C.path_length(poses) == pytest.approx(7.0) and C.path_length(poses[:1]) == 0.0
    s = C.summarize(recs, {"c": (np.array([0, 10**9, 2 * 10**9]), poses)}, False, 6, 2.0)
    assert s["windows_extrapolated"] == 1 and s["windows_aligned"] == 2
    assert s["depth_residual"]["median"] == pytest.approx(0.2) and s["processing_fps"] == 3.0
    assert s["trajectory"]["c"]["speed"] == pytest.approx(3.5)
    assert C.percent(math.log(1.05)) == pytest.approx(5.0)
