"""Held-out evaluation with robot-camera degradations: exact depth, labelled frames, per-kind scores."""

from __future__ import annotations

import math

import numpy as np
import torch

from da3_ros.sim.camera_effects import BAD_KINDS
from da3_ros.training import evaluate as E

SIZE = {"frames": 12, "width": 56, "height": 42, "rate_hz": 10.0}


def _render(effects: str, frames: int = SIZE["frames"]):
    return E.render_sequence("room", 501, frames, SIZE["width"], SIZE["height"], SIZE["rate_hz"],
                             camera_effects=effects)


def test_render_sequence_degrades_images_only_and_labels_each_frame():
    plain = E.render_sequence("room", 501, SIZE["frames"], SIZE["width"], SIZE["height"], SIZE["rate_hz"])
    none, robot = _render("none"), _render("robot")
    assert len(plain) == len(none) == len(robot) == 4
    # "none" is the plain render, every frame clean.
    assert none[3] == ["clean"] * SIZE["frames"]
    for a, b in zip(plain[0], none[0]):
        np.testing.assert_array_equal(a.image, b.image)
    # "robot": same depth and poses exactly, other images, every frame noisy or worse.
    frames, depth, poses, labels = robot
    np.testing.assert_array_equal(depth, none[1])
    np.testing.assert_array_equal(poses, none[2])
    assert len(labels) == len(frames) == SIZE["frames"]
    assert set(labels) <= {"noise", *BAD_KINDS}
    assert "noise" in labels and set(labels) & set(BAD_KINDS)
    for f, c, label in zip(frames, none[0], labels):
        assert f.image.dtype == np.uint8 and f.image.shape == c.image.shape
        assert not np.array_equal(f.image, c.image), label
        assert f.stamp_ns == c.stamp_ns
    # An exposure label matches what happened to the image.
    for f, c, label in zip(frames, none[0], labels):
        if label == "dark":
            assert f.image.mean() < 0.5 * c.image.mean()
        elif label == "bright":
            assert f.image.mean() > c.image.mean()
    # Deterministic per (scene, frame index): a shorter sequence sees the same first frames.
    short = _render("robot", frames=6)
    assert short[3] == labels[:6]
    for a, b in zip(short[0], frames[:6]):
        np.testing.assert_array_equal(a.image, b.image)


def test_evaluate_reports_depth_by_frame_kind():
    threads = torch.get_num_threads()  # evaluate() sets the process-wide torch thread count
    try:
        result = E.evaluate(E.parse_args(["--model", "da3-tiny", "--frames", "6", "--width", "56",
                                          "--height", "42", "--process-res", "56", "--scenes", "1",
                                          "--num-view", "3", "--camera-effects", "robot"]))
    finally:
        torch.set_num_threads(threads)
    assert result["camera_effects"] == "robot"
    by_kind = result["by_frame_kind"]
    _, _, _, labels = E.render_sequence(*E.HELD_OUT[0], 6, 56, 42, 10.0, "robot")
    assert set(by_kind) == set(labels)
    (scene,) = result["per_scene"].values()
    assert sum(v["frames"] for v in by_kind.values()) == scene["frames_scored"] == 6
    for label, v in by_kind.items():
        assert v["frames"] == labels.count(label)
        assert math.isfinite(v["abs_rel"]) and 0.0 <= v["delta1"] <= 1.0
    # Same frames as the scene's frame-averaged depth score: the frame-weighted mean gives it back.
    assert scene["depth_frames"] == 6
    for key in ("abs_rel", "delta1"):
        total = sum(v["frames"] * v[key] for v in by_kind.values()) / 6
        assert math.isclose(total, scene[key], rel_tol=1e-9), key
