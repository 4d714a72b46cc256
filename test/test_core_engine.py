import numpy as np
import pytest
import torch
from _core_synth import make_sequence
from scipy.spatial.transform import Rotation

from da3_ros.core.config import PipelineConfig
from da3_ros.core.engine import DA3Engine, normalise_extrinsics
from da3_ros.core.frames import CameraIntrinsics, Frame
from da3_ros.core.geometry import invert_rigid
from da3_ros.core.pipeline import Pipeline
from da3_ros.core.resampling import IMAGENET_MEAN, IMAGENET_STD, preprocess_image, process_size
from da3_ros.model import DA3Output, build_model, get_preset


@pytest.mark.parametrize("w,h,res,first,final", [
    (640, 480, 504, (504, 378), (504, 378)),    # upstream's documented example
    (224, 168, 224, (224, 168), (224, 168)),
    (64, 48, 70, (70, 52), (70, 56)),           # enlarged (cubic); 52 rounds to 56
    (1280, 720, 504, (504, 284), (504, 280)),   # 283.5 -> 284 -> nearest multiple 280
    (480, 640, 504, (378, 504), (378, 504)),
])
def test_process_size_matches_upstream_rule(w, h, res, first, final):
    assert process_size(w, h, res) == (first, final)


def test_preprocess_normalises_like_imagenet_and_resizes():
    img = np.random.default_rng(0).integers(0, 256, (56, 70, 3), dtype=np.uint8)
    x = preprocess_image(img, 70)  # already at its process size: no resampling
    assert x.shape == (3, 56, 70) and x.dtype == np.float32
    want = ((img / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(x, want, atol=1e-6)
    grey = np.full((480, 640, 3), 128, np.uint8)
    y = preprocess_image(grey, 504)
    assert y.shape == (3, 378, 504)
    np.testing.assert_allclose(y[:, 0, 0], (128 / 255.0 - IMAGENET_MEAN) / IMAGENET_STD, atol=1e-6)
    assert preprocess_image(grey, 504, size=(252, 182)).shape == (3, 182, 252)


def _pose(rv, t):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rv).as_matrix()
    T[:3, 3] = t
    return T


class FakeNet(torch.nn.Module):
    """Returns chosen cameras and per-view constant depth; records its inputs."""

    preset = get_preset("da3-tiny")
    is_metric = False

    def __init__(self, poses, K):
        super().__init__()
        self.poses, self.K, self.calls = poses, K, []

    def forward(self, images, extrinsics=None, intrinsics=None, ref_view_strategy="first"):
        self.calls.append((images, extrinsics, intrinsics))
        B, S, _, H, W = images.shape
        depth = torch.arange(1, S + 1, dtype=torch.float32)[None, :, None, None].expand(B, S, H, W)
        ext = torch.as_tensor(invert_rigid(self.poses)[:, :3], dtype=torch.float32)[None]
        return DA3Output(depth=depth.clone(), depth_conf=torch.full((B, S, H, W), 1.5), extrinsics=ext,
                         intrinsics=torch.as_tensor(self.K, dtype=torch.float32).expand(B, S, 3, 3))


def _frames(sizes, poses=None, with_K=True):
    out = []
    for i, (w, h) in enumerate(sizes):
        K = np.array([[0.8 * w, 0, w / 2 - 0.5], [0, 0.8 * w, h / 2 - 0.5], [0, 0, 1]])
        intr = CameraIntrinsics(K, w, h) if with_K else None
        out.append(Frame(image=np.full((h, w, 3), 40 * i, np.uint8), stamp_ns=i + 1, camera="c",
                         intrinsics=intr, world_from_cam=None if poses is None else poses[i]))
    return out


def test_engine_maps_outputs_back_to_each_source_resolution():
    poses = np.stack([_pose([0, 0, 0], [0, 0, 0]), _pose([0, 0.2, 0], [0.5, 0, 0]),
                      _pose([0.1, 0, 0], [1, 0, 0])])
    K = np.array([[50.0, 0, 35.0], [0, 50.0, 28.0], [0, 0, 1]])
    net = FakeNet(poses, K)
    eng = DA3Engine(net, process_res=70)
    frames = _frames([(64, 48), (128, 96), (80, 48)])  # last one has another aspect ratio
    pred = eng.predict(frames)
    images = net.calls[0][0]
    assert images.shape == (1, 3, 3, 56, 70)  # every view resized to view 0's process size
    for i, f in enumerate(frames):
        assert pred.depth[i].shape == (f.height, f.width) == pred.confidence[i].shape
        np.testing.assert_allclose(pred.depth[i], i + 1, rtol=1e-6)
        np.testing.assert_allclose(pred.confidence[i], 1.5, rtol=1e-6)
        want = CameraIntrinsics(K, 70, 56).scaled(f.width, f.height)
        np.testing.assert_allclose(pred.intrinsics[i].K, want.K)
        assert (pred.intrinsics[i].width, pred.intrinsics[i].height) == (f.width, f.height)
    np.testing.assert_allclose(pred.world_from_cam, poses, atol=1e-6)  # w2c (3,4) -> c2w (4,4)
    assert set(pred.timings_s) == {"preprocess", "network", "postprocess"}
    # Known intrinsics reported when asked to condition on them.
    pred2 = DA3Engine(net, process_res=70, condition_on_intrinsics=True).predict(frames)
    for f, k in zip(frames, pred2.intrinsics):
        np.testing.assert_allclose(k.K, f.intrinsics.K)


def test_pose_conditioning_normalises_inputs_and_returns_known_poses():
    known = np.stack([_pose([0.1, 0, 0], [2, 1, 0]), _pose([0, 0.1, 0], [2, 1, 3]),
                      _pose([0, 0, 0.1], [6, 1, 0])])
    norm, med = normalise_extrinsics(invert_rigid(known))
    np.testing.assert_allclose(norm[0], np.eye(4), atol=1e-12)
    assert med == pytest.approx(np.median([0.0, 3.0, 4.0]))
    # The fake network "predicts" exactly the normalised poses: the engine must undo the
    # normalisation, so depth comes back in the known poses' unit (x med) and poses are the known ones.
    net = FakeNet(invert_rigid(norm), np.array([[50.0, 0, 35.0], [0, 50.0, 28.0], [0, 0, 1]]))
    frames = _frames([(64, 48)] * 3, poses=known)
    pred = DA3Engine(net, process_res=70, condition_on_poses=True).predict(frames)
    _, ext, intr = net.calls[0]
    np.testing.assert_allclose(ext[0].numpy(), norm, atol=1e-6)
    np.testing.assert_allclose(intr[0, 0].numpy(), frames[0].intrinsics.scaled(70, 56).K, rtol=1e-6)
    np.testing.assert_allclose(pred.world_from_cam, known)
    np.testing.assert_allclose(pred.depth[2], 3 * med, rtol=1e-5)
    # Without known intrinsics the window runs unconditioned.
    net.calls.clear()
    no_K = _frames([(64, 48)] * 3, known, with_K=False)
    DA3Engine(net, process_res=70, condition_on_poses=True).predict(no_K)
    assert net.calls[0][1] is None


def test_engine_memory_plan_is_unlimited_on_cpu():
    net = FakeNet(np.tile(np.eye(4), (2, 1, 1)), np.eye(3))
    plan = DA3Engine(net, process_res=70).plan(_frames([(64, 48)] * 2))
    assert plan.num_views == 2 and plan.budget_bytes is None and plan.estimate_bytes > 0


@pytest.fixture(scope="module")
def tiny_engine():
    torch.manual_seed(0)
    return DA3Engine(build_model("da3-tiny"), process_res=70, ref_view_strategy="first")


def test_tiny_network_end_to_end_through_the_pipeline(tiny_engine):
    seq = make_sequence(10, width=64, height=48)
    p = Pipeline(PipelineConfig(num_view=4, stride=2, max_points=500), tiny_engine)
    results = [r for f in seq.frames for r in p.push(f)] + p.flush()
    s = p.stats
    assert s.errors == 0, s.last_error
    assert s.received == 10 == s.processed + s.dropped_total and s.processed == 10
    assert len(results) == 4
    for r in results:
        pred = r.prediction
        assert len(pred.frames) == 4 and r.world_from_cam.shape == (4, 4, 4)
        for d, c, k in zip(pred.depth, pred.confidence, pred.intrinsics):
            assert d.shape == c.shape == (48, 64) and np.isfinite(d).all() and (d > 0).all()
            assert (c >= 1).all() and (k.width, k.height) == (64, 48) and np.isfinite(k.K).all()
        R = r.world_from_cam[:, :3, :3]
        np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-4)
        assert np.isfinite(r.scale) and r.scale > 0 and np.isfinite(r.world_from_cam).all()
        assert 0 < len(r.points_world) <= 500 and np.isfinite(r.points_world).all()
    assert sum(int(r.is_new.sum()) for r in results) == 10


def test_tiny_network_pose_conditioned_window(tiny_engine):
    seq = make_sequence(3, width=64, height=48, with_poses=True)
    eng = DA3Engine(tiny_engine.model, process_res=70, condition_on_poses=True, condition_on_intrinsics=True)
    pred = eng.predict(seq.frames)
    np.testing.assert_allclose(pred.world_from_cam, np.stack([f.world_from_cam for f in seq.frames]))
    assert all(np.isfinite(d).all() and (d > 0).all() for d in pred.depth)


def test_per_view_metric_model_is_scaled_to_metres_with_identity_poses():
    from da3_ros.model.presets import DA3Config

    cfg = DA3Config(name="tiny-metric", kind="metric", embed_dim=96, depth=4, num_heads=2, ffn="mlp",
                    alt_start=-1, qknorm_start=-1, rope_start=-1, out_layers=(0, 1, 2, 3), cat_token=False,
                    head="dpt", head_features=16, head_out_channels=(8, 16, 32, 64))
    torch.manual_seed(0)
    net = build_model(cfg)
    eng = DA3Engine(net, process_res=70)
    assert eng.is_metric
    frames = _frames([(64, 48)] * 2)
    pred = eng.predict(frames)
    assert pred.is_metric
    np.testing.assert_allclose(pred.world_from_cam, np.tile(np.eye(4), (2, 1, 1)))
    # Metric depth = canonical depth * mean focal (process pixels) / 300: doubling the focal doubles it.
    double_f = [[2], [2], [1]]
    frames2 = [Frame(f.image, f.stamp_ns, intrinsics=CameraIntrinsics(f.intrinsics.K * double_f, 64, 48))
               for f in frames]
    pred2 = eng.predict(frames2)
    np.testing.assert_allclose(pred2.depth[0], 2 * pred.depth[0], rtol=1e-3)


def test_per_view_mono_model_reports_known_intrinsics_not_a_guess():
    """A model that predicts no camera reports the CameraInfo intrinsics of views that have them."""
    from da3_ros.model.presets import DA3Config

    cfg = DA3Config(name="tiny-mono", kind="mono", embed_dim=96, depth=4, num_heads=2, ffn="mlp",
                    alt_start=-1, qknorm_start=-1, rope_start=-1, out_layers=(0, 1, 2, 3), cat_token=False,
                    head="dpt", head_features=16, head_out_channels=(8, 16, 32, 64))
    torch.manual_seed(0)
    eng = DA3Engine(build_model(cfg), process_res=70)
    frames = _frames([(64, 48)] * 2)
    known = CameraIntrinsics(frames[0].intrinsics.K * [[1.5], [1.5], [1]], 64, 48)
    frames = [Frame(frames[0].image, frames[0].stamp_ns, intrinsics=known),
              Frame(frames[1].image, frames[1].stamp_ns)]  # second view: no CameraInfo
    pred = eng.predict(frames)
    np.testing.assert_allclose(pred.intrinsics[0].K, known.K)
    assert (pred.intrinsics[1].width, pred.intrinsics[1].height) == (64, 48)
    assert not np.allclose(pred.intrinsics[1].K, known.K)  # the guess, for the view without one


def test_calibration_is_published_and_an_any_view_network_without_poses_is_not_told_it():
    """CameraInfo is the source of intrinsics: reported at source size, depth as predicted (z),
    and the network call stays unconditioned (it cannot use K without poses; a conditioned call
    runs eagerly on the GPU)."""
    poses = np.tile(np.eye(4), (2, 1, 1))
    net = FakeNet(poses, np.array([[30.0, 0, 35.0], [0, 30.0, 28.0], [0, 0, 1]]))  # its own focal: wrong
    frames = _frames([(64, 48), (128, 96)])
    pred = DA3Engine(net, process_res=70, condition_on_intrinsics=True).predict(frames)
    assert net.calls[0][2] is None and net.calls[0][1] is None
    for i, (f, k) in enumerate(zip(frames, pred.intrinsics)):
        np.testing.assert_allclose(k.K, f.intrinsics.K)
        assert (k.width, k.height) == (f.width, f.height)
        np.testing.assert_allclose(pred.depth[i], i + 1, rtol=1e-6)


def test_published_cloud_is_the_published_depth_unprojected_with_the_calibration(tiny_engine):
    from da3_ros.core.geometry import depth_to_world_points

    seq = make_sequence(6, width=64, height=48)
    calib = CameraIntrinsics(np.array([[41.0, 0, 30.5], [0, 43.0, 25.0], [0, 0, 1]]), 64, 48)
    frames = [Frame(f.image, f.stamp_ns, f.camera, intrinsics=calib) for f in seq.frames]
    eng = DA3Engine(tiny_engine.model, process_res=70, ref_view_strategy="first",
                    condition_on_intrinsics=True)
    p = Pipeline(PipelineConfig(num_view=3, stride=2, cloud_pixel_step=1, max_points=0), eng)
    results = [r for f in frames for r in p.push(f)]
    assert len(results) == 2
    for r in results:
        pred = r.prediction
        want = []
        for i in np.flatnonzero(r.is_new):
            np.testing.assert_allclose(pred.intrinsics[i].K, calib.K)
            d = pred.depth[i]
            pts = depth_to_world_points(d, calib.K, r.world_from_cam[i]).reshape(-1, 3)
            want.append(pts[(np.isfinite(d) & (d > 0)).ravel()])
        np.testing.assert_allclose(r.points_world, np.concatenate(want), rtol=1e-4, atol=1e-5)
