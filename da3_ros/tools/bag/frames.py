"""Frames and ground truth from a bag, in bag order, for offline evaluation.

:class:`BagFrameStream` decodes each camera's images into :class:`Frame` objects (with the
CameraInfo of the same stamp, else the latest), and collects the ground truth that
``da3-synth`` writes (``depth_gt`` 32FC1 metres, ``pose_gt`` camera-to-world optical pose),
keyed by ``(camera, stamp_ns)``. A frame is handed out once every companion message of its
stamp has been read (or the bag has moved on by ``lookahead_s``), so the truth of a frame is
always known when the frame reaches the pipeline. Frames never carry the truth pose
(``Frame.world_from_cam`` stays None): evaluation must not leak it into the model.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from da3_ros.core.frames import CameraIntrinsics, Frame
from da3_ros.ros import conversions as conv
from da3_ros.tools.bag.io import BagError, BagReader, CameraTopics


@dataclass
class FrameTruth:
    """Ground truth of one frame: depth (H, W) float32 metres (NaN where none), pose (4, 4) or None."""

    depth: np.ndarray | None
    world_from_cam: np.ndarray | None
    intrinsics: CameraIntrinsics | None


class TruthCache:
    """Bounded ``(camera, stamp_ns) -> FrameTruth`` store (oldest entries evicted)."""

    def __init__(self, capacity: int = 256):
        self.capacity = int(capacity)
        self._items: OrderedDict[tuple[str, int], FrameTruth] = OrderedDict()

    def entry(self, camera: str, stamp_ns: int) -> FrameTruth:
        """The (possibly new, empty) entry of a frame."""
        key = (camera, int(stamp_ns))
        if key not in self._items:
            self._items[key] = FrameTruth(None, None, None)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return self._items[key]

    def get(self, camera: str, stamp_ns: int) -> FrameTruth | None:
        """The truth of a frame, or None when unknown (or evicted)."""
        return self._items.get((camera, int(stamp_ns)))

    def lookup(self, frame: Frame) -> tuple[np.ndarray, np.ndarray, CameraIntrinsics]:
        """``GroundTruthPredictor`` truth function: depth, world_from_cam, intrinsics of ``frame``.

        Raises:
            LookupError: the bag has no depth / pose / intrinsics for this frame.
        """
        t = self.get(frame.camera, frame.stamp_ns)
        intr = frame.intrinsics or (t.intrinsics if t else None)
        if t is None or t.depth is None or t.world_from_cam is None or intr is None:
            raise LookupError(f"no ground truth for {frame.camera} at {frame.stamp_ns} ns")
        return t.depth, t.world_from_cam, intr


class BagFrameStream:
    """Iterate a bag's camera frames in log order while collecting their ground truth.

    Args:
        reader: an open :class:`BagReader`.
        cameras: the cameras to read (see :func:`da3_ros.tools.bag.io.find_cameras`).
        truth: cache receiving ground truth (and the camera intrinsics of each stamp).
        max_frames: stop after this many frames per camera (0: all).
        lookahead_s: release a frame whose companions are missing once the bag is this far past it.
    """

    def __init__(self, reader: BagReader, cameras: list[CameraTopics], truth: TruthCache,
                 max_frames: int = 0, lookahead_s: float = 1.0):
        self.reader, self.cameras, self.truth = reader, cameras, truth
        self.max_frames = int(max_frames)
        self.lookahead_ns = int(lookahead_s * 1e9)
        self.read_counts = {c.name: 0 for c in cameras}
        self._role: dict[str, tuple[str, CameraTopics]] = {}
        for cam in cameras:
            for role in ("image", "camera_info", "depth_gt", "pose_gt"):
                topic = getattr(cam, role)
                if topic:
                    self._role[topic] = (role, cam)
        self._info: dict[str, dict[int, CameraIntrinsics]] = {c.name: {} for c in cameras}
        self._latest_info: dict[str, CameraIntrinsics] = {}

    def total_frames(self) -> int:
        """Frames this stream will yield at most (from the bag's topic counts)."""
        counts = [self.reader.topics[c.image][1] for c in self.cameras]
        if self.max_frames:
            counts = [min(n, self.max_frames) for n in counts]
        return int(sum(counts))

    def __iter__(self) -> Iterator[Frame]:
        waiting: deque[tuple[int, Frame]] = deque()
        for topic, log_ns, raw in self.reader.messages(list(self._role)):
            role, cam = self._role[topic]
            msg = self.reader.decode(raw, self.reader.msgtype(topic))
            try:
                frame = self._ingest(role, cam, msg)
            except conv.ConversionError as exc:
                raise BagError(f"bad {role} message on {topic}: {exc}") from exc
            if frame is not None:
                waiting.append((log_ns, frame))
            while waiting and (self._complete(waiting[0][1]) or log_ns - waiting[0][0] > self.lookahead_ns):
                yield self._finish(waiting.popleft()[1])
            if self.max_frames and all(n >= self.max_frames for n in self.read_counts.values()) \
                    and not waiting:
                return
        while waiting:
            yield self._finish(waiting.popleft()[1])

    def _ingest(self, role: str, cam: CameraTopics, msg) -> Frame | None:
        stamp = conv.stamp_to_ns(msg.header.stamp)
        if role == "image":
            if self.max_frames and self.read_counts[cam.name] >= self.max_frames:
                return None
            self.read_counts[cam.name] += 1
            return Frame(image=conv.image_to_rgb(msg), stamp_ns=stamp, camera=cam.name,
                         frame_id=msg.header.frame_id or f"{cam.name}_optical_frame")
        entry = self.truth.entry(cam.name, stamp)
        if role == "camera_info":
            intr = conv.camera_info_to_intrinsics(msg)
            self._info[cam.name][stamp] = intr
            self._latest_info[cam.name] = intr
            entry.intrinsics = intr
            if len(self._info[cam.name]) > 64:
                self._info[cam.name].pop(next(iter(self._info[cam.name])))
        elif role == "depth_gt":
            entry.depth = np.array(conv.image_to_depth_m(msg), dtype=np.float32)
        else:
            entry.world_from_cam = conv.pose_to_matrix(msg.pose)
        return None

    def _complete(self, frame: Frame) -> bool:
        cam = next(c for c in self.cameras if c.name == frame.camera)
        t = self.truth.get(frame.camera, frame.stamp_ns)
        need = [(cam.camera_info, lambda e: e.intrinsics), (cam.depth_gt, lambda e: e.depth),
                (cam.pose_gt, lambda e: e.world_from_cam)]
        return all(not topic or (t is not None and get(t) is not None) for topic, get in need)

    def _finish(self, frame: Frame) -> Frame:
        intr = self._info[frame.camera].get(frame.stamp_ns) or self._latest_info.get(frame.camera)
        if intr is not None and (intr.width, intr.height) != (frame.width, frame.height):
            intr = intr.scaled(frame.width, frame.height)
        frame.intrinsics = intr
        return frame
