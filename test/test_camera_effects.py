"""Robot-camera degradations: deterministic, noise of the stated size, exposure and blur do what they say."""

from __future__ import annotations

import numpy as np
import pytest

from da3_ros.sim.camera_effects import (
    BAD_KINDS,
    PRESETS,
    CameraEffects,
    ViewEffect,
    apply_view_effect,
    sample_view_effect,
    sample_window_effects,
)


def _image(seed: int = 0, h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _flat(value: int, h: int = 128, w: int = 128) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _grad_energy(img: np.ndarray, axis: int) -> float:
    """Mean squared finite difference along ``axis`` (1 = x, 0 = y), away from the borders."""
    x = img.astype(np.float64)[8:-8, 8:-8]
    return float(np.mean(np.diff(x, axis=axis) ** 2))


def test_sampling_and_applying_are_deterministic_per_seed_and_return_a_new_uint8_array():
    fx = CameraEffects(bad_view_prob=0.5)
    img = _image()
    before = img.copy()
    outs = []
    for _ in range(2):
        rng = _rng(7)
        effects = [sample_view_effect(rng, fx) for _ in range(20)]
        outs.append((effects, [apply_view_effect(rng, img, e) for e in effects]))
    (fa, ia), (fb, ib) = outs
    assert fa == fb
    assert {e.kind for e in fa} - {None}, "bad_view_prob=0.5 over 20 draws gave no bad frame"
    for a, b in zip(ia, ib):
        assert a.dtype == np.uint8 and a.shape == img.shape
        np.testing.assert_array_equal(a, b)
        assert a is not img and not np.shares_memory(a, img)
    np.testing.assert_array_equal(img, before)  # input untouched
    # Another seed gives other noise.
    other = apply_view_effect(_rng(8), img, fa[0])
    assert not np.array_equal(other, ia[0])
    assert sample_window_effects(_rng(3), fx, 6) == sample_window_effects(_rng(3), fx, 6)


def test_no_noise_and_no_kind_is_the_identity():
    img = _image(1)
    out = apply_view_effect(_rng(), img, ViewEffect(read_noise=0.0, shot_gain=0.0))
    np.testing.assert_array_equal(out, img)
    assert out is not img


@pytest.mark.parametrize("sigma", [2.0, 5.0])
def test_read_noise_has_the_stated_std_and_no_bias(sigma: float):
    out = apply_view_effect(_rng(1), _flat(128), ViewEffect(read_noise=sigma, shot_gain=0.0))
    x = out.astype(np.float64)
    # 8-bit rounding adds 1/12 grey level^2 of variance.
    assert x.std() == pytest.approx(np.sqrt(sigma**2 + 1 / 12), rel=0.1)
    assert x.mean() == pytest.approx(128.0, abs=0.5)


def test_shot_noise_grows_with_the_grey_level():
    fx = ViewEffect(read_noise=0.0, shot_gain=1.0)
    dark = apply_view_effect(_rng(2), _flat(16), fx).astype(np.float64)
    light = apply_view_effect(_rng(2), _flat(196), fx).astype(np.float64)
    assert dark.std() == pytest.approx(4.0, rel=0.1)   # sqrt(1 * 16)
    assert light.std() == pytest.approx(14.0, rel=0.1)  # sqrt(1 * 196)


def test_exposure_scales_then_clips():
    dark = apply_view_effect(_rng(), _flat(200), ViewEffect(0.0, 0.0, kind="dark", amount=0.2))
    assert (dark == 40).all()
    bright = apply_view_effect(_rng(), _flat(100), ViewEffect(0.0, 0.0, kind="bright", amount=3.0))
    assert (bright == 255).all()
    half = apply_view_effect(_rng(), _flat(60), ViewEffect(0.0, 0.0, kind="bright", amount=2.5))
    assert (half == 150).all()


def _stripes(vertical: bool, period: int = 8, size: int = 96) -> np.ndarray:
    """Stripes of ``period`` pixels: vertical (vary along x) or horizontal (vary along y)."""
    line = np.where((np.arange(size) // (period // 2)) % 2 == 0, 40, 220).astype(np.uint8)
    img = np.tile(line[None, :], (size, 1)) if vertical else np.tile(line[:, None], (1, size))
    return np.repeat(img[..., None], 3, axis=2)


@pytest.mark.parametrize("angle, blurred_axis", [(0.0, 1), (np.pi / 2, 0)])
def test_motion_blur_smears_along_its_direction_only(angle: float, blurred_axis: int):
    # 0.1 * 96 px ~ 10 px streak, longer than the 8 px stripe period.
    fx = ViewEffect(read_noise=0.0, shot_gain=0.0, kind="motion_blur", amount=0.1, angle_rad=angle)
    across = _stripes(vertical=blurred_axis == 1)   # varies along the blur direction
    along = _stripes(vertical=blurred_axis == 0)    # constant along the blur direction
    out_across = apply_view_effect(_rng(), across, fx)
    out_along = apply_view_effect(_rng(), along, fx)
    assert _grad_energy(out_across, blurred_axis) < 0.1 * _grad_energy(across, blurred_axis)
    other = 1 - blurred_axis
    assert _grad_energy(out_along, other) == pytest.approx(_grad_energy(along, other), rel=0.02)
    assert np.abs(out_along.astype(int) - along.astype(int)).max() <= 1


def test_window_effects_share_one_noise_level_and_follow_bad_view_prob():
    for seed in range(5):
        always = sample_window_effects(_rng(seed), CameraEffects(bad_view_prob=1.0), 8)
        assert len(always) == 8
        assert len({(e.read_noise, e.shot_gain) for e in always}) == 1
        assert all(e.kind in BAD_KINDS for e in always)
        never = sample_window_effects(_rng(seed), CameraEffects(bad_view_prob=0.0), 8)
        assert len({(e.read_noise, e.shot_gain) for e in never}) == 1
        assert all(e.kind is None for e in never)
        fx = CameraEffects()
        lo, hi = fx.read_noise
        assert lo <= always[0].read_noise <= hi and fx.shot_gain[0] <= always[0].shot_gain <= fx.shot_gain[1]
    # Amounts come from the range of their kind.
    fx = CameraEffects(bad_view_prob=1.0)
    ranges = {"motion_blur": fx.blur_frac, "dark": fx.dark_gain, "bright": fx.bright_gain}
    effects = sample_window_effects(_rng(11), fx, 60)
    assert {e.kind for e in effects} == set(BAD_KINDS)
    for e in effects:
        assert ranges[e.kind][0] <= e.amount <= ranges[e.kind][1]
        assert 0.0 <= e.angle_rad <= np.pi


def test_presets():
    assert set(PRESETS) >= {"none", "robot", "severe"}
    assert PRESETS["none"] is None
    assert isinstance(PRESETS["robot"], CameraEffects) and isinstance(PRESETS["severe"], CameraEffects)
    assert PRESETS["severe"].bad_view_prob > PRESETS["robot"].bad_view_prob
