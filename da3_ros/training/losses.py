"""Training losses on DA3's outputs (depth, confidence, cameras), differentiable in torch.

Conventions: ground truth in DA3's output convention for ``ref_view_strategy="first"``
(see :mod:`da3_ros.training.data`): world = view 0's camera, depth and translations in
units where the window's mean valid depth is 1. Predicted extrinsics are world-to-camera
``(B, S, 3, 4)``; intrinsics ``(B, S, 3, 3)`` in input pixels.

Every loss is 0 for a perfect prediction (with confidence 1 for the confidence term).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (total = sum of weight * term)."""

    depth_conf: float = 1.0
    depth_l1: float = 0.5
    depth_grad: float = 0.5
    sky_conf: float = 0.05
    cam_t: float = 1.0
    cam_rot: float = 1.0
    focal: float = 1.0
    view_scale: float = 0.0
    conf_alpha: float = 0.2


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def depth_conf_loss(depth: torch.Tensor, conf: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor,
                    alpha: float = 0.2) -> torch.Tensor:
    """Aleatoric depth loss ``mean(conf * |d - gt| - alpha * log(conf))`` over valid pixels.

    Args:
        depth: ``(B, S, H, W)`` predicted depth.
        conf: ``(B, S, H, W)`` predicted confidence (>= 1).
        gt: ``(B, S, H, W)`` true depth (same units).
        valid: ``(B, S, H, W)`` bool.
        alpha: weight of the ``-log(conf)`` regulariser.
    """
    err = (depth - gt).abs()
    return _masked_mean(conf * err - alpha * torch.log(conf), valid)


def depth_l1_loss(depth: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Plain ``mean |d - gt|`` over valid pixels (keeps every pixel's gradient alive)."""
    return _masked_mean((depth - gt).abs(), valid)


def depth_grad_loss(depth: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean L1 of the x and y finite differences of ``d - gt`` over pairs of valid pixels."""
    diff = depth - gt
    vx = valid[..., :, 1:] & valid[..., :, :-1]
    vy = valid[..., 1:, :] & valid[..., :-1, :]
    gx = (diff[..., :, 1:] - diff[..., :, :-1]).abs()
    gy = (diff[..., 1:, :] - diff[..., :-1, :]).abs()
    return 0.5 * (_masked_mean(gx, vx) + _masked_mean(gy, vy))


def view_scale_loss(depth: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over views of ``|log(mean d) - log(mean gt)|`` (means over each view's valid pixels).

    Each view's scale relative to the window: the error a one-view-at-a-time network cannot
    avoid when its views lie at different distances. Views without valid pixels are left out.

    Args:
        depth: ``(B, S, H, W)`` predicted depth (> 0 where valid).
        gt: ``(B, S, H, W)`` true depth (same units).
        valid: ``(B, S, H, W)`` bool.
    """
    m = valid.to(depth.dtype)
    n = m.sum((-1, -2))
    has = n > 0
    mean_d = (depth * m).sum((-1, -2)) / n.clamp_min(1.0)
    mean_g = (gt * m).sum((-1, -2)) / n.clamp_min(1.0)
    err = (torch.log(mean_d.clamp_min(1e-6)) - torch.log(mean_g.clamp_min(1e-6))).abs()
    return _masked_mean(err, has)


def sky_conf_loss(conf: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``mean(conf - 1)`` over invalid (sky) pixels: no estimate there, so lowest confidence."""
    return _masked_mean(conf - 1.0, ~valid)


def cam_to_ref_from_extrinsics(extrinsics: torch.Tensor) -> torch.Tensor:
    """Predicted world-to-camera ``(..., 3, 4)`` -> camera-to-world ``(..., 4, 4)``."""
    rot, t = extrinsics[..., :3, :3], extrinsics[..., :3, 3:]
    top = torch.cat([rot.mT, -rot.mT @ t], dim=-1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


def camera_losses(extrinsics: torch.Tensor, intrinsics: torch.Tensor, cam_to_ref: torch.Tensor,
                  K: torch.Tensor, image_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Pose and intrinsics losses of a window batch.

    Args:
        extrinsics: ``(B, S, 3, 4)`` predicted world-to-camera.
        intrinsics: ``(B, S, 3, 3)`` predicted K, input pixels.
        cam_to_ref: ``(B, S, 4, 4)`` true camera-to-view-0 (normalised translations).
        K: ``(B, S, 3, 3)`` true K, input pixels.
        image_hw: (H, W) of the input.

    Returns:
        ``cam_t``: mean L1 (summed over xyz) of camera centres; ``cam_rot``: mean Frobenius
        norm of ``R_pred - R_gt`` (camera-to-world rotations; ``2*sqrt(2)*sin(theta/2)`` for
        an error of angle theta); ``focal``: mean of ``|fx/W - fx_gt/W| + |fy/H - fy_gt/H|``.
    """
    h, w = image_hw
    c2w = cam_to_ref_from_extrinsics(extrinsics.float())
    cam_t = (c2w[..., :3, 3] - cam_to_ref[..., :3, 3]).abs().sum(-1).mean()
    rot_err = c2w[..., :3, :3] - cam_to_ref[..., :3, :3]
    cam_rot = torch.sqrt((rot_err ** 2).sum((-1, -2)) + 1e-12).mean()
    fx, fy = intrinsics[..., 0, 0].float(), intrinsics[..., 1, 1].float()
    focal = ((fx - K[..., 0, 0]).abs() / w + (fy - K[..., 1, 1]).abs() / h).mean()
    return {"cam_t": cam_t, "cam_rot": cam_rot, "focal": focal}


def total_loss(out, batch: dict[str, torch.Tensor],
               weights: LossWeights = LossWeights()) -> tuple[torch.Tensor, dict[str, float]]:
    """All terms for a network output and a batch from :func:`da3_ros.training.data.make_batch`.

    Args:
        out: ``DA3Output`` (depth, depth_conf, extrinsics, intrinsics).
        batch: dict with depth, valid, cam_to_ref, K.
        weights: term weights.

    Returns:
        (scalar loss tensor, dict of every term as float, including ``total``).
    """
    depth, conf = out.depth.float(), out.depth_conf.float()
    gt, valid = batch["depth"], batch["valid"]
    terms = {
        "depth_conf": depth_conf_loss(depth, conf, gt, valid, weights.conf_alpha),
        "depth_l1": depth_l1_loss(depth, gt, valid),
        "depth_grad": depth_grad_loss(depth, gt, valid),
        "view_scale": view_scale_loss(depth, gt, valid),
        "sky_conf": sky_conf_loss(conf, valid),
    }
    terms.update(camera_losses(out.extrinsics, out.intrinsics, batch["cam_to_ref"], batch["K"],
                               tuple(depth.shape[-2:])))
    total = sum(getattr(weights, k) * v for k, v in terms.items())
    logged = {k: float(v.detach()) for k, v in terms.items()}
    logged["total"] = float(total.detach())
    return total, logged
