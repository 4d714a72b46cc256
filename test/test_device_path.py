"""The engine's device path (resampling, depth maps, thumbnails, cloud, colours with torch), run
on the CPU here: it must give what the numpy path gives, within resampling differences.

On CUDA the same code runs on the GPU (bench/RESULTS.md times the node with it).
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from da3_ros.core.alignment import WindowChainer
from da3_ros.core.cloud import window_cloud
from da3_ros.core.config import PipelineConfig
from da3_ros.core.engine import DA3Engine
from da3_ros.core.frames import Frame, depth_thumb, pinhole_intrinsics
from da3_ros.core.pipeline import Pipeline
from da3_ros.core.results import check_prediction
from da3_ros.core.visualize import colorize_depth, colorize_depths_torch
from da3_ros.model import build_model


def _frames(n, w=80, h=60, seed=0, camera="c"):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // 4, w // 4, 3), dtype=np.uint8)
    return [Frame(image=np.ascontiguousarray(np.kron(np.roll(base, i, axis=1), np.ones((4, 4, 1), np.uint8))),
                  stamp_ns=(i + 1) * 100_000_000, camera=camera, frame_id=camera) for i in range(n)]


@pytest.fixture(scope="module")
def engines():
    torch.manual_seed(0)
    net = build_model("da3-tiny").eval()
    kw = {"process_res": 56, "ref_view_strategy": "first"}
    return DA3Engine(net, device_io=False, **kw), DA3Engine(net, device_io=True, **kw)


def test_device_path_predicts_what_the_numpy_path_predicts(engines):
    cpu, dev = engines
    frames = _frames(3)
    a, b = cpu.predict(frames), dev.predict(frames)
    assert a.device_maps is None and b.device_maps is not None and a.depth_thumbs is None
    np.testing.assert_allclose(b.world_from_cam, a.world_from_cam, atol=0.1)  # random weights amplify
    for da, db, ca, cb in zip(a.depth, b.depth, a.confidence, b.confidence, strict=True):
        assert db.shape == da.shape == (60, 80) and db.dtype == np.float32
        rel = np.abs(db - da) / np.abs(da)
        assert np.median(rel) < 0.03  # resampling kernels differ (cv2 vs torch), conventions do not
        assert np.median(np.abs(cb - ca) / np.abs(ca)) < 0.03
    for d, t, m in zip(b.depth, b.depth_thumbs, b.device_maps.depth, strict=True):
        np.testing.assert_array_equal(t, depth_thumb(d))  # the thumbnail is every k-th pixel
        np.testing.assert_array_equal(m.numpy(), d)  # host copy == device map
    for f, img in zip(frames, b.device_maps.images, strict=True):
        np.testing.assert_array_equal(img.numpy(), f.image)


def test_chaining_scales_the_device_maps_like_the_host_maps(engines):
    _, dev = engines
    chainer = WindowChainer("sim3")
    frames = _frames(4)
    chainer.chain(dev.predict(frames[:2]))
    out, al, _ = chainer.chain(dev.predict(frames[1:3]))  # shares frame 1: a real scale
    assert out.device_maps.depth_scale == pytest.approx(al.scale)
    for d_host, d_dev in zip(out.depth, out.device_maps.depth, strict=True):
        np.testing.assert_allclose(d_host, d_dev.numpy() * out.device_maps.depth_scale, rtol=1e-6)
    for t, d in zip(out.depth_thumbs, out.depth, strict=True):
        np.testing.assert_allclose(t, depth_thumb(d), rtol=1e-6)


def test_chainer_uses_the_given_thumbnails():
    """Without thumbnails the chainer makes them from depth; with them it must not look at depth."""
    _, dev = engines_for_thumbs()
    frames = _frames(3)
    p1, p2 = dev.predict(frames[:2]), dev.predict(frames[1:3])
    results = []
    for drop in (False, True):
        chainer = WindowChainer("sim3")
        chainer.chain(p1 if not drop else _without_thumbs(p1))
        results.append(chainer.chain(p2 if not drop else _without_thumbs(p2))[1].scale)
    assert results[0] == pytest.approx(results[1], rel=1e-6)
    chainer = WindowChainer("sim3")
    chainer.chain(p1)
    halved = _replace_thumbs(p2, [t * 0.5 for t in p2.depth_thumbs])
    assert chainer.chain(halved)[1].scale == pytest.approx(2 * results[0], rel=1e-5)


def engines_for_thumbs():
    torch.manual_seed(1)
    net = build_model("da3-tiny").eval()
    return None, DA3Engine(net, device_io=True, process_res=56, ref_view_strategy="first")


def _without_thumbs(pred):
    from dataclasses import replace

    return replace(pred, depth_thumbs=None, device_maps=None)


def _replace_thumbs(pred, thumbs):
    from dataclasses import replace

    return replace(pred, depth_thumbs=thumbs)


def test_pipeline_cloud_and_colours_from_device_maps_equal_the_numpy_ones(engines):
    _, dev = engines
    cfg = PipelineConfig(num_view=2, stride=1, colorize=True, cloud_pixel_step=2, max_points=0)
    pipeline = Pipeline(cfg, dev)
    results = [r for f in _frames(4) for r in pipeline.push(f)]
    assert len(results) == 3
    for r in results:
        views = list(np.flatnonzero(r.is_new))
        pts, cols, conf = window_cloud(r.prediction, views, cfg, np.random.default_rng(0))
        assert len(r.points_world) == len(pts) > 0
        np.testing.assert_allclose(r.points_world, pts, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(r.colors, cols)
        assert sorted(r.colored) == views
        for i in views:
            ref = colorize_depth(r.prediction.depth[i])
            assert (np.abs(r.colored[i].astype(int) - ref.astype(int)).max(-1) > 8).mean() < 1e-3


def test_colours_torch_equals_numpy_and_inverse_depth_separates_far_from_mid():
    rng = np.random.default_rng(3)
    depth = rng.uniform(1.0, 80.0, (40, 50)).astype(np.float32)
    depth[0, :5] = np.nan
    depth[1, :5] = 0.0
    for rng_ in ((0.0, 0.0), (2.0, 50.0)):
        a = colorize_depth(depth, *rng_)
        b = colorize_depths_torch(torch.from_numpy(depth)[None], *rng_)[0].numpy()
        assert (np.abs(a.astype(int) - b.astype(int)).max(-1) > 8).mean() < 2e-3
        assert not a[0, :5].any() and not a[1, :5].any()
    # grass at 2 m, a building at 30 m, road to 100 m: the building is not drawn near-red
    scene = np.concatenate([np.full(400, 2.0), np.full(300, 30.0), np.linspace(40, 100, 300)])
    scene = scene.astype(np.float32)
    rgb = colorize_depth(scene[None])[0]
    grass, building = rgb[0].astype(int), rgb[500].astype(int)
    assert grass[0] > grass[2] and building[2] > building[0]  # red near, blue far


def test_known_intrinsics_alone_keep_the_network_call_unconditioned():
    """An any-view network reads intrinsics only with poses: the engine then leaves them out of
    the call (so the compiled CUDA graph serves it) and still reports the known ones."""
    from da3_ros.core.frames import pinhole_intrinsics

    torch.manual_seed(0)
    net = build_model("da3-tiny").eval()
    seen = []

    def spy(images, **kwargs):
        seen.append({k: v for k, v in kwargs.items() if k in ("extrinsics", "intrinsics")})
        return net(images, **kwargs)

    spy.preset = net.preset
    engine = DA3Engine(spy, process_res=56, condition_on_intrinsics=True, ref_view_strategy="first")
    intr = pinhole_intrinsics(80, 60, 70.0)
    frames = [replace_intrinsics(f, intr) for f in _frames(2)]
    pred = engine.predict(frames)
    assert seen == [{"extrinsics": None, "intrinsics": None}]
    for got in pred.intrinsics:
        np.testing.assert_allclose(got.K, intr.K)


def replace_intrinsics(frame, intr):
    from dataclasses import replace

    return replace(frame, intrinsics=intr)


@pytest.mark.parametrize("policy, size", [("network", (56, 42)), (40, (40, 30)), ("source", (80, 60))])
def test_output_resolution_on_both_paths(policy, size):
    """Depth, confidence, intrinsics and the frames' images at the policy's size, numpy and device alike."""
    torch.manual_seed(0)
    net = build_model("da3-tiny").eval()
    kw = {"process_res": 56, "ref_view_strategy": "first", "output_resolution": policy,
          "condition_on_intrinsics": True}
    cpu, dev = DA3Engine(net, device_io=False, **kw), DA3Engine(net, device_io=True, **kw)
    known = pinhole_intrinsics(80, 60, 70.0)
    frames = [replace(f, intrinsics=known) for f in _frames(3)]
    a, b = cpu.predict(frames), dev.predict(frames)
    w, h = size
    for pred in (a, b):
        check_prediction(pred, frames)
        assert [d.shape for d in pred.depth] == [d.shape for d in pred.confidence] == [(h, w)] * 3
        assert all((k.width, k.height) == size for k in pred.intrinsics)
        np.testing.assert_allclose(pred.intrinsics[0].K, known.scaled(w, h).K)  # camera_info scaled to match
        assert [f.image.shape for f in pred.frames] == [(h, w, 3)] * 3
        assert [(f.stamp_ns, f.seq) for f in pred.frames] == [(f.stamp_ns, f.seq) for f in frames]
        assert all(f.intrinsics.width == w for f in pred.frames)
    assert [tuple(m.shape) for m in b.device_maps.images] == [(h, w, 3)] * 3
    for da, db in zip(a.depth, b.depth, strict=True):
        assert np.median(np.abs(db - da) / np.abs(da)) < 0.03
    for fa, fb in zip(a.frames, b.frames, strict=True):  # the cloud's colours: cv2 area vs torch antialiased
        assert np.abs(fa.image.mean((0, 1)) - fb.image.mean((0, 1))).max() < 2
    if policy == "source":  # the default path hands the input frames on untouched
        assert all(fa is f and fb is f for fa, fb, f in zip(a.frames, b.frames, frames))
    cfg = PipelineConfig(num_view=2, stride=1, cloud_pixel_step=1, max_points=0)
    for engine in (cpu, dev):  # the cloud takes its colours from the images at the output size
        pipeline = Pipeline(cfg, engine)
        results = [r for f in frames for r in pipeline.push(f)]
        assert results and all(len(r.points_world) == len(r.colors) > 0 for r in results)


def test_colours_of_a_stack_equal_each_view_coloured_alone():
    """The GPU path colours a window's views in one pass, each with its own automatic range:
    same colours as the numpy path view by view, including a view with no valid depth and one
    whose valid pixels all lie between the sampled ones (its range from all its pixels)."""
    from da3_ros.core.visualize import PERCENTILE_STEP

    rng = np.random.default_rng(5)
    stack = rng.uniform(0.5, 3.0, (4, 30, 40)).astype(np.float32)
    stack[1] *= 20.0  # another range: a view's colours must not depend on its neighbours
    stack[1, :4, :6] = np.nan
    stack[2] = np.nan  # nothing valid: black
    stack[3] = np.nan
    stack[3, 1::PERCENTILE_STEP, 1::PERCENTILE_STEP] = rng.uniform(1.0, 9.0, (15, 20))  # off the sample grid
    for near_far in ((0.0, 0.0), (1.0, 30.0)):
        got = colorize_depths_torch(torch.from_numpy(stack), *near_far).numpy()
        assert got.shape == (4, 30, 40, 3) and got.dtype == np.uint8
        for i in range(4):
            ref = colorize_depth(stack[i], *near_far)
            assert (np.abs(got[i].astype(int) - ref.astype(int)).max(-1) > 8).mean() < 2e-3, (i, near_far)
        assert not got[2].any()
    assert got[0].reshape(-1, 3).std(0).max() > 20  # not one flat colour
