"""Tiny DA3 networks with fixed random weights and inputs for the model tests (CPU, fast)."""

from __future__ import annotations

import dataclasses

import torch

from da3_ros.model import PRESETS, NestedConfig

TINY = PRESETS["da3-tiny"]
TINY_MONO = dataclasses.replace(TINY, name="tiny-mono", kind="mono", alt_start=-1, qknorm_start=-1,
                                rope_start=-1, cat_token=False, head="dpt")
TINY_METRIC = dataclasses.replace(TINY_MONO, name="tiny-metric", kind="metric")
TINY_NESTED = NestedConfig("tiny-nested", anyview=TINY, metric=TINY_METRIC)
H, W = 56, 70


def randomize(net, seed=0):
    """Perturb every weight of ``net`` (a fixed seed) and give the camera decoder a sane fov."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
        if hasattr(net, "cam_dec"):
            net.cam_dec.fc_fov[0].bias.fill_(1.0)  # a sane field of view
    return net


def split_sky(net):
    """Shift the sky logit so about half the pixels of a random image are sky."""
    seen = []
    hook = net.head.scratch.sky_output_conv2.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.inference_mode():
        net(images(2, seed=7))
    hook.remove()
    with torch.no_grad():
        net.head.scratch.sky_output_conv2[2].bias += 0.3 - seen[0].median()
    return net


def images(s, b=1, seed=0):
    """``(b, s, 3, H, W)`` standard-normal images."""
    return torch.randn(b, s, 3, H, W, generator=torch.Generator().manual_seed(seed))


def poses(s, b=1):
    """``(w2c (b, s, 4, 4), K (b, s, 3, 3))``: a camera turning and moving along a line."""
    w2c = torch.eye(4).repeat(b, s, 1, 1)
    angles = torch.linspace(0, 0.5, s)
    w2c[..., 0, 0], w2c[..., 0, 2] = torch.cos(angles), torch.sin(angles)
    w2c[..., 2, 0], w2c[..., 2, 2] = -torch.sin(angles), torch.cos(angles)
    w2c[..., :3, 3] = torch.stack([angles, 0.1 * angles, -angles], -1)
    k = torch.tensor([[60.0, 0, W / 2], [0, 60.0, H / 2], [0, 0, 1]]).repeat(b, s, 1, 1)
    return w2c, k
