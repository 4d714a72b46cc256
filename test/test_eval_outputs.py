"""da3-eval's outputs: opt-in and decimated by default, compressed, their size printed (issue 16)."""

import json

import cv2
import numpy as np
import pytest
from _bags import chunk_compression, run_tool

from da3_ros.ros import conversions as conv
from da3_ros.tools.bag.io import BagReader
from da3_ros.tools.eval import EvalOptions, evaluate
from da3_ros.tools.synth import synthesize

N = 20


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("outputs") / "room"
    synthesize(path, frames=N, seed=6, width=96, height=72)
    return path


def test_default_outputs_are_small_and_their_size_printed(bag, tmp_path):
    res, _ = run_tool("da3-eval", bag, "--model", "truth", "--out", tmp_path / "e", "--quiet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "e"
    names = {p.name for p in out.iterdir()}
    assert {"metrics.json", "summary.md", "per_frame.csv", "points.ply", "samples.png", "trajectory.png",
            "trajectory_camera.tum"} <= names
    assert "predictions" not in names and "depth" not in names  # opt-in: --save bag,depth
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    line = res.stdout.strip().splitlines()[-1]
    assert line.startswith("wrote ") and line.endswith(f"to {out}") and "points.ply" in line
    value, unit = line.split()[1:3]
    assert unit in ("kB", "MB")
    assert float(value) * {"kB": 1e3, "MB": 1e6}[unit] == pytest.approx(total, rel=0.05)
    m = json.loads((out / "metrics.json").read_text())
    assert m["outputs"]["points.ply"] == (out / "points.ply").stat().st_size
    assert m["saved"] == {"bag": False, "depth": False, "cloud": True, "plots": True, "stride": 10}
    assert "not written (ask with `--save`): predictions/" in (out / "summary.md").read_text()


def test_saved_bag_and_depth_keep_every_nth_view_compressed(bag, tmp_path):
    stride = 6
    opts = EvalOptions(model="truth", truth_metric=True, write_bag=True, write_depth=True, save_stride=stride,
                       plots=False, progress=False)
    m = evaluate(bag, tmp_path, opts)
    kept = -(-N // stride)  # views 0, 6, 12, 18
    with BagReader(tmp_path / "predictions") as r:
        t = {k: n for k, (_, n) in r.topics.items()}
        assert t["/da3_node/camera/depth"] == t["/da3_node/camera/confidence"] == kept
        assert t["/da3_node/camera/depth_colored"] == kept
        assert t["/da3_node/camera/pose"] == t["/da3_node/camera/camera_info"] == t["/da3_node/odometry"] == N
        assert t["/da3_node/points"] < m["windows"]
        paths = [r.decode(raw, r.msgtype(tp)) for tp, _, raw in r.messages(["/da3_node/path"])]
    assert len(paths) == 2 and len(paths[-1].poses) == N  # not one O(N) path per view: first and final
    assert chunk_compression(tmp_path / "predictions") == {"zstd"}
    units = json.loads((tmp_path / "depth" / "units.json").read_text())
    assert units["unit"] == 1e-3 and units["units"] == "metres" and units["maps"] == kept
    pngs = sorted((tmp_path / "depth" / "camera").glob("*.png"), key=lambda p: int(p.stem))
    assert len(pngs) == kept
    truth = {}
    with BagReader(bag) as r:
        for _, _, raw in r.messages(["/camera/depth_gt"]):
            msg = r.decode(raw, "sensor_msgs/msg/Image")
            truth[conv.stamp_to_ns(msg.header.stamp)] = conv.image_to_depth_m(msg)
    stamps = sorted(truth)
    assert [int(p.stem) for p in pngs] == stamps[::stride]
    png = cv2.imread(str(pngs[1]), cv2.IMREAD_UNCHANGED)
    gt = truth[int(pngs[1].stem)]
    assert png.dtype == np.uint16 and png.shape == gt.shape
    ok = np.isfinite(gt)
    assert np.abs(png[ok] * units["unit"] - gt[ok]).max() <= 0.0005 + 1e-6  # millimetres, lossless
    assert (png[~ok] == 0).all()  # no estimate -> 0


def test_save_option_parsing():
    from da3_ros.tools.eval import build_parser, options_from_args

    def opts(*a):
        o = options_from_args(build_parser().parse_args(["b", "--model", "truth", "--out", "o", *a]))
        return o.write_bag, o.write_depth, o.write_cloud, o.plots, o.save_stride

    assert opts() == (False, False, True, True, 10)
    assert opts("--save", "bag,depth", "--save-stride", "1") == (True, True, False, False, 1)
    assert opts("--save", "all", "--no-plots") == (True, True, True, False, 10)
    assert opts("--save", "none") == (False, False, False, False, 10)
    with pytest.raises(ValueError, match="unknown item"):
        opts("--save", "bag,video")
