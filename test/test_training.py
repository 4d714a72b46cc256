"""Training code on CPU: loss values, a few steps learn, checkpoint resume is exact, export loads."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from da3_ros.model.weights import load_pretrained
from da3_ros.training import losses as L
from da3_ros.training import train as T
from da3_ros.training.data import DataConfig, SyntheticWindows, make_batch, make_group, normalise_window

TINY_ARGS = ["--device", "cpu", "--views-per-batch", "4", "--min-views", "2", "--max-views", "2",
             "--size", "42", "56", "--warmup-steps", "2", "--lr", "1e-3", "--log-every", "1",
             "--minutes", "30"]


def _rot_z(theta: float) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def window():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(1, 2, 6, 8, generator=g) + 0.5
    valid = torch.ones_like(gt, dtype=torch.bool)
    valid[..., 0, 0] = False
    return gt, valid


def test_depth_losses_zero_when_perfect_and_known_for_known_errors(window):
    gt, valid = window
    ones = torch.ones_like(gt)
    assert float(L.depth_conf_loss(gt, ones, gt, valid)) == pytest.approx(0.0, abs=1e-7)
    assert float(L.depth_l1_loss(gt, gt, valid)) == 0.0
    assert float(L.depth_grad_loss(gt, gt, valid)) == 0.0
    # A constant offset: L1 = offset, gradient term 0 (no structure error), conf term known.
    off = gt + 0.1
    assert float(L.depth_l1_loss(off, gt, valid)) == pytest.approx(0.1, rel=1e-5)
    assert float(L.depth_grad_loss(off, gt, valid)) == pytest.approx(0.0, abs=1e-6)
    conf = 2.0 * ones
    assert float(L.depth_conf_loss(off, conf, gt, valid, alpha=0.2)) == pytest.approx(
        2 * 0.1 - 0.2 * math.log(2.0), rel=1e-5)
    # Invalid pixels never count: a huge error there changes nothing.
    bad = gt.clone()
    bad[..., 0, 0] = 1e6
    assert float(L.depth_l1_loss(bad, gt, valid)) == 0.0
    # Gradient term: a ramp error of slope 0.01 per pixel along x only -> (0.01 + 0) / 2.
    ramp = gt + 0.01 * torch.arange(8.0)
    assert float(L.depth_grad_loss(ramp, gt, torch.ones_like(valid))) == pytest.approx(0.005, rel=1e-4)
    # Sky: confidence 1 costs nothing, confidence 3 costs 2 on invalid pixels.
    assert float(L.sky_conf_loss(ones, valid)) == 0.0
    assert float(L.sky_conf_loss(3.0 * ones, valid)) == pytest.approx(2.0)


def _cameras():
    """Two views: view 0 at the origin, view 1 rotated about z by 0.3 rad, centre (1, 2, 3)."""
    c2w = torch.eye(4).repeat(1, 2, 1, 1)
    c2w[0, 1, :3, :3] = _rot_z(0.3)
    c2w[0, 1, :3, 3] = torch.tensor([1.0, 2.0, 3.0])
    K = torch.tensor([[100.0, 0, 40], [0, 90.0, 30], [0, 0, 1]]).repeat(1, 2, 1, 1)
    return c2w, K


def test_camera_losses_zero_when_perfect_and_known_for_known_errors():
    c2w, K = _cameras()
    w2c = torch.linalg.inv(c2w)[..., :3, :]
    hw = (60, 80)
    perfect = L.camera_losses(w2c, K, c2w, K, hw)
    for name, value in perfect.items():
        assert float(value) == pytest.approx(0.0, abs=2e-5), name
    # Known errors: view 1's centre off by (0.5, 0, -0.5), rotation off by 0.2 rad, fx off by 8 px.
    wrong = c2w.clone()
    wrong[0, 1, :3, 3] += torch.tensor([0.5, 0.0, -0.5])
    wrong[0, 1, :3, :3] = _rot_z(0.5)
    k_wrong = K.clone()
    k_wrong[0, 1, 0, 0] += 8.0
    got = L.camera_losses(torch.linalg.inv(wrong)[..., :3, :], k_wrong, c2w, K, hw)
    assert float(got["cam_t"]) == pytest.approx(1.0 / 2, rel=1e-4)  # |0.5|+|0.5| on one of 2 views
    assert float(got["cam_rot"]) == pytest.approx(2 * math.sqrt(2) * math.sin(0.1) / 2, rel=1e-3)
    assert float(got["focal"]) == pytest.approx(8.0 / 80 / 2, rel=1e-4)


def test_normalise_window_sets_mean_depth_one_and_view0_world():
    rng = np.random.default_rng(0)
    depth = rng.uniform(2.0, 6.0, (3, 5, 7)).astype(np.float32)
    depth[0, 0, :3] = np.inf
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, :3, 3] = [[1.0, 1.0, 1.0], [2.0, 1.0, 1.0], [1.0, 3.0, 1.0]]
    out = normalise_window(depth, poses)
    assert out["depth"][out["valid"]].mean() == pytest.approx(1.0, rel=1e-5)
    assert not out["valid"][0, 0, :3].any() and (out["depth"][0, 0, :3] == 0).all()
    np.testing.assert_allclose(out["cam_to_ref"][0], np.eye(4), atol=1e-6)
    mean = depth[np.isfinite(depth)].mean()
    np.testing.assert_allclose(out["cam_to_ref"][1, :3, 3], [1.0 / mean, 0, 0], rtol=1e-5)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    args = T.parse_args(["--out", "unused", *TINY_ARGS])
    net = T.init_model("da3-tiny", torch.device("cpu"))
    opt = T.make_optimizer(net, 1e-3, 0.0)
    batch = make_batch(0, T.data_config(args))
    assert batch["images"].shape[:2] == (2, 2) and batch["images"].shape[-2] % 14 == 0

    def loss_now() -> float:
        with torch.no_grad():
            return L.total_loss(net(batch["images"], ref_view_strategy="first"), batch)[1]["total"]

    before = loss_now()
    for _ in range(6):
        T.train_step(net, opt, batch, torch.device("cpu"), amp=False, clip=1.0)
    assert loss_now() < 0.8 * before


def test_batches_are_deterministic_per_step():
    cfg = DataConfig(views_per_batch=2, min_views=2, max_views=2, base_hw=(42, 56))
    a, b, c = make_batch(3, cfg), make_batch(3, cfg), make_batch(4, cfg)
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["cam_to_ref"], b["cam_to_ref"])
    assert a["images"].shape != c["images"].shape or not torch.equal(a["images"], c["images"])


def test_resume_continues_with_identical_state_and_exports_loadable_fp16(tmp_path: Path):
    straight = T.train(T.parse_args(["--out", str(tmp_path / "straight"), "--max-steps", "4", *TINY_ARGS]))
    T.train(T.parse_args(["--out", str(tmp_path / "part"), "--max-steps", "4", "--stop-step", "2",
                          *TINY_ARGS]))
    resumed = T.train(T.parse_args(["--out", str(tmp_path / "resumed"), "--max-steps", "4",
                                    "--resume", str(tmp_path / "part" / T.CHECKPOINT_NAME), *TINY_ARGS]))
    assert straight["steps"] == resumed["steps"] == 4
    a = torch.load(tmp_path / "straight" / T.CHECKPOINT_NAME, weights_only=False)
    b = torch.load(tmp_path / "resumed" / T.CHECKPOINT_NAME, weights_only=False)
    assert a["step"] == b["step"] == 4
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"])
    assert [r["total"] for r in a["log"]] == [r["total"] for r in b["log"]]
    # Export: official layout, fp16 on disk, fp32 after the strict loader, same outputs.
    net = load_pretrained(tmp_path / "straight" / "model")
    assert next(net.parameters()).dtype == torch.float32
    ref = T.init_model("da3-tiny", torch.device("cpu"))
    ref.load_state_dict(a["model"])
    x = torch.randn(1, 2, 3, 42, 56)
    with torch.no_grad():
        got, want = net(x, ref_view_strategy="first"), ref.eval()(x, ref_view_strategy="first")
    torch.testing.assert_close(got.depth, want.depth, rtol=5e-3, atol=1e-3)


TRUTH = ("depth", "valid", "cam_to_ref", "K")


def _small(**kw) -> DataConfig:
    return DataConfig(base_hw=(42, 56), **{"views_per_batch": 3, "min_views": 3, "max_views": 3, **kw})


def test_camera_effects_change_only_the_images():
    # One window per batch: rendering draws from the step's rng before any augmentation.
    for step in (0, 1, 2):
        clean, fx = make_batch(step, _small(effects_prob=0.0)), make_batch(step, _small(effects_prob=1.0))
        assert not torch.equal(clean["images"], fx["images"]), step
        for k in TRUTH:
            assert torch.equal(clean[k], fx[k]), (step, k)


def test_camera_effects_change_only_the_images_of_the_first_window_of_a_batch():
    # With B >= 2 windows the first window's truth is still the effects-free one.
    clean, fx = make_batch(0, _small(views_per_batch=6, effects_prob=0.0)), make_batch(
        0, _small(views_per_batch=6, effects_prob=1.0))
    assert clean["images"].shape[0] == 2
    for k in TRUTH:
        assert torch.equal(clean[k][0], fx[k][0]), k


def test_echo_reuses_the_rendered_windows_with_new_augmentation():
    cfg = _small(views_per_batch=6, echo=2, shuffle_prob=0.0, effects_prob=0.5)
    g = 1
    group = make_group(g, cfg)
    assert len(group) == 2
    first, second = group
    assert first["images"].shape == second["images"].shape
    for k in TRUTH:
        assert torch.equal(first[k], second[k]), k
    assert not torch.equal(first["images"], second["images"])
    # Steps map onto groups: step 2g+k is batch k of group g.
    for k in (0, 1):
        got = make_batch(2 * g + k, cfg)
        for key in ("images", *TRUTH):
            assert torch.equal(got[key], group[k][key]), (k, key)
    # The first batch of a group is the echo-free batch of step g (legacy stream unchanged),
    # also with shuffling and camera effects on.
    for kw in ({}, {"shuffle_prob": 0.5, "effects_prob": 0.5}):
        for step in (0, 1, 2):
            a, b = make_batch(2 * step, _small(echo=2, **kw)), make_batch(step, _small(echo=1, **kw))
            for key in ("images", *TRUTH):
                assert torch.equal(a[key], b[key]), (kw, step, key)


def test_echo_with_shuffling_gives_a_new_reference_view_of_the_same_views():
    cfg = _small(views_per_batch=8, min_views=4, max_views=4, echo=2, shuffle_prob=1.0)
    first, second = make_group(0, cfg)
    assert first["depth"].shape[:2] == (2, 4)
    assert not torch.equal(first["cam_to_ref"], second["cam_to_ref"])
    for w in range(2):
        va, vb = first["valid"][w], second["valid"][w]
        means_a = sorted(float(first["depth"][w, v][va[v]].mean()) for v in range(4))
        means_b = sorted(float(second["depth"][w, v][vb[v]].mean()) for v in range(4))
        np.testing.assert_allclose(means_a, means_b, rtol=1e-5)
        # Truth stays consistent: the reference view has the identity pose.
        torch.testing.assert_close(second["cam_to_ref"][w, 0], torch.eye(4), atol=1e-5, rtol=0)


def test_synthetic_windows_resumed_mid_group_skip_the_steps_done():
    cfg = _small(echo=2, effects_prob=0.5)
    ds = SyntheticWindows(cfg, start_step=3)
    first, second = ds[0], ds[1]
    assert [int(b["step"]) for b in first] == [3]
    assert [int(b["step"]) for b in second] == [4, 5]
    for batch in (*first, *second):
        want = make_batch(int(batch["step"]), cfg)
        for key in ("images", *TRUTH):
            assert torch.equal(batch[key], want[key]), (int(batch["step"]), key)


def test_resume_mid_echo_group_gives_identical_weights(tmp_path: Path):
    # Stop at step 1, the second batch of group 0; the resumed run must start there and cross
    # into group 1 (step 2).
    extra = ["--max-steps", "3", "--echo", "2", "--effects-prob", "0.5", *TINY_ARGS]
    T.train(T.parse_args(["--out", str(tmp_path / "straight"), *extra]))
    T.train(T.parse_args(["--out", str(tmp_path / "part"), "--stop-step", "1", *extra]))
    T.train(T.parse_args(["--out", str(tmp_path / "resumed"), "--resume",
                          str(tmp_path / "part" / T.CHECKPOINT_NAME), *extra]))
    a = torch.load(tmp_path / "straight" / T.CHECKPOINT_NAME, weights_only=False)
    p = torch.load(tmp_path / "part" / T.CHECKPOINT_NAME, weights_only=False)
    b = torch.load(tmp_path / "resumed" / T.CHECKPOINT_NAME, weights_only=False)
    assert p["step"] == 1 and a["step"] == b["step"] == 3
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert [r["total"] for r in a["log"]] == [r["total"] for r in b["log"]]


def test_view_scale_loss_is_zero_for_any_pixel_error_that_keeps_view_means_and_log_of_a_view_scale():
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(2, 3, 5, 6, generator=g) + 0.5
    valid = torch.rand(2, 3, 5, 6, generator=g) > 0.2
    valid[1, 2] = False  # a view without valid pixels is left out
    assert float(L.view_scale_loss(gt, gt, valid)) == pytest.approx(0.0, abs=1e-6)
    # Each view's mean kept, pixels permuted: per-pixel losses see it, the view-scale loss does not.
    flipped = gt.flip(-1)
    same_mean = flipped * ((gt * valid).sum((-1, -2), keepdim=True)
                         / (flipped * valid).sum((-1, -2), keepdim=True).clamp_min(1e-6))
    assert float(L.depth_l1_loss(same_mean, gt, valid)) > 0.05
    assert float(L.view_scale_loss(same_mean, gt, valid)) == pytest.approx(0.0, abs=1e-5)
    # One view of the 5 that have pixels scaled by 2: mean |log| error = log(2) / 5.
    scaled = gt.clone()
    scaled[0, 1] *= 2.0
    assert float(L.view_scale_loss(scaled, gt, valid)) == pytest.approx(math.log(2.0) / 5, rel=1e-5)


def test_scan_windows_look_around_more_than_survey_windows():
    # The same steps with and without the scan style: the views of scan windows turn further.
    def spread_deg(cfg):
        out = []
        for step in range(4):
            rel = make_batch(step, cfg)["cam_to_ref"][..., :3, 2]  # optical axes in view 0
            cos = rel[..., 2].clamp(-1, 1)  # against view 0's axis
            out.append(float(torch.rad2deg(torch.arccos(cos)).max()))
        return np.mean(out)

    base = {"views_per_batch": 8, "min_views": 8, "max_views": 8, "rig_prob": 0.0, "gap_s": (0.4, 0.5)}
    assert spread_deg(_small(scan_prob=1.0, **base)) > 2 * spread_deg(_small(**base)) + 10
