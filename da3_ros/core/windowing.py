"""Frame buffering, keyframe selection, multi-camera sync and temporal windows.

Vocabulary:
- An *item* is what the temporal windower counts: one frame in temporal mode, one synchronised
  set of K frames (one per camera, in ``cameras`` order) in multi-camera mode.
- A *window* is ``num_view`` items ending at the newest item ``n`` with a dilation ``d``: items
  ``n - (num_view - 1) * d, ..., n - d, n`` (RollingDepth-style gaps). It is emitted every
  ``stride`` items; with several dilations, one window per dilation is emitted at each such
  point (the smallest dilation first). Frames of a larger-dilation window were usually already
  published by the smaller one, so its views come back with ``is_new`` False: it widens the
  baseline (and is aligned onto the published frames) rather than adding new frames; a dilation
  used alone leaves gaps, which are counted as ``not_in_window`` drops downstream.
  In multi-camera mode a window holds ``num_view`` sets, so
  S = K * num_view views, ordered set-major (set 0: cam 0..K-1, set 1: ...).

Nothing here raises on bad input: frames that cannot be used come back as ``(frame, reason)``
drops. Reasons: ``invalid`` (image not (H, W, 3) uint8), ``unknown_camera``, ``duplicate``
(same camera and stamp as a frame already seen), ``out_of_order`` (temporal mode: older than
the newest frame seen), ``late`` (multi-camera: older than a set already emitted for that
camera), ``unmatched`` (multi-camera: no partner within ``slop_s``), ``not_keyframe``.
Items leaving the history come back as ``evicted`` so the caller can account for frames that
no window covered.
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from da3_ros.core.frames import Frame

Drop = tuple[Frame, str]


def window_indices(newest: int, num_view: int, dilation: int = 1) -> list[int]:
    """Item indices of the window ending at ``newest``: ``[newest - (num_view-1)*d, ..., newest]``."""
    return [newest - (num_view - 1 - k) * dilation for k in range(num_view)]


def _grey_thumb(image: np.ndarray) -> np.ndarray:
    """(24, 32) float32 grey-level thumbnail of an RGB uint8 image (H, W, 3)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (32, 24), interpolation=cv2.INTER_AREA).astype(np.float32)


def _thumb_change(ta: np.ndarray, tb: np.ndarray) -> float:
    return float(np.mean(np.abs(ta - tb)) / 255.0)


def image_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute grey-level difference of two RGB images on a 32x24 thumbnail, in [0, 1]."""
    return _thumb_change(_grey_thumb(a), _grey_thumb(b))


class KeyframeSelector:
    """Keeps an item at least ``min_dt_s`` after and ``min_change`` different from the last kept one.

    Args:
        min_dt_s: minimum stamp gap in seconds (0 disables).
        min_change: minimum :func:`image_change` in [0, 1] against the last keyframe (0 disables).
    """

    def __init__(self, min_dt_s: float = 0.0, min_change: float = 0.0):
        self.min_dt_ns = int(round(min_dt_s * 1e9))
        self.min_change = float(min_change)
        self._last_stamp: int | None = None
        self._last_thumb: np.ndarray | None = None  # the last keyframe's grey thumbnail

    def accept(self, stamp_ns: int, image: np.ndarray) -> bool:
        """True if this (stamp, image) is a keyframe; keyframes become the new reference."""
        last = self._last_stamp
        if last is not None and self.min_dt_ns > 0 and stamp_ns - last < self.min_dt_ns:
            return False
        thumb = None
        if self.min_change > 0:
            thumb = _grey_thumb(image)
            if self._last_thumb is not None and _thumb_change(thumb, self._last_thumb) < self.min_change:
                return False
        self._last_stamp, self._last_thumb = stamp_ns, thumb
        return True


class MultiCameraSync:
    """Approximate-time synchronisation of K cameras within ``slop_s``.

    A set is emitted as soon as every camera's queue head lies within ``slop_s`` of the newest
    head; heads too old to ever match are dropped as ``unmatched``. Frames arriving out of order
    but still usable are inserted in stamp order (counted in ``events["reordered"]``).

    Args:
        cameras: camera names; sets are ordered like this list.
        slop_s: maximum stamp spread within a set, seconds.
        max_queue: per-camera queue bound; overflow drops the oldest as ``unmatched``.
    """

    def __init__(self, cameras: Sequence[str], slop_s: float, max_queue: int = 16):
        if not cameras:
            raise ValueError("multi-camera sync needs at least one camera name")
        self.cameras = list(cameras)
        self.slop_ns = int(round(slop_s * 1e9))
        self.max_queue = max(1, int(max_queue))
        self.queues: dict[str, list[Frame]] = {c: [] for c in self.cameras}
        self._consumed: dict[str, int | None] = dict.fromkeys(self.cameras)
        self.events: Counter = Counter()

    def push(self, frame: Frame) -> tuple[list[list[Frame]], list[Drop]]:
        """Add a frame; returns (complete sets, dropped frames with reasons)."""
        drops: list[Drop] = []
        q = self.queues.get(frame.camera)
        if q is None:
            return [], [(frame, "unknown_camera")]
        last = self._consumed[frame.camera]
        stamps = [f.stamp_ns for f in q]
        if last is not None and frame.stamp_ns <= last:
            return [], [(frame, "duplicate" if frame.stamp_ns == last else "late")]
        if frame.stamp_ns in stamps:
            return [], [(frame, "duplicate")]
        pos = bisect.bisect(stamps, frame.stamp_ns)
        if pos < len(q):
            self.events["reordered"] += 1
        q.insert(pos, frame)
        if len(q) > self.max_queue:
            drops.append((self._pop(frame.camera), "unmatched"))
        sets = self._match(drops)
        return sets, drops

    def _pop(self, cam: str) -> Frame:
        f = self.queues[cam].pop(0)
        self._consumed[cam] = f.stamp_ns
        return f

    def _match(self, drops: list[Drop]) -> list[list[Frame]]:
        sets = []
        while all(self.queues.values()):
            t_max = max(q[0].stamp_ns for q in self.queues.values())
            for cam, q in self.queues.items():
                # A head older than t_max - slop can never join a set: later frames of the
                # camera holding t_max are newer still. A second frame nearer t_max is better.
                while q and (q[0].stamp_ns < t_max - self.slop_ns
                             or (len(q) > 1 and q[1].stamp_ns <= t_max)):
                    drops.append((self._pop(cam), "unmatched"))
            if not all(self.queues.values()):
                break
            if max(q[0].stamp_ns for q in self.queues.values()) != t_max:
                continue
            sets.append([self._pop(c) for c in self.cameras])
        return sets

    def flush(self) -> list[Drop]:
        """Drop every queued frame (no complete set can form any more) as ``unmatched``."""
        drops = []
        for cam in self.cameras:
            while self.queues[cam]:
                drops.append((self._pop(cam), "unmatched"))
        return drops


@dataclass
class Window:
    """One window to run: ``frames`` (S views, item-major) and where it came from.

    Attributes:
        frames: the S frames, ordered item by item (set-major in multi-camera mode).
        items: item indices (count of accepted items since start) of each of the num_view items.
        dilation: the dilation this window was built with.
        final: True for the window emitted by ``flush``.
    """

    frames: list[Frame]
    items: list[int]
    dilation: int
    final: bool = False


class TemporalWindower:
    """Emits windows of ``num_view`` items every ``stride`` items, for each dilation.

    Args:
        num_view: items per window (>= 1).
        stride: new items between consecutive emission points (>= 1).
        dilations: gaps between items of a window; several give several windows per emission.
    """

    def __init__(self, num_view: int, stride: int, dilations: Sequence[int] = (1,)):
        if num_view < 1 or stride < 1 or not dilations or min(dilations) < 1:
            raise ValueError(f"need num_view>=1, stride>=1, dilations>=1; got {num_view}, {stride}, "
                             f"{tuple(dilations)}")
        self.num_view, self.stride = int(num_view), int(stride)
        self.dilations = tuple(sorted({int(d) for d in dilations}))
        self.first = (self.num_view - 1) * self.dilations[0]
        self.span = (self.num_view - 1) * self.dilations[-1] + 1
        self.history: deque[tuple[int, list[Frame]]] = deque()
        self.count = 0

    def push(self, item: list[Frame]) -> tuple[list[Window], list[Frame]]:
        """Add one item; returns (windows to run now, frames evicted from the history)."""
        n = self.count
        self.count += 1
        self.history.append((n, item))
        windows = []
        if n >= self.first and (n - self.first) % self.stride == 0:
            for d in self.dilations:
                idx = window_indices(n, self.num_view, d)
                if idx[0] >= 0:
                    windows.append(self._window(idx, d))
        evicted = []
        while len(self.history) > self.span:
            evicted.extend(self.history.popleft()[1])
        return windows, evicted

    def _window(self, idx: list[int], d: int, final: bool = False) -> Window:
        base = self.history[0][0]
        frames = [f for i in idx for f in self.history[i - base][1]]
        return Window(frames=frames, items=list(idx), dilation=d, final=final)

    def flush(self, pending: Callable[[Frame], bool]) -> tuple[list[Window], list[Frame]]:
        """End of stream: one last window if any frame in the history is still ``pending``.

        The last window ends at the newest item with the smallest dilation (fewer items when
        fewer were received). The history is then emptied and the windower restarts.
        """
        windows = []
        if any(pending(f) for _, item in self.history for f in item):
            n = self.history[-1][0]
            d = self.dilations[0]
            idx = [i for i in window_indices(n, self.num_view, d) if i >= self.history[0][0]]
            windows.append(self._window(idx, d, final=True))
        evicted = [f for _, item in self.history for f in item]
        self.history.clear()
        self.count = 0
        return windows, evicted


@dataclass
class WindowerOutput:
    """What one push/flush produced: windows to run, frames dropped (with reason), frames evicted."""

    windows: list[Window] = field(default_factory=list)
    dropped: list[Drop] = field(default_factory=list)
    evicted: list[Frame] = field(default_factory=list)


class FrameWindower:
    """Frames in, windows out: validation, ordering, sync (multicam), keyframes, temporal windows.

    Args:
        mode: ``"temporal"`` (one camera) or ``"multicam"``.
        cameras: camera names (multicam: required, set order; temporal: the accepted camera, or
            empty to lock onto the first camera seen).
        num_view, stride, dilations: see :class:`TemporalWindower` (counted in sets for multicam).
        slop_s: multi-camera sync tolerance in seconds.
        keyframe_min_dt_s, keyframe_min_change: see :class:`KeyframeSelector`.
    """

    def __init__(self, mode: str, cameras: Sequence[str], num_view: int, stride: int,
                 dilations: Sequence[int] = (1,), slop_s: float = 0.02,
                 keyframe_min_dt_s: float = 0.0, keyframe_min_change: float = 0.0):
        if mode not in ("temporal", "multicam"):
            raise ValueError(f"mode must be 'temporal' or 'multicam', got {mode!r}")
        self.mode = mode
        self.cameras = list(cameras)
        self.sync = MultiCameraSync(self.cameras, slop_s, max_queue=max(8, 2 * num_view)) \
            if mode == "multicam" else None
        self.keyframes = KeyframeSelector(keyframe_min_dt_s, keyframe_min_change)
        self.windower = TemporalWindower(num_view, stride, dilations)
        self._last_stamp: int | None = None
        self.events: Counter = self.sync.events if self.sync else Counter()

    def push(self, frame: Frame) -> WindowerOutput:
        """Feed one frame."""
        out = WindowerOutput()
        img = frame.image
        if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
                and img.shape[0] > 0 and img.shape[1] > 0):
            out.dropped.append((frame, "invalid"))
            return out
        if self.sync is not None:
            sets, out.dropped = self.sync.push(frame)
        else:
            sets = self._temporal_item(frame, out.dropped)
        for item in sets:
            if not self.keyframes.accept(item[0].stamp_ns, item[0].image):
                out.dropped.extend((f, "not_keyframe") for f in item)
                continue
            windows, evicted = self.windower.push(item)
            out.windows.extend(windows)
            out.evicted.extend(evicted)
        return out

    def _temporal_item(self, frame: Frame, drops: list[Drop]) -> list[list[Frame]]:
        if not self.cameras:
            self.cameras = [frame.camera]
        if frame.camera not in self.cameras[:1]:
            drops.append((frame, "unknown_camera"))
            return []
        if self._last_stamp is not None and frame.stamp_ns <= self._last_stamp:
            reason = "duplicate" if frame.stamp_ns == self._last_stamp else "out_of_order"
            drops.append((frame, reason))
            return []
        self._last_stamp = frame.stamp_ns
        return [[frame]]

    def flush(self, pending: Callable[[Frame], bool]) -> WindowerOutput:
        """End of stream: incomplete sets dropped, a last window for pending frames, history emptied."""
        out = WindowerOutput()
        if self.sync is not None:
            out.dropped = self.sync.flush()
        out.windows, out.evicted = self.windower.flush(pending)
        return out
