"""Torch (GPU-capable) preprocessing and point clouds agree with the CPU (numpy/cv2) path.

Run on the CPU here; the same code runs on CUDA (bench/RESULTS.md times it there).
"""

import numpy as np
import torch

from da3_ros.core.cloud import window_cloud as cpu_window_cloud
from da3_ros.core.cloud import window_cloud_torch as window_cloud
from da3_ros.core.config import PipelineConfig
from da3_ros.core.frames import CameraIntrinsics, Frame, WindowPrediction
from da3_ros.core.resampling import preprocess_frames, preprocess_image, process_size


def _smooth_image(h, w, seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3)).astype(np.float32)
    yy, xx = np.meshgrid(np.linspace(0, base.shape[0] - 1.001, h), np.linspace(0, base.shape[1] - 1.001, w),
                         indexing="ij")
    y0, x0 = yy.astype(int), xx.astype(int)
    fy, fx = (yy - y0)[..., None], (xx - x0)[..., None]
    img = (base[y0, x0] * (1 - fy) * (1 - fx) + base[y0 + 1, x0] * fy * (1 - fx)
           + base[y0, x0 + 1] * (1 - fy) * fx + base[y0 + 1, x0 + 1] * fy * fx)
    return img.round().astype(np.uint8)


def test_preprocess_matches_cpu_path_on_smooth_images():
    imgs = [_smooth_image(120, 160, 0), _smooth_image(120, 160, 1), _smooth_image(90, 200, 2)]
    size = process_size(160, 120, 112)[1]
    ref = np.stack([preprocess_image(im, 112, size) for im in imgs])
    out, uploaded = preprocess_frames(imgs, 112, size, "cpu")
    assert all(np.array_equal(u.numpy(), im) for u, im in zip(uploaded, imgs, strict=True))
    assert out.shape == (1, 3, 3, size[1], size[0]) and out.dtype == torch.float32
    err = (out[0].numpy() - ref).__abs__()
    assert err.mean() < 0.02 and err.max() < 0.3  # resampling kernels differ, conventions do not
    # enlarging (bicubic on both sides)
    small = [_smooth_image(30, 40, 3)]
    size_up = process_size(40, 30, 112)[1]
    err_up = (preprocess_frames(small, 112, size_up, "cpu")[0][0].numpy()
              - preprocess_image(small[0], 112, size_up)[None]).__abs__()
    assert err_up.mean() < 0.02


def _prediction(seed=0, views=3, h=24, w=32):
    rng = np.random.default_rng(seed)
    frames, depth, conf, intr, poses = [], [], [], [], []
    for i in range(views):
        frames.append(Frame(image=rng.integers(0, 256, (h, w, 3), dtype=np.uint8), stamp_ns=i))
        d = rng.uniform(0.5, 5.0, (h, w)).astype(np.float32)
        d[0, :3] = np.nan
        depth.append(d)
        conf.append(rng.uniform(1, 3, (h, w)).astype(np.float32))
        K = np.array([[30.0, 0, w / 2], [0, 30.0, h / 2], [0, 0, 1]])
        intr.append(CameraIntrinsics(K=K, width=w, height=h))
        pose = np.eye(4)
        pose[:3, 3] = rng.normal(size=3)
        poses.append(pose)
    return WindowPrediction(frames=frames, depth=depth, confidence=conf, world_from_cam=np.stack(poses),
                            intrinsics=intr)


def test_window_cloud_matches_cpu_path():
    pred = _prediction()
    rng = np.random.default_rng(0)
    for cfg in (PipelineConfig(conf_threshold=1.5, max_depth_m=4.0, cloud_pixel_step=2),
                PipelineConfig(voxel_size_m=0.5)):
        ref = cpu_window_cloud(pred, [0, 2], cfg, rng)
        got = window_cloud(pred, [0, 2], cfg, device="cpu")
        assert len(got[0]) == len(ref[0]) > 0
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got[1], ref[1])
        np.testing.assert_allclose(got[2], ref[2], rtol=1e-6)


def test_window_cloud_caps_points():
    pred = _prediction(views=2)
    cfg = PipelineConfig(max_points=100, cloud_pixel_step=1)
    pts, cols, conf = window_cloud(pred, [0, 1], cfg, torch.Generator().manual_seed(0), device="cpu")
    assert pts.shape == (100, 3) and cols.shape == (100, 3) and conf.shape == (100,)
    full = window_cloud(pred, [0, 1], PipelineConfig(max_points=0, cloud_pixel_step=1), device="cpu")[0]
    # every kept point is one of the full cloud's points
    d = np.abs(pts[:, None, :] - full[None, :, :]).sum(-1).min(1)
    assert d.max() < 1e-6


def test_window_cloud_of_views_of_several_sizes_keeps_the_cpu_order():
    """A rig with cameras of two sizes, interleaved in the window: views of one size go
    through one pass together and the points still come out in the numpy path's order."""
    big, small = _prediction(seed=1, views=2, h=24, w=32), _prediction(seed=2, views=2, h=12, w=20)
    pick = lambda name: [getattr(big, name)[0], getattr(small, name)[0], getattr(big, name)[1],  # noqa: E731
                         getattr(small, name)[1]]
    pred = WindowPrediction(frames=pick("frames"), depth=pick("depth"), confidence=pick("confidence"),
                            world_from_cam=np.stack(pick("world_from_cam")), intrinsics=pick("intrinsics"))
    cfg = PipelineConfig(conf_threshold=1.5, cloud_pixel_step=2, max_points=0)
    views = [0, 1, 2, 3]
    ref = cpu_window_cloud(pred, views, cfg, np.random.default_rng(0))
    got = window_cloud(pred, views, cfg, device="cpu")
    assert len(got[0]) == len(ref[0]) > 0
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-6)


def test_only_a_whole_pinned_tensor_counts_as_pinned():
    from da3_ros.core.resampling import pinned_tensor

    plain = np.zeros((4, 5, 3), np.uint8)
    unpinned = torch.zeros((4, 5, 3), dtype=torch.uint8).numpy()  # a tensor's memory, not page-locked
    assert pinned_tensor(plain) is None and pinned_tensor(unpinned) is None
    assert pinned_tensor(unpinned[1:]) is None
