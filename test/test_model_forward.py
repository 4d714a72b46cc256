"""Forward behaviour of our DA3 network on the tiny preset (fast, CPU)."""

import pytest
import torch
from _tiny_nets import TINY, TINY_METRIC, TINY_MONO, H, W
from _tiny_nets import images as _images
from _tiny_nets import poses as _poses
from _tiny_nets import randomize as _randomize
from _tiny_nets import split_sky as _split_sky

from da3_ros.model import NestedConfig, build_model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return _randomize(build_model(TINY))


@pytest.fixture(scope="module")
def mono():
    torch.manual_seed(1)
    return _split_sky(_randomize(build_model(TINY_MONO), 1))


@torch.inference_mode()
def test_output_shapes_and_ranges(tiny):
    out = tiny(_images(3, b=2), return_rays=True)
    assert out.depth.shape == (2, 3, H, W) and out.depth_conf.shape == (2, 3, H, W)
    assert out.extrinsics.shape == (2, 3, 3, 4) and out.intrinsics.shape == (2, 3, 3, 3)
    assert out.ray.shape == (2, 3, 8 * H // 14, 8 * W // 14, 6)
    assert out.ray_conf.shape == (2, 3, 8 * H // 14, 8 * W // 14)
    assert (out.depth > 0).all() and (out.depth_conf >= 1).all()
    rot = out.extrinsics[..., :3]
    torch.testing.assert_close(rot @ rot.mT, torch.eye(3).expand_as(rot), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.intrinsics[..., 0, 2], torch.full((2, 3), W / 2))
    assert out.ray is not None and tiny(_images(1)).ray is None
    assert out.is_metric is False and tiny.is_metric is False


@torch.inference_mode()
def test_global_attention_spans_views(tiny, mono):
    x = _images(4)
    x2 = x.clone()
    x2[:, 2] = torch.randn_like(x2[:, 2])
    a, b = tiny(x, ref_view_strategy="first"), tiny(x2, ref_view_strategy="first")
    assert (a.depth[:, 0] - b.depth[:, 0]).abs().max() > 1e-4
    m1, m2 = mono(x), mono(x2)
    # Per-view network: view 0's sky and non-sky depth are untouched by view 2 (sky pixels
    # get a window-wide far depth in post-processing, as upstream).
    torch.testing.assert_close(m1.sky[:, :2], m2.sky[:, :2], rtol=1e-6, atol=1e-7)
    non_sky = m1.sky[:, :2] < 0.3
    torch.testing.assert_close(m1.depth[:, :2][non_sky], m2.depth[:, :2][non_sky], rtol=1e-6, atol=1e-7)
    assert (m1.depth[:, 2] - m2.depth[:, 2]).abs().max() > 1e-4


@torch.inference_mode()
@pytest.mark.parametrize("chunk", [1, 3])
def test_frame_chunking_matches_unchunked(tiny, chunk):
    x = _images(5)
    a = tiny(x, return_rays=True)
    b = tiny(x, return_rays=True, frame_chunk=chunk)
    for k in ("depth", "depth_conf", "extrinsics", "intrinsics", "ray", "ray_conf"):
        torch.testing.assert_close(getattr(b, k), getattr(a, k), rtol=1e-5, atol=1e-6, msg=k)


@torch.inference_mode()
def test_reference_view_outputs_in_input_order(tiny):
    x = _images(4, seed=3)
    order = [2, 0, 1, 3]  # what "middle" (S // 2 = 2) puts first
    mid = tiny(x, ref_view_strategy="middle")
    first = tiny(x[:, order], ref_view_strategy="first")
    torch.testing.assert_close(mid.depth[:, order], first.depth, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mid.extrinsics[:, order], first.extrinsics, rtol=1e-5, atol=1e-6)
    assert (mid.depth - tiny(x, ref_view_strategy="first").depth).abs().max() > 1e-4


@torch.inference_mode()
@pytest.mark.parametrize("strategy", ["saddle_balanced", "saddle_sim_range"])
def test_feature_strategies_pick_one_of_the_views(tiny, strategy):
    x = _images(4, seed=4)
    out = tiny(x, ref_view_strategy=strategy)
    matches = []
    for ref in range(4):
        order = [ref] + [i for i in range(4) if i != ref]
        cand = tiny(x[:, order], ref_view_strategy="first")
        matches.append(torch.allclose(out.depth[:, order], cand.depth, rtol=1e-5, atol=1e-6))
    assert sum(matches) >= 1


@torch.inference_mode()
def test_reference_selection_inactive_below_three_views(tiny):
    x = _images(2)
    torch.testing.assert_close(tiny(x, ref_view_strategy="middle").depth,
                               tiny(x, ref_view_strategy="first").depth, rtol=0, atol=0)
    with pytest.raises(ValueError, match="strategy"):
        tiny(x, ref_view_strategy="best")


@torch.inference_mode()
def test_pose_conditioning(tiny):
    x = _images(3)
    w2c, k = _poses(3)
    plain, cond = tiny(x), tiny(x, extrinsics=w2c, intrinsics=k)
    assert (plain.depth - cond.depth).abs().max() > 1e-4
    w2c2 = w2c.clone()
    w2c2[:, 1, :3, 3] += 1.0
    assert (tiny(x, extrinsics=w2c2, intrinsics=k).depth - cond.depth).abs().max() > 1e-5
    with pytest.raises(ValueError, match="intrinsics"):
        tiny(x, extrinsics=w2c)


@torch.inference_mode()
def test_metric_scaling_uses_focal():
    torch.manual_seed(2)
    net = _randomize(build_model(TINY_METRIC), 2)
    x = _images(2)
    _, k = _poses(2)
    k[:, 1, 0, 0] = 90.0
    raw = net(x)
    scaled = net(x, intrinsics=k, metric_scaling=True)
    focal = (k[..., 0, 0] + k[..., 1, 1]) / 2 / 300.0
    torch.testing.assert_close(scaled.depth, raw.depth * focal[..., None, None])
    assert scaled.is_metric and not raw.is_metric and not net.is_metric
    assert raw.extrinsics is None and raw.sky.shape == (1, 2, H, W)
    assert (raw.depth_conf == 1).all()
    with pytest.raises(ValueError, match="intrinsics"):
        net(x, metric_scaling=True)
    assert build_model(TINY_METRIC, apply_metric_scaling=True).is_metric


@torch.inference_mode()
def test_sky_pixels_get_far_depth(mono):
    out = mono(_images(2, seed=7))
    sky = out.sky >= 0.3
    assert 10 < int(sky.sum()) < sky.numel() - 10, "random weights should give some sky"
    far = torch.quantile(out.depth[~sky], 0.99)
    torch.testing.assert_close(out.depth[sky], far.expand(int(sky.sum())))


@torch.inference_mode()
def test_nested_scales_anyview_to_metric():
    torch.manual_seed(3)
    nested = _randomize(build_model(NestedConfig("tiny-nested", anyview=TINY, metric=TINY_METRIC)), 3)
    _split_sky(nested.da3_metric)
    x = _images(3)
    out = nested(x)
    ref = nested.da3(x)
    assert out.is_metric and nested.is_metric and out.scale_factor.shape == (1,)
    s = out.scale_factor[0]
    non_sky = out.sky < 0.3
    torch.testing.assert_close(out.depth[non_sky], ref.depth[non_sky] * s)
    torch.testing.assert_close(out.extrinsics[..., 3], ref.extrinsics[..., 3] * s)
    torch.testing.assert_close(out.extrinsics[..., :3], ref.extrinsics[..., :3])
    assert 10 < int((~non_sky).sum()) < non_sky.numel() - 10
    assert (out.depth_conf[~non_sky] == 1).all()
    far = torch.clamp(torch.quantile(out.depth[non_sky], 0.99), max=200.0)
    torch.testing.assert_close(out.depth[~non_sky], far.expand(int((~non_sky).sum())))


@torch.inference_mode()
def test_bf16_weights_and_activations(tiny):
    x = _images(2)
    ref = tiny(x)
    net = build_model(TINY)
    net.load_state_dict(tiny.state_dict())
    net.set_dtype(torch.bfloat16)
    assert net.backbone.pretrained.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert net.cam_dec.fc_t.weight.dtype == torch.float32
    assert net.cam_enc.trunk[0].attn.qkv.weight.dtype == torch.float32
    assert net.head.scratch.output_conv2[0].weight.dtype == torch.float32
    out = net(x, *_poses(2))
    assert out.depth.dtype == torch.float32 and torch.isfinite(out.depth).all()
    out = net(x)
    rel = ((out.depth - ref.depth).abs() / ref.depth).mean()
    assert rel < 0.05
