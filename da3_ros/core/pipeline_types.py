"""Pipeline data types: configuration, statistics, per-window results and the window cloud.

Re-exported by :mod:`da3_ros.core.pipeline`; import them from there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from da3_ros.core.alignment import Alignment
from da3_ros.core.frames import Frame, WindowPrediction
from da3_ros.core.geometry import colored_points, voxel_downsample


@dataclass
class PipelineConfig:
    """Pipeline parameters (units in names; depth limits are in global units for relative models).

    ``queue_policy`` (AsyncPipeline, when ``queue_size`` frames are already waiting):
    ``drop_oldest`` evicts the oldest waiting frame to admit the new one (the queue keeps the most
    recent contiguous frames, good for overlapping windows); ``keep_latest`` discards every
    waiting frame and keeps only the new one (lowest latency). Both count ``queue_full`` drops.
    ``align``: ``auto`` = ``se3`` for metric predictors, else ``sim3``; ``none`` leaves each
    window in its own frame. ``publish_all_views``: clouds from all views, not only new ones.

    Attributes beyond the shared contract: ``min_views`` (smallest window a memory shrink or OOM
    retry may run), ``memory_planning`` (ask ``predictor.plan`` before each window),
    ``cloud_pixel_step`` (use every k-th pixel for clouds), ``keep_frames`` (upper bound on the
    published frames remembered for chaining; the pipeline keeps at most the windower's history
    span, ``max((num_view - 1) * max(dilations) + 1, 2)`` items of one frame per camera, since
    no later window can share an older frame).
    """

    mode: str = "temporal"
    cameras: list[str] = field(default_factory=list)
    num_view: int = 8
    stride: int = 4
    dilations: tuple[int, ...] = (1,)
    slop_s: float = 0.02
    keyframe_min_dt_s: float = 0.0
    keyframe_min_change: float = 0.0
    queue_size: int = 8
    queue_policy: str = "drop_oldest"
    conf_threshold: float = 0.0
    min_depth_m: float = 0.0
    max_depth_m: float = math.inf
    voxel_size_m: float = 0.0
    max_points: int = 200_000
    align: str = "auto"
    publish_all_views: bool = False
    min_views: int = 2
    memory_planning: bool = True
    cloud_pixel_step: int = 1
    keep_frames: int = 512

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        checks = [
            (self.mode in ("temporal", "multicam"), "mode must be 'temporal' or 'multicam'"),
            (self.mode != "multicam" or len(self.cameras) >= 1, "multicam mode needs cameras"),
            (self.num_view >= 1 and self.stride >= 1, "num_view and stride must be >= 1"),
            (len(self.dilations) >= 1 and min(self.dilations) >= 1, "dilations must be >= 1"),
            (self.queue_size >= 1, "queue_size must be >= 1"),
            (self.queue_policy in ("drop_oldest", "keep_latest"), "queue_policy: drop_oldest|keep_latest"),
            (self.align in ("auto", "sim3", "se3", "none"), "align must be auto|sim3|se3|none"),
            (self.slop_s >= 0 and self.min_depth_m >= 0 and self.max_depth_m > self.min_depth_m,
             "slop_s >= 0 and 0 <= min_depth_m < max_depth_m"),
            (self.cloud_pixel_step >= 1 and self.max_points >= 0, "cloud_pixel_step >= 1, max_points >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"PipelineConfig: {msg}")


@dataclass
class PipelineStats:
    """Counters (frames unless stated) and latencies (seconds: newest frame's arrival -> result).

    ``received == processed + dropped_total + pending`` always holds; ``queue_len`` (frames
    waiting for the worker) is part of ``pending``.
    """

    received: int = 0
    processed: int = 0
    windows: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    queue_len: int = 0
    errors: int = 0
    events: dict[str, int] = field(default_factory=dict)
    latency_last_s: float = 0.0
    latency_mean_s: float = 0.0
    latency_max_s: float = 0.0
    window_time_mean_s: float = 0.0
    last_error: str = ""

    @property
    def dropped_total(self) -> int:
        """Sum of all drop reasons."""
        return int(sum(self.dropped.values()))

    def as_dict(self) -> dict:
        """Plain dict (copies), e.g. for diagnostics."""
        d = dict(self.__dict__)
        d["dropped"], d["events"] = dict(self.dropped), dict(self.events)
        d["dropped_total"] = self.dropped_total
        return d


@dataclass
class WindowResult:
    """One processed window, in the global frame.

    Attributes:
        prediction: the predictor's output with ``world_from_cam`` (S, 4, 4) global and depth
            scaled into global units.
        world_from_cam: (S, 4, 4) global camera-to-world poses (OpenCV optical axes).
        scale: global units per window unit; residual: RMS centre error on matched frames;
        drift: accumulated chaining error (see ``alignment``).
        is_new: (S,) bool, True for views published for the first time.
        points_world: (N, 3) float32, colors (N, 3) uint8, points_conf (N,) float32: the cloud of
            the new views (all views with ``publish_all_views``), filtered and downsampled.
        window_index: running count of results; timings_s: stage timings.
        alignment: the full Alignment; shrunk_from: S requested when the window was shrunk.
    """

    prediction: WindowPrediction
    world_from_cam: np.ndarray
    scale: float
    residual: float
    drift: float
    is_new: np.ndarray
    points_world: np.ndarray
    colors: np.ndarray
    points_conf: np.ndarray
    window_index: int
    timings_s: dict[str, float]
    alignment: Alignment | None = None
    shrunk_from: int = 0


def strided_view(pred: WindowPrediction, i: int, k: int) -> tuple[np.ndarray, ...]:
    """View ``i`` of a prediction at every ``k``-th pixel, the inputs of one view's cloud.

    Returns:
        depth (h, w), K (3, 3) rescaled for the kept pixels, world_from_cam (4, 4), image
        (h, w, 3), confidence (h, w); the maps are strided views, not copies.
    """
    K = pred.intrinsics[i].K.copy()
    K[:2] /= k  # exact for pixels u = k * u'
    return (pred.depth[i][::k, ::k], K, pred.world_from_cam[i], pred.frames[i].image[::k, ::k],
            pred.confidence[i][::k, ::k])


def window_cloud(pred: WindowPrediction, views: list[int], cfg: PipelineConfig,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fused coloured cloud of ``views`` of an aligned prediction (global frame)."""
    parts = [colored_points(*strided_view(pred, i, cfg.cloud_pixel_step), cfg.conf_threshold, cfg.min_depth_m,
                            cfg.max_depth_m) for i in views]
    if not parts:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32)
    pts, cols, conf = (np.concatenate(x) for x in zip(*parts))
    pts, cols, conf = voxel_downsample(pts, cols, conf, cfg.voxel_size_m)
    if cfg.max_points and len(pts) > cfg.max_points:
        keep = np.sort(rng.choice(len(pts), cfg.max_points, replace=False))
        pts, cols, conf = pts[keep], cols[keep], conf[keep]
    return pts, cols, conf


def check_prediction(pred: WindowPrediction, frames: list[Frame]) -> None:
    """Raise ValueError when a predictor's output does not fit its S input frames."""
    S = len(frames)
    if len(pred.depth) != S or pred.world_from_cam.shape != (S, 4, 4) or len(pred.intrinsics) != S:
        raise ValueError(f"predictor returned {len(pred.depth)} depths / {pred.world_from_cam.shape} poses "
                         f"for {S} frames")
    for f, d in zip(frames, pred.depth):
        if d.shape != (f.height, f.width):
            raise ValueError(f"depth {d.shape} does not match frame {(f.height, f.width)}")
    if not np.all(np.isfinite(pred.world_from_cam)):
        raise ValueError("predictor returned non-finite poses")
