"""Camera encoder/decoder and DA3's 9-d pose encoding.

Pose encoding (per view): ``[t (3), quaternion xyzw (4), fov_h, fov_w]`` of the
camera-to-world transform, t being the camera centre in world coordinates (OpenCV camera
axes: x right, y down, z forward); fovs in radians for an image of the model-input size.
Both modules run in fp32 (upstream disables autocast around them).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from da3_ros.model.attention import AttentionFn
from da3_ros.model.vit import Block, Mlp


def affine_inverse(mat: torch.Tensor) -> torch.Tensor:
    """Invert rigid transforms ``(..., 3, 4)`` or ``(..., 4, 4)`` (same shape out)."""
    rot, t = mat[..., :3, :3], mat[..., :3, 3:]
    top = torch.cat([rot.mT, -rot.mT @ t], dim=-1)
    return torch.cat([top, mat[..., 3:, :]], dim=-2)


def quat_to_mat(quat: torch.Tensor) -> torch.Tensor:
    """Quaternions ``(..., 4)`` xyzw (any norm) -> rotation matrices ``(..., 3, 3)``."""
    i, j, k, r = quat.unbind(-1)
    two_s = 2.0 / (quat * quat).sum(-1)
    mat = torch.stack((
        1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
        two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
        two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j),
    ), -1)
    return mat.reshape(quat.shape[:-1] + (3, 3))


def mat_to_quat(mat: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` -> unit quaternions xyzw with w >= 0 ``(..., 4)``."""
    m = mat.reshape(mat.shape[:-2] + (9,)).unbind(-1)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m
    q_abs = torch.stack([1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22,
                         1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22], dim=-1)
    q_abs = torch.where(q_abs > 0, q_abs.clamp_min(0).sqrt(), torch.zeros_like(q_abs))
    cand = torch.stack([
        torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
    ], dim=-2)  # rows: candidates in wxyz order
    cand = cand / (2.0 * q_abs[..., None].clamp_min(0.1))
    best = F.one_hot(q_abs.argmax(dim=-1), 4).to(cand.dtype)[..., None]
    quat = (cand * best).sum(-2)[..., [1, 2, 3, 0]]
    return torch.where(quat[..., 3:4] < 0, -quat, quat)


def encode_pose(c2w: torch.Tensor, intrinsics: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Camera-to-world ``(B, S, 3|4, 4)`` + K ``(B, S, 3, 3)`` (pixels) -> ``(B, S, 9)`` fp32."""
    h, w = image_hw
    quat = mat_to_quat(c2w[..., :3, :3])
    fov_h = 2 * torch.atan((h / 2) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((w / 2) / intrinsics[..., 0, 0])
    return torch.cat([c2w[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]], dim=-1).float()


def decode_pose(enc: torch.Tensor, image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, S, 9)`` -> (camera-to-world ``(B, S, 3, 4)``, K ``(B, S, 3, 3)``).

    K has fx = (W/2)/tan(fov_w/2), fy = (H/2)/tan(fov_h/2) (tan clamped >= 1e-6) and the
    principal point at (W/2, H/2), in model-input pixels.
    """
    h, w = image_hw
    c2w = torch.cat([quat_to_mat(enc[..., 3:7]), enc[..., :3, None]], dim=-1)
    fy = (h / 2.0) / torch.clamp(torch.tan(enc[..., 7] / 2.0), 1e-6)
    fx = (w / 2.0) / torch.clamp(torch.tan(enc[..., 8] / 2.0), 1e-6)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    k = torch.stack([fx, zero, zero + w / 2, zero, fy, zero + h / 2, zero, zero, one], dim=-1)
    return c2w, k.view(enc.shape[:-1] + (3, 3))


class CameraEnc(nn.Module):
    """Pose conditioning: w2c + K -> one token per view ``(B, S, C)`` (views attend each other)."""

    def __init__(self, dim: int, num_heads: int = 16, depth: int = 4) -> None:
        super().__init__()
        self.pose_branch = Mlp(9, dim // 2, dim)
        self.token_norm = nn.LayerNorm(dim)
        self.trunk = nn.ModuleList(
            [Block(dim, num_heads, ln_eps=1e-5, init_scale=0.01) for _ in range(depth)])
        self.trunk_norm = nn.LayerNorm(dim)

    def forward(self, w2c: torch.Tensor, intrinsics: torch.Tensor, image_hw: tuple[int, int],
                attn_fn: AttentionFn) -> torch.Tensor:
        """``w2c (B, S, 4, 4)``, ``intrinsics (B, S, 3, 3)`` input-res pixels -> ``(B, S, C)`` fp32."""
        dtype = self.token_norm.weight.dtype
        enc = encode_pose(affine_inverse(w2c.float()), intrinsics.float(), image_hw)
        x = self.token_norm(self.pose_branch(enc.to(dtype)))
        for blk in self.trunk:
            x = blk(x, attn_fn)
        return self.trunk_norm(x)


class CameraDec(nn.Module):
    """Raw camera token ``(B, S, 2C)`` -> pose encoding ``(B, S, 9)`` (fp32)."""

    def __init__(self, dim_in: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(dim_in, dim_in), nn.ReLU(),
                                      nn.Linear(dim_in, dim_in), nn.ReLU())
        self.fc_t = nn.Linear(dim_in, 3)
        self.fc_qvec = nn.Linear(dim_in, 4)
        self.fc_fov = nn.Sequential(nn.Linear(dim_in, 2), nn.ReLU())

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        """Apply the module (shapes in the class docstring)."""
        feat = self.backbone(token.to(self.fc_t.weight.dtype))
        return torch.cat([self.fc_t(feat), self.fc_qvec(feat), self.fc_fov(feat)], dim=-1).float()
