"""da3-synth --trajectory scan: the survey's positions, other orientations, evaluate's frames."""

import numpy as np
import pytest
from test_synth_camera_effects import _by_topic, _images, _recorded

from da3_ros.tools.bag.io import BagError, BagReader
from da3_ros.tools.synth import main as synth_main
from da3_ros.tools.synth import synthesize

W, H, N, SEED, RATE = 48, 32, 4, 5, 10.0
POSE = "/camera/pose_gt"


def _poses(path):
    """(N, 3) positions and (N, 4) quaternions (x, y, z, w) of ``/camera/pose_gt``."""
    with BagReader(path) as r:
        msgs = [r.decode(raw, r.msgtype(t)).pose for t, _, raw in r.messages([POSE])]
    pos = np.array([[m.position.x, m.position.y, m.position.z] for m in msgs])
    quat = np.array([[m.orientation.x, m.orientation.y, m.orientation.z, m.orientation.w] for m in msgs])
    return pos, quat


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("traj")
    synthesize(root / "default", frames=N, seed=SEED, width=W, height=H, rate_hz=RATE)
    synthesize(root / "survey", frames=N, seed=SEED, width=W, height=H, rate_hz=RATE, trajectory="survey")
    synthesize(root / "scan", frames=N, seed=SEED, width=W, height=H, rate_hz=RATE, trajectory="scan")
    return root


def test_scan_keeps_positions_and_stamps_and_turns_the_camera(bags):
    survey, scan = _by_topic(bags / "survey"), _by_topic(bags / "scan")
    assert [s for s, _ in scan[POSE]] == [s for s, _ in survey[POSE]]
    p_survey, q_survey = _poses(bags / "survey")
    p_scan, q_scan = _poses(bags / "scan")
    assert len(p_scan) == N
    np.testing.assert_allclose(p_scan, p_survey, rtol=0, atol=1e-12)
    # |dot| < 1: a different rotation (q and -q are the same one)
    assert np.all(np.abs(np.sum(q_scan * q_survey, axis=1)) < 1 - 1e-6)


def test_survey_is_the_default_and_is_recorded(bags):
    assert _by_topic(bags / "default") == _by_topic(bags / "survey")
    assert _recorded(bags / "default")["trajectory"] == "survey"
    assert _recorded(bags / "scan")["trajectory"] == "scan"


def test_scan_bag_images_equal_evaluate_frames(bags):
    pytest.importorskip("torch")  # da3_ros.training.evaluate imports it
    from da3_ros.training.evaluate import render_sequence

    frames, _, poses, _ = render_sequence("room", SEED, N, W, H, RATE, trajectory="scan")
    imgs = _images(bags / "scan")
    assert all(np.array_equal(f.image, im) for f, im in zip(frames, imgs, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(imgs, _images(bags / "survey")))
    np.testing.assert_allclose(_poses(bags / "scan")[0], poses[:, :3, 3], rtol=0, atol=1e-12)


def test_cli_option_and_unknown_style(tmp_path):
    assert synth_main(["--out", str(tmp_path / "b"), "--frames", "2", "--width", "32", "--height", "24",
                       "--quiet", "--trajectory", "scan"]) == 0
    assert _recorded(tmp_path / "b")["trajectory"] == "scan"
    with pytest.raises(SystemExit):
        synth_main(["--out", str(tmp_path / "x"), "--trajectory", "spin"])
    with pytest.raises(BagError, match="unknown trajectory"):
        synthesize(tmp_path / "y", frames=1, width=8, height=8, trajectory="spin")
