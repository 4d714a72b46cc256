"""Parity with the upstream depth-anything-3 package: same random weights, same outputs.

The upstream network is built from its bundled config (no API layer), given random
weights, saved in the official checkpoint layout and loaded by our ``load_pretrained``
(large models go through the same strict in-memory loader to spare the disk). Both run in
fp32 on CPU under ``torch.inference_mode``, upstream called directly (no autocast).
"""

import json

import pytest
import torch

pytest.importorskip("depth_anything_3")
pytest.importorskip("omegaconf")

from depth_anything_3.cfg import create_object, load_config  # noqa: E402
from depth_anything_3.model.da3 import NestedDepthAnything3Net  # noqa: E402
from depth_anything_3.registry import MODEL_REGISTRY  # noqa: E402
from safetensors.torch import save_model  # noqa: E402

from da3_ros.model import DA3Output, build_model, checkpoint_filter_fn, load_pretrained  # noqa: E402
from da3_ros.model.postprocess import align_to_metric  # noqa: E402
from da3_ros.model.weights import load_state_dict_strict  # noqa: E402

TOL = {"rtol": 1e-4, "atol": 1e-5}
KEYS = ("depth", "depth_conf", "extrinsics", "intrinsics")


def _upstream(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = create_object(load_config(MODEL_REGISTRY[name])).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():  # shared tensors appear once here
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
        if net.cam_dec is not None:
            net.cam_dec.fc_fov[0].bias.fill_(1.0)  # fov ~1 rad instead of a clamped 0
    return net


def _pair_via_file(name, seed, tmp_path_factory):
    up = _upstream(name, seed)
    holder = torch.nn.Module()
    holder.model = up  # official layout: keys "model.<DepthAnything3Net key>"
    d = tmp_path_factory.mktemp(name)
    save_model(holder, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({"model_name": name}))
    return up, load_pretrained(d)


def _pair_in_memory(name, seed):
    up = _upstream(name, seed)
    ours = build_model(name, device="meta")
    load_state_dict_strict(ours, checkpoint_filter_fn({f"model.{k}": v for k, v in up.state_dict().items()}))
    ours.set_attention_backend(None)
    return up, ours


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return _pair_via_file("da3-small", 0, tmp_path_factory)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return _pair_via_file("da3-base", 1, tmp_path_factory)


def _inputs(s, h, w, seed, pose):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, s, 3, h, w, generator=g)
    if not pose:
        return x, None, None
    rot = torch.linalg.qr(torch.randn(1, s, 3, 3, generator=g)).Q
    rot = rot * torch.linalg.det(rot)[..., None, None]  # proper rotations
    w2c = torch.eye(4).repeat(1, s, 1, 1)
    w2c[..., :3, :3], w2c[..., :3, 3] = rot, torch.randn(1, s, 3, generator=g)
    fx = 40 + 40 * torch.rand(1, s, generator=g)
    intr = torch.zeros(1, s, 3, 3)
    intr[..., 0, 0], intr[..., 1, 1] = fx, fx * 1.05
    intr[..., 0, 2], intr[..., 1, 2], intr[..., 2, 2] = w / 2, h / 2, 1
    return x, w2c, intr


def _compare(up, ours, x, ext, intr, strategy="saddle_balanced", keys=KEYS):
    with torch.inference_mode():
        a = up(x, ext, intr, ref_view_strategy=strategy)
        b = ours(x, ext, intr, ref_view_strategy=strategy)
    for k in keys:
        torch.testing.assert_close(getattr(b, k), a[k], **TOL, msg=lambda m, k=k: f"{k}: {m}")
    return a, b


@pytest.mark.parametrize("pose", [False, True], ids=["plain", "pose"])
@pytest.mark.parametrize("s", [1, 2, 4])
def test_small_parity(small, s, pose):
    _compare(*small, *_inputs(s, 56, 70, seed=10 + s, pose=pose))


@pytest.mark.parametrize("pose", [False, True], ids=["plain", "pose"])
@pytest.mark.parametrize("s", [1, 2, 4])
def test_base_parity(base, s, pose):
    _compare(*base, *_inputs(s, 70, 56, seed=20 + s, pose=pose))


@pytest.mark.parametrize("strategy", ["first", "middle", "saddle_sim_range"])
def test_small_parity_reference_strategies(small, strategy):
    _compare(*small, *_inputs(4, 56, 70, seed=31, pose=False), strategy=strategy)


def test_small_ray_parity(small):
    up, ours = small
    x, _, _ = _inputs(3, 56, 70, seed=5, pose=False)
    with torch.inference_mode():
        feats, _ = up.backbone(x, cam_token=None, export_feat_layers=[], ref_view_strategy="saddle_balanced")
        ref = up.head(feats, 56, 70, patch_start_idx=0)
        out = ours(x, return_rays=True)
    torch.testing.assert_close(out.ray, ref["ray"], **TOL)
    torch.testing.assert_close(out.ray_conf, ref["ray_conf"], **TOL)


@pytest.mark.parametrize("name", ["da3metric-large", "da3mono-large"])
def test_per_view_large_parity(name):
    up, ours = _pair_in_memory(name, 2)
    a, b = _compare(up, ours, *_inputs(1, 56, 42, seed=3, pose=False), keys=("depth", "sky"))
    assert b.extrinsics is None and not b.is_metric
    del up, ours


def test_nested_alignment_matches_upstream():
    g = torch.Generator().manual_seed(0)
    s, h, w = 2, 28, 42
    depth = 0.5 + torch.rand(1, s, h, w, generator=g)
    conf = 1 + torch.rand(1, s, h, w, generator=g)
    ext = torch.randn(1, s, 3, 4, generator=g)
    intr = torch.tensor([[50.0, 0, 21], [0, 55.0, 14], [0, 0, 1]]).repeat(1, s, 1, 1)
    mdepth = 2 + torch.rand(1, s, h, w, generator=g)
    sky = torch.rand(1, s, h, w, generator=g) * 0.4  # ~25% sky
    from addict import Dict

    up_out = Dict(depth=depth.clone(), depth_conf=conf.clone(), extrinsics=ext.clone(), intrinsics=intr)
    up_met = Dict(depth=mdepth.clone(), sky=sky)
    for step in ("_apply_metric_scaling", "_apply_depth_alignment", "_handle_sky_regions"):
        up_out = getattr(NestedDepthAnything3Net, step)(None, up_out, up_met)
    ours = align_to_metric(DA3Output(depth.clone(), conf.clone(), ext.clone(), intr),
                           DA3Output(mdepth.clone(), torch.ones_like(mdepth), sky=sky))
    for k in ("depth", "depth_conf", "extrinsics"):
        torch.testing.assert_close(getattr(ours, k), up_out[k], **TOL)
    assert abs(float(ours.scale_factor[0]) - up_out.scale_factor) < 1e-5
