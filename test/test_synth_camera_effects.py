"""da3-synth --camera-effects: only the images degrade; depth, camera_info and poses stay exact."""

import json

import numpy as np
import pytest
import yaml

from da3_ros.sim.camera_effects import PRESETS, apply_view_effect, sample_view_effect
from da3_ros.tools.bag.io import BagReader
from da3_ros.tools.synth import main as synth_main
from da3_ros.tools.synth import synthesize

W, H, N, SEED = 64, 48, 6, 3
IMAGE = ("/camera/image_raw",)


def _by_topic(path):
    """topic -> list of (log stamp, raw message bytes), in bag order."""
    out = {}
    with BagReader(path) as r:
        for topic, stamp, raw in r.messages():
            out.setdefault(topic, []).append((stamp, bytes(raw)))
    return out


def _images(path, topic="/camera/image_raw"):
    from da3_ros.ros import conversions as conv

    with BagReader(path) as r:
        return [conv.image_to_rgb(r.decode(raw, r.msgtype(t))) for t, _, raw in r.messages([topic])]


def _recorded(path):
    meta = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    return json.loads(meta["custom_data"]["da3_ros.synth"])


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("fx")
    for name, fx in (("clean", None), ("none", "none"), ("robot", "robot"), ("robot2", "robot"),
                     ("severe", "severe")):
        kw = {} if fx is None else {"camera_effects": fx}
        synthesize(root / name, frames=N, seed=SEED, width=W, height=H, **kw)
    return root


def test_robot_effects_change_only_the_images(bags):
    clean, robot = _by_topic(bags / "clean"), _by_topic(bags / "robot")
    assert clean.keys() == robot.keys()
    for topic in clean:
        if topic not in IMAGE:  # depth_gt, camera_info, pose_gt: byte for byte the clean bag's
            assert robot[topic] == clean[topic], topic
    assert [s for s, _ in robot["/camera/image_raw"]] == [s for s, _ in clean["/camera/image_raw"]]
    a, b = _images(bags / "clean"), _images(bags / "robot")
    assert all(x.shape == y.shape == (H, W, 3) for x, y in zip(a, b))
    assert all(not np.array_equal(x, y) for x, y in zip(a, b))  # sensor noise on every frame
    assert all(np.mean(np.abs(x.astype(int) - y.astype(int))) < 80 for x, y in zip(a, b))  # same scene


def test_same_seed_same_degraded_images_and_presets_differ(bags):
    robot = _by_topic(bags / "robot")
    assert _by_topic(bags / "robot2") == robot
    sev = _images(bags / "severe")
    assert any(not np.array_equal(x, y) for x, y in zip(_images(bags / "robot"), sev))


def test_none_is_the_default_and_leaves_images_clean(bags):
    assert _by_topic(bags / "none") == _by_topic(bags / "clean")
    assert _recorded(bags / "clean")["camera_effects"] == "none"
    assert _recorded(bags / "robot")["camera_effects"] == "robot"
    assert _recorded(bags / "severe")["camera_effects"] == "severe"


def test_one_camera_bag_images_equal_evaluate_frames(bags):
    pytest.importorskip("torch")  # da3_ros.training.evaluate imports it
    from da3_ros.training.evaluate import render_sequence

    frames, _, _, labels = render_sequence("room", SEED, N, W, H, 10.0, "robot")
    imgs = _images(bags / "robot")
    assert all(np.array_equal(f.image, im) for f, im in zip(frames, imgs, strict=True))
    assert set(labels) != {"clean"}


def test_rig_cameras_get_their_own_effects_and_cli_option(tmp_path):
    assert synth_main(["--out", str(tmp_path / "clean"), "--frames", "2", "--cameras", "2", "--width", "48",
                       "--height", "32", "--scene", "corridor", "--quiet"]) == 0
    assert synth_main(["--out", str(tmp_path / "fx"), "--frames", "2", "--cameras", "2", "--width", "48",
                       "--height", "32", "--scene", "corridor", "--quiet", "--camera-effects", "robot"]) == 0
    clean, fx = _by_topic(tmp_path / "clean"), _by_topic(tmp_path / "fx")
    for topic in clean:
        if not topic.endswith("/image_raw"):
            assert fx[topic] == clean[topic], topic
    fx_preset = PRESETS["robot"]
    for k, cam in enumerate(("cam0", "cam1")):  # each image drawn from (seed, frame, camera, 0xEFF)
        for i, (c, im) in enumerate(zip(_images(tmp_path / "clean", f"/{cam}/image_raw"),
                                        _images(tmp_path / "fx", f"/{cam}/image_raw"), strict=True)):
            rng = np.random.default_rng([0, i, k, 0xEFF])
            assert np.array_equal(im, apply_view_effect(rng, c, sample_view_effect(rng, fx_preset))), (cam, i)
            assert not np.array_equal(im, c)
    assert _recorded(tmp_path / "fx")["camera_effects"] == "robot"
    with pytest.raises(SystemExit):
        synth_main(["--out", str(tmp_path / "x"), "--camera-effects", "blurry"])
