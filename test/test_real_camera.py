"""Real-camera bags (test/data/real_camera, no ground truth) through da3-eval as a new user runs it.

The fixture is made by ``test/data/make_real_camera.py`` from a public-domain photograph: a JPEG
CompressedImage camera with a calibrated, distorting lens (mcap with chunk CRCs, as ``ros2 bag
record`` writes) and a mono8 stereo rig with CameraInfo (sqlite3).
"""

import json

import pytest
from _bags import DATA, damage_middle_chunk, run_tool

from da3_ros.ros import conversions as conv
from da3_ros.tools.bag.check import check_bag
from da3_ros.tools.bag.io import BagError, BagReader, find_cameras

REAL = DATA / "real_camera"
STREET, STEREO = REAL / "street_jpeg", REAL / "stereo_mono8"
MODEL = DATA.parents[1] / "data" / "models" / "da3-tiny-synth"
FAST = ("--model", MODEL, "--process-res", 112, "--device", "cpu", "--quiet")


def test_fixture_is_small_and_what_a_user_records():
    files = [p for p in REAL.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 400_000
    with BagReader(STREET) as r:
        (cam,) = find_cameras(r)
        assert (cam.name, cam.image_type, cam.camera_info) == ("street", "sensor_msgs/msg/CompressedImage",
                                                             "/street/camera_info")
        assert not (cam.depth_gt or cam.pose_gt) and r.topics[cam.image][1] == 12
        c = check_bag(r)
        assert c.chunks >= 3 and c.crc_chunks == c.chunks  # every chunk carries its CRC
        msgs = {t: r.decode(raw, r.msgtype(t)) for t, _, raw in r.messages()}
    assert conv.image_to_rgb(msgs[cam.image]).shape == (120, 160, 3)
    intr = conv.camera_info_to_intrinsics(msgs[cam.camera_info])
    assert intr.distortion_model == "plumb_bob" and intr.D[0] < 0  # a calibrated lens, not a pinhole
    with BagReader(STEREO) as r:
        cams = find_cameras(r)
        assert [c.name for c in cams] == ["stereo_left", "stereo_right"]
        for c in cams:
            img = r.decode(next(r.messages([c.image]))[2], r.msgtype(c.image))
            assert img.encoding == "mono8" and (img.width, img.height) == (128, 96)
            assert r.topics[c.image][1] == 6 and c.camera_info and not c.depth_gt


@pytest.mark.parametrize("bag,extra,cameras", [(STREET, (), ["street"]),
                                                (STEREO, ("--num-view", 2, "--stride", 1),
                                                 ["stereo_left", "stereo_right"])])
def test_eval_without_ground_truth_says_so_once_and_succeeds(tmp_path, bag, extra, cameras):
    out = tmp_path / "out"
    res, _ = run_tool("da3-eval", bag, "--out", out, *FAST, *map(str, extra), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    notes = [ln for ln in lines if "no ground truth" in ln]
    assert len(notes) == 1 and notes[0].startswith("da3-eval: no ground truth in") and lines[0] == notes[0]
    assert "nan" not in res.stdout.lower() and "abs_rel" not in res.stdout
    assert "depth consistency" in lines[1] and "12/12 frames processed" in lines[1]
    assert lines[-1].startswith("wrote ") and lines[-1].endswith(f"to {out}")
    m = json.loads((out / "metrics.json").read_text())
    assert m["cameras"] == cameras and m["ground_truth"] == "none" and m["frames_processed"] == 12
    assert m["consistency"]["windows_aligned"] >= 1 and m["consistency"]["depth_residual"]["n"] >= 1
    assert sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) < 3_000_000  # bounded by default


def test_damaged_chunk_of_a_recorded_bag_fails_on_its_crc(tmp_path):
    bad = tmp_path / "street_bad"
    damage_middle_chunk(STREET, bad, n_bytes=512)
    with BagReader(bad) as r, pytest.raises(BagError, match="crc validation failed in Chunk"):
        check_bag(r)
    res, wall = run_tool("da3-eval", bad, "--out", tmp_path / "out", *FAST, cwd=tmp_path)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and "crc validation failed" in lines[0], res.stderr
    assert wall < 30 and not (tmp_path / "out").exists()
