"""What the pipeline reports: statistics (frame accounting, latency) and per-window results."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from da3_ros.core.alignment import Alignment
from da3_ros.core.frames import Frame, WindowPrediction

#: Weight of the newest window in the moving means of ``PipelineStats.stage_ms`` (about the
#: last 1 / weight windows count).
STAGE_MEAN_WEIGHT = 0.1


def fold_stage_time(means_ms: dict[str, float], key: str, seconds: float) -> None:
    """Fold one window's ``seconds`` of stage ``key`` into the moving means ``means_ms`` (ms)."""
    ms = 1000.0 * float(seconds)
    old = means_ms.get(key)
    means_ms[key] = ms if old is None else old + STAGE_MEAN_WEIGHT * (ms - old)


@dataclass
class PipelineStats:
    """Counters (frames unless stated) and latencies (seconds: newest frame's arrival -> result).

    ``received == processed + dropped_total + pending`` always holds; ``queue_len`` (frames
    waiting for the worker) is part of ``pending``. ``stage_ms``: milliseconds per window of
    each stage (``preprocess``, ``network``, ``postprocess``, ``predict`` (those three: the
    worker's half of a window), ``align``, ``cloud``, ``colour``, ``finish`` (those three: the
    finishing thread's half), ``total`` (both halves)), a moving mean (:data:`STAGE_MEAN_WEIGHT`) over the
    recent windows. ``pose_held``: windows the pose check held, by kind (``static``,
    ``jump``); ``last_pose_jump``: the reason of the latest jump.
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
    pose_held: dict[str, int] = field(default_factory=dict)
    last_pose_jump: str = ""
    stage_ms: dict[str, float] = field(default_factory=dict)

    def add_stage_times(self, timings_s: dict[str, float]) -> None:
        """Fold one window's stage times (seconds) into :attr:`stage_ms`."""
        for key, seconds in timings_s.items():
            fold_stage_time(self.stage_ms, key, seconds)

    @property
    def dropped_total(self) -> int:
        """Sum of all drop reasons."""
        return int(sum(self.dropped.values()))

    def as_dict(self) -> dict:
        """Plain dict (copies), e.g. for diagnostics."""
        d = dict(self.__dict__)
        for key in ("dropped", "events", "pose_held", "stage_ms"):
            d[key] = dict(d[key])
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
        colored: ``{view index: (H, W, 3) uint8}`` depth images for viewing of the cloud's views
            when ``PipelineConfig.colorize`` is on (else empty).
        messages: serialised messages ready to publish, uint8 (n,) each (:mod:`da3_ros.core.wire`),
            when the producer framed them (the inference process does): ``depth{i}``,
            ``conf{i}``, ``col{i}`` (sensor_msgs/Image of view i) and ``cloud``
            (sensor_msgs/PointCloud2 in the fixed frame); else empty.
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
    colored: dict[int, np.ndarray] = field(default_factory=dict)
    messages: dict[str, np.ndarray] = field(default_factory=dict)


def check_prediction(pred: WindowPrediction, frames: list[Frame]) -> None:
    """Raise ValueError when a predictor's output does not fit its S input frames.

    The prediction's frames are the inputs in order (same camera and stamp), possibly at another
    size (an engine's ``output_resolution``); each depth map has its prediction frame's size.
    """
    S = len(frames)
    if (len(pred.depth) != S or len(pred.frames) != S or pred.world_from_cam.shape != (S, 4, 4)
            or len(pred.intrinsics) != S):
        raise ValueError(f"predictor returned {len(pred.depth)} depths / {pred.world_from_cam.shape} poses "
                         f"for {S} frames")
    for f, out, d in zip(frames, pred.frames, pred.depth):
        if (out.camera, out.stamp_ns) != (f.camera, f.stamp_ns):
            raise ValueError(f"prediction frame {(out.camera, out.stamp_ns)} is not the input "
                             f"{(f.camera, f.stamp_ns)}")
        if d.shape != (out.height, out.width):
            raise ValueError(f"depth {d.shape} does not match frame {(out.height, out.width)}")
    if not np.all(np.isfinite(pred.world_from_cam)):
        raise ValueError("predictor returned non-finite poses")
