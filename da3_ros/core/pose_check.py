"""Pose sanity: a window whose motion the images do not support, or that jumps, is not chained.

The network's poses are estimates; chaining lets their errors add up with no check, so a camera
that never moves can turn through 180 degrees. Each window is reviewed after alignment
(:class:`PoseCheck`, used by :class:`da3_ros.core.alignment.WindowChainer`), with the settings of
:class:`da3_ros.core.config.PipelineConfig`:

- **static** (the images did not change): for each camera the check keeps an *anchor*, the
  image of the newest frame of the last window whose motion was chained. A window is static when,
  for every camera, each of its new frames differs from the camera's anchor by less than
  ``static_max_shift_px`` of image shift (phase correlation on a grey thumbnail, in source
  pixels) and less than ``static_max_change`` of mean absolute difference of the thumbnails
  normalised to zero mean and unit standard deviation (which catches motion along the optical
  axis and rotation about it, where the shift stays 0, and ignores exposure changes).
- **jump** (the motion is inconsistent with what was published): after alignment, a new view
  turns more than ``pose_jump_deg`` from the previous published (or earlier new) view of its
  camera, or moves further than ``pose_jump_depth_ratio`` times that view's median depth; or the
  window disagrees with the frames it shares with published windows by more than
  ``pose_jump_deg`` of rotation or ``pose_jump_depth_ratio`` median depths of camera centre
  (the alignment's residuals): two windows that place the same frames that differently cannot
  both be right.

Policy for a static or jumping window (``held``): its motion is not chained. Every view is
published where its camera was last published (views already published keep their poses; in
the first window, where each camera's first view is), its depth is still scaled onto the
published frames, and the anchor stays. The node counts held windows in ``/diagnostics``
(``pose_held.static``, ``pose_held.jump``, and the last jump's reason); jumps make the status
WARN. So a static camera stays exactly still (tolerance 0 in pose) for as long as its images
stay within the thresholds; motion slower than about ``static_max_shift_px`` between the anchor
and the newest frame is not tracked (it is below what the images show, and below the network's
noise on real images). A camera-pose source (``Frame.world_from_cam``) is never second-guessed:
windows aligned to known poses are not reviewed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from da3_ros.core.frames import Frame, thumb_medians
from da3_ros.core.geometry import invert_rigid, rotation_angle_deg

#: Long side of the grey thumbnail the image-change measures use, pixels.
MOTION_THUMB_SIDE = 160


@dataclass
class MotionThumb:
    """A grey thumbnail for :func:`image_motion`: ``grey`` (h, w) float32, ``scale`` source px per px."""

    grey: np.ndarray
    scale: float


def motion_thumb(image: np.ndarray, max_side: int = MOTION_THUMB_SIDE) -> MotionThumb:
    """Grey thumbnail of an RGB uint8 image ``(H, W, 3)``, long side ``max_side`` (area average)."""
    h, w = image.shape[:2]
    s = min(1.0, max_side / max(h, w))
    size = (max(8, round(w * s)), max(8, round(h * s)))
    grey = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)
    return MotionThumb(grey.astype(np.float32), w / size[0])


def image_motion(a: MotionThumb, b: MotionThumb) -> tuple[float, float]:
    """How much image ``b`` differs from image ``a`` (same camera, same size).

    Returns:
        (shift: the phase-correlation translation, source pixels; change: the mean absolute
        difference of the two thumbnails, each blurred (Gaussian, sigma 1 thumbnail pixel: sensor
        noise averages out, structure moving by a pixel does not) and normalised to zero mean and
        unit std (exposure changes cancel)).
    """
    window = cv2.createHanningWindow(a.grey.shape[::-1], cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(a.grey.copy(), b.grey.copy(), window)  # it windows its inputs in place
    na, nb = (_normalised(cv2.GaussianBlur(t.grey, (0, 0), 1.0)) for t in (a, b))
    return float(np.hypot(dx, dy) * a.scale), float(np.mean(np.abs(na - nb)))


def _normalised(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / max(float(x.std()), 1e-3)


class PoseCheck:
    """Reviews aligned windows (see the module docstring).

    Reads its thresholds from ``config`` (a :class:`~da3_ros.core.config.PipelineConfig`) at
    every window, so changed settings apply at once.

    Keeps one :class:`MotionThumb` anchor per camera (about 80 KB for a 160 x 120 thumbnail).
    """

    def __init__(self, config):
        self.config = config
        self.anchors: dict[str, MotionThumb] = {}

    def review(self, frames: list[Frame], poses: np.ndarray, is_new: np.ndarray, thumbs: list[np.ndarray],
               last_published, al) -> tuple[str, str] | None:
        """Whether an aligned window is held, and why.

        Args:
            frames: the window's S frames.
            poses: (S, 4, 4) aligned camera-to-world poses (global frame, OpenCV optical axes).
            is_new: (S,) views published for the first time.
            thumbs: S depth thumbnails in global units.
            last_published: ``camera -> (pose (4, 4), depth thumbnail) | None``, the camera's newest
                published view before this window.
            al: the window's :class:`~da3_ros.core.alignment.Alignment`.

        Returns:
            None (chain it), or ``(kind, reason)`` with kind ``"static"`` or ``"jump"``.
        """
        cfg = self.config
        if not cfg.pose_check or not is_new.any():
            return None
        newest, reason = self._static(frames, is_new)
        if reason is None:
            reason = self._jump(frames, poses, is_new, thumbs, last_published, al)
            if reason is None:
                self.anchors.update(newest)  # chained: the images the next windows compare with
                return None
            return "jump", reason
        return "static", reason

    def _static(self, frames: list[Frame], is_new: np.ndarray) -> tuple[dict[str, MotionThumb], str | None]:
        """(each camera's newest new-frame thumbnail, the reason when every new frame is static).

        Each camera's newest new frame is compared first: a moving camera (the usual case) is
        known from that one comparison, and the older new frames are compared only while every
        comparison so far says static (the verdict is the one of comparing all of them).
        """
        cfg = self.config
        new = [i for i in range(len(frames)) if is_new[i]]
        newest_of = {frames[i].camera: i for i in new}  # camera -> its newest new frame
        for cam in newest_of:
            if cam not in self.anchors:  # a camera's first window: its first frame is the reference
                first = next(j for j, g in enumerate(frames) if g.camera == cam)
                self.anchors[cam] = motion_thumb(frames[first].image)
        newest: dict[str, MotionThumb] = {}
        worst = (0.0, 0.0)
        for i in list(newest_of.values()) + [i for i in reversed(new) if i not in newest_of.values()]:
            f = frames[i]
            thumb = motion_thumb(f.image)
            if i == newest_of[f.camera]:
                newest[f.camera] = thumb
            anchor = self.anchors[f.camera]
            moved = anchor.grey.shape != thumb.grey.shape
            if not moved:
                shift, change = image_motion(anchor, thumb)
                worst = (max(worst[0], shift), max(worst[1], change))
                moved = not (shift < cfg.static_max_shift_px and change < cfg.static_max_change)
            if moved:
                for cam, j in newest_of.items():
                    if cam not in newest:
                        newest[cam] = motion_thumb(frames[j].image)
                return newest, None
        return newest, (f"images unchanged (shift {worst[0]:.2f} px < static_max_shift_px "
                        f"{cfg.static_max_shift_px:g}, change {worst[1]:.3f} < static_max_change "
                        f"{cfg.static_max_change:g})")

    def _jump(self, frames, poses, is_new, thumbs, last_published, al) -> str | None:
        cfg = self.config
        medians = thumb_medians(thumbs, positive=True)  # each view's, in one sort
        prev: dict[str, tuple[np.ndarray, float | None] | None] = {}
        for i, f in enumerate(frames):
            if not is_new[i]:
                continue
            if f.camera not in prev:
                last = last_published(f.camera)
                prev[f.camera] = None if last is None else (last[0], _median(last[1]))
            before = prev[f.camera]
            prev[f.camera] = (poses[i], medians[i])
            if before is None:
                continue
            step = invert_rigid(before[0]) @ poses[i]
            turn, move = rotation_angle_deg(step[:3, :3]), float(np.linalg.norm(step[:3, 3]))
            depth = before[1]
            where = f"[{f.camera}] frame {f.stamp_ns * 1e-9:.3f} s"
            if turn > cfg.pose_jump_deg:
                return (f"{where} turned {turn:.1f} deg from the previous frame "
                        f"(> pose_jump_deg {cfg.pose_jump_deg:g})")
            if depth and move > cfg.pose_jump_depth_ratio * depth:
                return (f"{where} moved {move / depth:.2f} median depths from the previous frame "
                        f"(> pose_jump_depth_ratio {cfg.pose_jump_depth_ratio:g})")
        if al.method == "shared" and al.n_matched >= 2:
            if al.rot_residual_deg > cfg.pose_jump_deg:
                return (f"window disagrees with the published frames it shares by {al.rot_residual_deg:.1f} "
                        f"deg (> pose_jump_deg {cfg.pose_jump_deg:g})")
            depth = _median(np.concatenate([t.ravel() for t in thumbs]))
            ratio = cfg.pose_jump_depth_ratio
            if depth and al.residual > ratio * depth:
                return (f"window places the frames it shares {al.residual / depth:.2f} median depths "
                        f"away from where they were published (> pose_jump_depth_ratio {ratio:g})")
        return None


def _median(depth: np.ndarray) -> float | None:
    """Median of the finite positive values, or None."""
    return thumb_medians([depth], positive=True)[0]
