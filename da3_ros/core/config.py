"""The pipeline's configuration: the one home of its defaults and choice lists.

The node's parameters (:mod:`da3_ros.ros.parameters`), ``da3-eval`` and the docs read the
defaults and choices from here. No numpy, no torch: the parameter table imports it at start-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Windowing modes: one camera over time, or a synchronised rig.
WINDOW_MODES: tuple[str, ...] = ("temporal", "multicam")
#: What a full inference queue drops (see :class:`PipelineConfig`).
QUEUE_POLICIES: tuple[str, ...] = ("drop_oldest", "keep_latest")
#: Cross-window alignment: auto = se3 for metric predictors, sim3 for relative ones.
ALIGN_MODES: tuple[str, ...] = ("auto", "sim3", "se3", "none")
#: Words of an output resolution policy (see :func:`output_size`); a number is a long side.
OUTPUT_RESOLUTIONS: tuple[str, ...] = ("source", "network")
#: Smallest long side an output resolution may name, in pixels.
MIN_OUTPUT_SIDE = 16


def parse_output_resolution(value: str | int) -> str | int:
    """An output resolution policy: ``source``, ``network``, or a long side in pixels (int).

    Raises:
        ValueError: anything else (the message lists what is accepted).
    """
    text = str(value).strip().lower()
    if text in OUTPUT_RESOLUTIONS:
        return text
    if text.isdigit() and int(text) >= MIN_OUTPUT_SIDE:
        return int(text)
    raise ValueError(f"output_resolution {value!r} is not one of {', '.join(OUTPUT_RESOLUTIONS)} "
                     f"or a long side in pixels (>= {MIN_OUTPUT_SIDE})")


def output_size(policy: str | int, source: tuple[int, int], network: tuple[int, int]) -> tuple[int, int]:
    """The (width, height) a view's depth, confidence and intrinsics are published at.

    Args:
        policy: a :func:`parse_output_resolution` result: ``source`` = the view's image size,
            ``network`` = the window's processed size (the network's output, no resampling),
            N = the image scaled so its long side is N pixels (never enlarged).
        source: the view's image (width, height).
        network: the window's processed (width, height).
    """
    if policy == "source":
        return source
    if policy == "network":
        return network
    w, h = source
    if max(w, h) <= int(policy):
        return source
    s = int(policy) / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def queue_capacity(queue_size: int, stride: int, frames_per_set: int = 1) -> int:
    """Frames the worker's queue holds: ``queue_size`` when > 0, else two windows of new frames.

    Two windows of new frames: ``2 * stride * frames_per_set``, at least 8.
    """
    if queue_size > 0:
        return queue_size
    return max(8, 2 * stride * max(1, frames_per_set))


@dataclass
class PipelineConfig:
    """Pipeline parameters (units in names; depth limits are in global units for relative models).

    ``queue_size``: frames waiting for the worker before ``queue_policy`` drops; 0 (the default):
    :attr:`queue_capacity` picks two windows of new frames, at least 8, so one window that runs
    slow (a GPU hiccup, a burst of publishing) delays frames instead of dropping them.
    ``queue_policy`` (AsyncPipeline, when the queue is full):
    ``drop_oldest`` evicts the oldest waiting frame to admit the new one (the queue keeps the most
    recent contiguous frames, good for overlapping windows); ``keep_latest`` discards every
    waiting frame and keeps only the new one (lowest latency). Both count ``queue_full`` drops.
    ``align``: ``auto`` = ``se3`` for metric predictors, else ``sim3``; ``none`` leaves each
    window in its own frame. ``publish_all_views``: clouds from all views, not only new ones.

    ``cloud_pixel_step``: clouds use every k-th pixel of each view in both directions (4: 19,200
    points of a 640 x 480 view, so a 30 Hz camera's cloud stays a few MB/s; 1: every pixel).
    ``colorize`` / ``colorize_range``: also make each published view's depth image for viewing
    (:mod:`da3_ros.core.visualize`; the range ``(near, far)``, ``(0, 0)`` per image), on the
    predictor's device when its prediction lives there.

    Pose sanity (:mod:`da3_ros.core.pose_check`, where the policy is described): ``pose_check``
    turns it on; a window is *static* when each new frame differs from its camera's anchor image
    by less than ``static_max_shift_px`` (phase-correlation shift, source pixels) and
    ``static_max_change`` (mean absolute difference of normalised thumbnails); it *jumps* when a
    new view turns more than ``pose_jump_deg`` or moves more than ``pose_jump_depth_ratio`` median
    depths from its camera's previous view, or disagrees that much with the frames it shares.
    Static and jumping windows are held: their motion is not chained.

    ``rig_extrinsics``: ``camera -> [x, y, z, qx, qy, qz, qw]``, the camera's optical frame in a
    common rig frame (metres; empty: not calibrated): :mod:`da3_ros.core.rig` makes each window's
    relative poses the calibrated ones and, with every camera calibrated, puts windows in metres.

    ``finish_thread`` (AsyncPipeline): chain, build the cloud and colour each window on a thread
    of its own while the worker runs the next window's network (:mod:`da3_ros.core.finishing`);
    off: both on the worker, one after the other.

    Attributes beyond the shared contract: ``min_views`` (smallest window a memory shrink or OOM
    retry may run), ``memory_planning`` (ask ``predictor.plan`` before each window),
    ``keep_frames`` (upper bound on the
    published frames remembered for chaining; the pipeline keeps at most the windower's history
    span, ``max((num_view - 1) * max(dilations) + 1, 2)`` items of one frame per camera, since
    no later window can share an older frame).
    """

    mode: str = "temporal"
    cameras: list[str] = field(default_factory=list)
    num_view: int = 4
    stride: int = 2
    dilations: tuple[int, ...] = (1,)
    slop_s: float = 0.02
    keyframe_min_dt_s: float = 0.0
    keyframe_min_change: float = 0.0
    queue_size: int = 0
    queue_policy: str = "drop_oldest"
    conf_threshold: float = 0.0
    min_depth_m: float = 0.0
    max_depth_m: float = math.inf
    voxel_size_m: float = 0.0
    max_points: int = 200_000
    align: str = "auto"
    publish_all_views: bool = False
    cloud_pixel_step: int = 4
    colorize: bool = False
    colorize_range: tuple[float, float] = (0.0, 0.0)
    pose_check: bool = True
    static_max_shift_px: float = 0.5
    static_max_change: float = 0.05
    pose_jump_deg: float = 20.0
    pose_jump_depth_ratio: float = 0.5
    rig_extrinsics: dict[str, tuple[float, ...]] = field(default_factory=dict)
    min_views: int = 2
    memory_planning: bool = True
    finish_thread: bool = True
    keep_frames: int = 512

    @property
    def queue_capacity(self) -> int:
        """Frames the worker's queue holds: ``queue_size``, or for 0 two windows of new frames, >= 8.

        A window's new frames: ``stride`` frames, or in multicam mode ``stride`` sets of one frame
        per camera.
        """
        per_set = len(self.cameras) if self.mode == "multicam" else 1
        return queue_capacity(self.queue_size, self.stride, per_set)

    @staticmethod
    def normalised(values: dict) -> dict:
        """Parameter values as config fields.

        ``max_depth_m`` 0 (the parameters' "no limit") becomes inf; ``dilations`` a tuple of ints.
        """
        out = dict(values)
        if "max_depth_m" in out and not out["max_depth_m"]:
            out["max_depth_m"] = math.inf
        if "dilations" in out:
            out["dilations"] = tuple(int(d) for d in out["dilations"])
        return out

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        checks = [
            (self.mode in WINDOW_MODES, "mode must be 'temporal' or 'multicam'"),
            (self.mode != "multicam" or len(self.cameras) >= 1, "multicam mode needs cameras"),
            (self.num_view >= 1 and self.stride >= 1, "num_view and stride must be >= 1"),
            (len(self.dilations) >= 1 and min(self.dilations) >= 1, "dilations must be >= 1"),
            (self.queue_size >= 0, "queue_size must be >= 0 (0: auto)"),
            (self.queue_policy in QUEUE_POLICIES, f"queue_policy: {'|'.join(QUEUE_POLICIES)}"),
            (self.align in ALIGN_MODES, f"align must be {'|'.join(ALIGN_MODES)}"),
            (self.slop_s >= 0 and self.min_depth_m >= 0 and self.max_depth_m > self.min_depth_m,
             "slop_s >= 0 and 0 <= min_depth_m < max_depth_m"),
            (self.cloud_pixel_step >= 1 and self.max_points >= 0, "cloud_pixel_step >= 1, max_points >= 0"),
            (min(self.static_max_shift_px, self.static_max_change) >= 0
             and min(self.pose_jump_deg, self.pose_jump_depth_ratio) > 0,
             "static_max_shift_px, static_max_change >= 0; pose_jump_deg, pose_jump_depth_ratio > 0"),
        ]
        checks += [(len(v) in (0, 7) and all(math.isfinite(x) for x in v),
                    f"rig_extrinsics[{c!r}] must be empty or [x, y, z, qx, qy, qz, qw]")
                   for c, v in self.rig_extrinsics.items()]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"PipelineConfig: {msg}")
