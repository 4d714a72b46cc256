"""Realistic per-frame camera degradations for synthetic images: sensor noise, motion blur, exposure.

A robot's camera rarely delivers the clean images :mod:`da3_ros.sim.scene` renders: every frame
carries sensor noise, and some frames are smeared by motion blur during a fast turn, or under- or
over-exposed while auto-exposure catches up with a change of light. A network that sees several
views of a window can fill in what one bad frame lost from its neighbours; a single-view network
cannot. The training data (``da3_ros.training.data``) and the held-out evaluation
(``da3_ros.training.evaluate --camera-effects robot``) draw their degradations from here.

Images are ``(H, W, 3)`` uint8 RGB. Everything is deterministic for a given numpy Generator.
ROS-free, numpy + OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["BAD_KINDS", "PRESETS", "CameraEffects", "ViewEffect", "apply_view_effect", "degrade_frame",
           "sample_view_effect", "sample_window_effects"]

BAD_KINDS = ("motion_blur", "dark", "bright")


@dataclass(frozen=True)
class CameraEffects:
    """Distribution of the degradations of one camera.

    Attributes:
        read_noise: range of the read-noise standard deviation, in 8-bit grey levels.
        shot_gain: range of the shot-noise gain: photon noise std is ``sqrt(shot_gain * level)``
            grey levels at a grey level ``level``.
        bad_view_prob: probability that a frame gets one strong degradation (``BAD_KINDS``).
        blur_frac: range of the motion-blur streak length as a fraction of the image width.
        dark_gain: range of the exposure factor of an under-exposed frame (noise is added after
            it, so a dark frame also has a worse signal-to-noise ratio).
        bright_gain: range of the exposure factor of an over-exposed frame (clipped at 255).
    """

    read_noise: tuple[float, float] = (1.0, 5.0)
    shot_gain: tuple[float, float] = (0.0, 0.5)
    bad_view_prob: float = 0.3
    blur_frac: tuple[float, float] = (0.03, 0.08)
    dark_gain: tuple[float, float] = (0.12, 0.3)
    bright_gain: tuple[float, float] = (2.2, 3.5)


# "robot": what the held-out evaluation uses; every third frame or so is a bad one.
# "severe": harsher and more frequent bad frames (for training: a view the network cannot read
# alone teaches it to take that view's depth from its neighbours).
PRESETS: dict[str, CameraEffects | None] = {
    "none": None,
    "robot": CameraEffects(),
    "severe": CameraEffects(read_noise=(1.0, 8.0), shot_gain=(0.0, 1.0), bad_view_prob=0.5,
                            blur_frac=(0.04, 0.15), dark_gain=(0.04, 0.3), bright_gain=(2.2, 6.0)),
}


@dataclass(frozen=True)
class ViewEffect:
    """The degradation of one frame (see :class:`CameraEffects` for units).

    ``kind`` is None for a frame with sensor noise only, else one of :data:`BAD_KINDS`;
    ``amount`` is the blur length as a fraction of the width, or the exposure factor.
    ``angle_rad`` is the blur direction in the image (0 = along +x).
    """

    read_noise: float
    shot_gain: float
    kind: str | None = None
    amount: float = 0.0
    angle_rad: float = 0.0


def _bad_part(rng: np.random.Generator, fx: CameraEffects) -> dict:
    """The strong degradation of one frame, or none (drawn with ``fx.bad_view_prob``)."""
    if rng.random() >= fx.bad_view_prob:
        return {}
    kind = BAD_KINDS[int(rng.integers(len(BAD_KINDS)))]
    ranges = {"motion_blur": fx.blur_frac, "dark": fx.dark_gain, "bright": fx.bright_gain}
    return {"kind": kind, "amount": float(rng.uniform(*ranges[kind])),
            "angle_rad": float(rng.uniform(0.0, np.pi))}


def sample_view_effect(rng: np.random.Generator, fx: CameraEffects) -> ViewEffect:
    """A frame's own noise level and, with ``fx.bad_view_prob``, one strong degradation."""
    read, shot = float(rng.uniform(*fx.read_noise)), float(rng.uniform(*fx.shot_gain))
    return ViewEffect(read_noise=read, shot_gain=shot, **_bad_part(rng, fx))


def sample_window_effects(rng: np.random.Generator, fx: CameraEffects, n_views: int) -> list[ViewEffect]:
    """Effects of a window's ``n_views`` frames: one noise level (one camera), bad frames drawn per view."""
    read, shot = float(rng.uniform(*fx.read_noise)), float(rng.uniform(*fx.shot_gain))
    return [ViewEffect(read_noise=read, shot_gain=shot, **_bad_part(rng, fx)) for _ in range(n_views)]


def _motion_kernel(length_px: float, angle_rad: float) -> np.ndarray:
    """Normalised (k, k) line kernel of ``length_px`` pixels along ``angle_rad``."""
    k = max(3, int(np.ceil(length_px)) | 1)
    kernel = np.zeros((k, k), np.float32)
    c = (k - 1) / 2.0
    dx, dy = np.cos(angle_rad), np.sin(angle_rad)
    for t in np.linspace(-length_px / 2.0, length_px / 2.0, 4 * k):
        x, y = int(round(c + t * dx)), int(round(c + t * dy))
        if 0 <= x < k and 0 <= y < k:
            kernel[y, x] = 1.0
    return kernel / kernel.sum()


def apply_view_effect(rng: np.random.Generator, image: np.ndarray, effect: ViewEffect) -> np.ndarray:
    """Degrade one ``(H, W, 3)`` uint8 image: exposure or motion blur, then sensor noise, then 8 bits.

    Args:
        rng: source of the noise.
        image: (H, W, 3) uint8 RGB.
        effect: what to do (see :class:`ViewEffect`).

    Returns:
        (H, W, 3) uint8 RGB, a new array.
    """
    x = image.astype(np.float32)
    if effect.kind == "motion_blur":
        kernel = _motion_kernel(effect.amount * image.shape[1], effect.angle_rad)
        x = cv2.filter2D(x, -1, kernel, borderType=cv2.BORDER_REFLECT)
    elif effect.kind in ("dark", "bright"):
        x = np.minimum(x * np.float32(effect.amount), 255.0)
    std = np.sqrt(np.float32(effect.read_noise) ** 2 + np.float32(effect.shot_gain) * x)
    x = x + std * rng.standard_normal(x.shape, dtype=np.float32)
    return np.clip(x + 0.5, 0.0, 255.0).astype(np.uint8)


def degrade_frame(image: np.ndarray, fx: CameraEffects, seed: int, frame_index: int,
                  camera_index: int | None = None) -> tuple[np.ndarray, ViewEffect]:
    """A recorded sequence's frame degraded by its own draw: ``(image, the effect it got)``.

    The draw comes from the key ``(seed, frame_index, 0xEFF)``, or ``(seed, frame_index,
    camera_index, 0xEFF)`` for a camera of a rig, so the held-out evaluation
    (``da3_ros.training.evaluate``) and one-camera ``da3-synth`` bags degrade the same frame
    the same way, whatever else is drawn.

    Args:
        image: (H, W, 3) uint8 RGB.
        fx: the camera's degradation distribution.
        seed: the scene seed.
        frame_index: index of the frame in its sequence.
        camera_index: the camera of a rig, None for a one-camera sequence.
    """
    key = [int(seed), int(frame_index)] + ([] if camera_index is None else [int(camera_index)])
    rng = np.random.default_rng(key + [0xEFF])
    effect = sample_view_effect(rng, fx)
    return apply_view_effect(rng, image, effect), effect
