"""Every per-frame container of the node's state stays bounded over a long stream.

2000 frames go through the core Pipeline (truth stand-in), the node's OutputPublishers,
NodeDiagnostics and the truth cache, in process and without DDS. Sizes are checked against
their documented caps, and every list / dict / deque reachable from those objects must be no
larger after 2000 frames than after 1000 (a new unbounded container fails here). Not timed,
not RSS based.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from types import SimpleNamespace

import numpy as np
import pytest

from da3_ros.core.config import PipelineConfig
from da3_ros.core.frames import CameraIntrinsics, Frame
from da3_ros.core.pipeline import Pipeline
from da3_ros.sim.standin import GroundTruthPredictor

W, H = 16, 12
K = CameraIntrinsics(K=np.array([[12.0, 0, 8], [0, 12.0, 6], [0, 0, 1]]), width=W, height=H)


def _truth(frame: Frame):
    """Ground truth of a camera sliding along +x at 1 cm a frame in front of a wall at 2 m."""
    pose = np.eye(4)
    pose[0, 3] = 0.01 * (frame.stamp_ns // 10**8)
    return np.full((H, W), 2.0, np.float32), pose, K


def _frame(i: int) -> Frame:
    rng = np.random.default_rng(i)
    return Frame(image=rng.integers(0, 255, (H, W, 3), dtype=np.uint8), stamp_ns=(i + 1) * 10**8,
                 camera="camera", intrinsics=K, frame_id="camera_optical_frame")


class _FakePublisher:
    def __init__(self):
        self.count = 0

    def publish(self, _msg):
        self.count += 1

    def get_subscription_count(self):
        return 1


class _FakeNode:
    """Just what OutputPublishers and TruthTopics call on a node."""

    def create_publisher(self, *_args, **_kwargs):
        return _FakePublisher()

    def create_subscription(self, _msg_type, topic, *_args, **_kwargs):
        return SimpleNamespace(topic_name=topic)  # a subscription, as far as CameraInputs looks

    def destroy_publisher(self, _pub):
        pass

    def destroy_subscription(self, _sub):
        pass


def container_sizes(root, name: str, depth: int = 4, seen: set | None = None) -> dict[str, int]:
    """``{attribute path: len}`` of every list/dict/deque/set reachable through da3_ros objects."""
    seen = set() if seen is None else seen
    out: dict[str, int] = {}
    if id(root) in seen or depth < 0:
        return out
    seen.add(id(root))
    if isinstance(root, (list, dict, deque, set, OrderedDict)):
        out[name] = len(root)
        return out
    ours = any(c.__module__.startswith("da3_ros") for c in type(root).__mro__)
    if not ours or not hasattr(root, "__dict__"):
        return out
    for key, value in vars(root).items():
        out.update(container_sizes(value, f"{name}.{key}", depth - 1, seen))
    return out


@pytest.fixture(scope="module")
def streamed():
    from da3_ros.ros.diagnostics import NodeDiagnostics
    from da3_ros.ros.publishers import OutputPublishers
    from da3_ros.ros.truth_topics import TruthTopics

    class SmallHistoryTruth(GroundTruthPredictor):
        SCALES_KEPT = 300  # fewer than the windows run, so the cap is exercised

    gt = SmallHistoryTruth(_truth, scale_range=(0.5, 2.0), seed=0)
    cfg = PipelineConfig(cameras=["camera"], num_view=4, stride=2, dilations=(1, 2))
    pipe = Pipeline(cfg, gt)
    node = _FakeNode()
    outputs = OutputPublishers(node, ["camera"], "da3_odom")
    outputs.set_path_max_length(50)
    diag = NodeDiagnostics("test: pipeline", ["camera"])
    truth = TruthTopics(node, ["camera"], "{camera}/depth_gt", "{camera}/pose_gt", qos=None, capacity=40)
    objects = {"pipeline": pipe, "outputs": outputs, "diag": diag, "truth": truth, "predictor": gt}
    sizes, windows = [], 0
    for i in range(2000):
        f = _frame(i)
        header = SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=f.stamp_ns // 10**9,
                                                                              nanosec=f.stamp_ns % 10**9)))
        truth._store(truth._depth, "camera", header, np.zeros((H, W), np.float32))
        truth._store(truth._pose, "camera", header, np.eye(4))
        diag.on_input("camera", f.stamp_ns)
        for result in pipe.push(f):
            windows += 1
            outputs.publish_result(result)
            diag.on_published(0.01)
        if i % 100 == 99:
            diag.build("active", pipe.stats.as_dict(), None, None)
        if i + 1 in (1000, 2000):
            sizes.append({k: v for name, obj in objects.items()
                          for k, v in container_sizes(obj, name).items()})
    return SimpleNamespace(**objects, sizes=sizes, windows=windows, cfg=cfg)


def test_stream_really_ran(streamed):
    s = streamed.pipeline.stats
    assert s.received == 2000 and s.processed >= 1990 and s.errors == 0
    assert streamed.windows > 1000  # two dilations: about two windows every two frames
    assert streamed.outputs.per_camera["camera"]["depth"].count >= 1990


def test_no_container_grows_between_1000_and_2000_frames(streamed):
    first, second = streamed.sizes
    assert set(second) >= {"pipeline.chainer.published", "pipeline._pending", "pipeline._arrival",
                           "pipeline.windower.windower.history", "outputs._path_poses",
                           "diag._arrivals", "diag._latencies", "truth._depth", "predictor.scales"}
    grown = {k: (first.get(k, 0), v) for k, v in second.items() if v > first.get(k, 0)}
    assert not grown, f"containers grew from 1000 to 2000 frames: {grown}"


def test_containers_stay_within_their_documented_caps(streamed):
    pipe, span = streamed.pipeline, (4 - 1) * 2 + 1
    assert len(pipe.chainer.published) <= span  # the windower's history span, not keep_frames=512
    assert pipe.chainer.keep_frames == span < streamed.cfg.keep_frames
    assert len(pipe.windower.windower.history) <= span
    assert len(pipe._pending) <= span and len(pipe._arrival) <= span
    assert len(streamed.outputs._path_poses) == 50
    assert len(streamed.truth._depth) == len(streamed.truth._pose) == 40
    assert len(streamed.predictor.scales) == 300
    assert len(streamed.diag._latencies) <= 200  # reset by every build (here every 100 frames)


def test_chainer_keeps_compact_thumbnails_not_views_of_full_depth(streamed):
    for entry in streamed.pipeline.chainer.published.values():
        thumb = entry.depth_thumb
        assert thumb.base is None and thumb.flags.owndata  # a view would pin the whole depth image
        assert thumb.nbytes <= 64 * 64 * 4
        assert entry.pose.base is None


def test_truth_capacity_follows_the_queues_and_window_span():
    from da3_ros.ros.truth_topics import node_truth_capacity
    from da3_ros.sim.standin import truth_capacity

    values = {"num_view": 4, "dilations": [1, 3], "queue_size": 8, "input_queue_depth": 5, "stride": 2}
    cap = node_truth_capacity(_Settings(values, ["a", "b"]))
    assert cap == 2 * (8 + 5 + (3 * 3 + 1)) * 2 == truth_capacity(4, [1, 3], 13, 2)
    assert node_truth_capacity(_Settings({**values, "queue_size": 1, "input_queue_depth": 1,
                                          "num_view": 1}, ["a"])) == 32
    auto = {**values, "queue_size": 0, "stride": 4}  # two windows of new sets: 2 * 4 * 2 cameras
    assert node_truth_capacity(_Settings(auto, ["a", "b"])) == truth_capacity(4, [1, 3], 16 + 5, 2)


class _Settings:
    def __init__(self, values, cameras):
        self.values, self.cameras = values, cameras

    def __getitem__(self, key):
        return self.values[key]
