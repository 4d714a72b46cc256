"""The DINOv2-layout ViT backbone with DA3's alternating local/global attention.

Tokens are kept as one contiguous ``(B*S, N, C)`` tensor; a global block views it as
``(B, S*N, C)`` (one sequence over every view of the window) and a local block runs per
frame. Parameter names follow the official checkpoint (``backbone.pretrained.*``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from da3_ros.model.attention import AttentionFn
from da3_ros.model.presets import DA3Config
from da3_ros.model.refview import (
    MIN_VIEWS_FOR_SELECTION,
    gather_views,
    reorder_indices,
    select_reference_view,
)
from da3_ros.model.rope import RopeTables, apply_rope


class LayerScale(nn.Module):
    """Per-channel residual scale ``x * gamma``."""

    def __init__(self, dim: int, init_value: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the module (shapes in the class docstring)."""
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> GELU (exact) -> fc2."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim_in, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim_out or dim_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the module (shapes in the class docstring)."""
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """DINOv2's fused SwiGLU FFN (giant): ``w3(silu(a) * b)`` with ``[a, b] = w12(x)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the module (shapes in the class docstring)."""
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, optional qk-norm and RoPE."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.qk_norm = qk_norm
        if qk_norm:
            self.q_norm = nn.LayerNorm(self.head_dim)  # eps 1e-5, before RoPE, as upstream
            self.k_norm = nn.LayerNorm(self.head_dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_fn: AttentionFn,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``x (B, N, C)``; ``rope`` = (cos, sin) tables ``(N, 1, head_dim)`` or None."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).unbind(2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = attn_fn(q, k, v)  # (B, N, heads, head_dim)
        return self.proj(out.reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block: ``x += ls1 * attn(norm1 x); x += ls2 * ffn(norm2 x)``."""

    def __init__(self, dim: int, num_heads: int, ffn: str = "mlp", qk_norm: bool = False,
                 ln_eps: float = 1e-6, init_scale: float = 1.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm)
        self.ls1 = LayerScale(dim, init_scale)
        self.norm2 = nn.LayerNorm(dim, eps=ln_eps)
        self.mlp = SwiGLU(dim, 4 * dim) if ffn == "swiglu" else Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim, init_scale)

    def forward(self, x: torch.Tensor, attn_fn: AttentionFn,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Apply the module (shapes in the class docstring)."""
        x = x + self.ls1(self.attn(self.norm1(x), attn_fn, rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """14x14 stride-14 convolution: ``(F, 3, H, W) -> (F, H/14 * W/14, C)``."""

    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the module (shapes in the class docstring)."""
        return self.proj(x).flatten(2).transpose(1, 2)


def chunked(fn, x: torch.Tensor, chunk: int | None) -> torch.Tensor:
    """Apply a per-frame ``fn`` to ``x (F, ...)`` in chunks of ``chunk`` frames."""
    if chunk is None or chunk >= x.shape[0]:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(chunk, dim=0)], dim=0)


class VisionTransformer(nn.Module):
    """DINOv2 ViT (no registers) with DA3's camera token, qk-norm, RoPE and global blocks."""

    def __init__(self, cfg: DA3Config) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, c)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        if cfg.has_camera:
            self.camera_token = nn.Parameter(torch.randn(1, 2, c))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.pos_embed_grid ** 2 + 1, c))
        self.blocks = nn.ModuleList([
            Block(c, cfg.num_heads, cfg.ffn, qk_norm=cfg.qknorm_start != -1 and i >= cfg.qknorm_start)
            for i in range(cfg.depth)
        ])
        self.norm = nn.LayerNorm(c)  # eps 1e-5 (stock DINOv2 uses 1e-6)
        self.rope = RopeTables(cfg.rope_freq) if cfg.rope_start != -1 else None

    def interpolated_pos_embed(self, grid_h: int, grid_w: int, dtype: torch.dtype) -> torch.Tensor:
        """``(1, 1 + gh*gw, C)`` position embedding, bicubic from the 37x37 grid in fp32."""
        m = self.cfg.pos_embed_grid
        if grid_h == m and grid_w == m:
            return self.pos_embed.to(dtype)
        pe = self.pos_embed.float()
        patch = pe[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        # DINOv2's +0.1 offset on the scale factor, kept for bit-compatibility.
        patch = F.interpolate(patch, mode="bicubic", antialias=False,
                              scale_factor=((grid_h + 0.1) / m, (grid_w + 0.1) / m))
        patch = patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
        return torch.cat([pe[:, :1], patch], dim=1).to(dtype)

    def embed(self, images: torch.Tensor, chunk: int | None) -> torch.Tensor:
        """``images (F, 3, H, W)`` -> tokens ``(F, 1 + h*w, C)`` (cls first, pos added)."""
        f, _, h, w = images.shape
        gh, gw = h // self.cfg.patch_size, w // self.cfg.patch_size
        patches = chunked(self.patch_embed, images, chunk)
        cls = self.cls_token.to(patches.dtype).expand(f, -1, -1)
        return torch.cat([cls, patches], dim=1) + self.interpolated_pos_embed(gh, gw, patches.dtype)

    def forward(self, images: torch.Tensor, attn_fn: AttentionFn, cam_token: torch.Tensor | None = None,
                ref_view_strategy: str = "saddle_balanced", frame_chunk: int | None = None,
                shard=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Run the backbone.

        Args:
            images: ``(B, S, 3, H, W)`` normalised images, H and W multiples of 14.
            attn_fn: Attention kernel from :mod:`da3_ros.model.attention`.
            cam_token: ``(B, S, C)`` camera-encoder tokens (pose conditioning) or None.
            ref_view_strategy: See :func:`select_reference_view`.
            frame_chunk: Frames per chunk for per-frame work (None: all at once).
            shard: None (this process holds every view), or this process's share of the
                window (:class:`da3_ros.model.context_parallel.ViewShard`: ``start``,
                ``num_views``, ``gather_views``, ``global_attention``). Then ``images`` and
                ``cam_token`` hold views ``[start, start + S_local)`` only; the reference view
                is chosen from every view's cls token and marked where it lives instead of
                being moved first (global attention is order-free: every view has the same
                global RoPE positions), and global blocks attend over all views' keys.

        Returns:
            For each out layer ``(patch_tokens (B, S, h*w, C'), cam_token (B, S, C'))`` in
            input view order (S: this process's views); C' = 2C with cat_token (first half
            raw local tokens, second half normed), the cam token raw.
        """
        cfg = self.cfg
        b, s, _, h, w = images.shape
        gh, gw = h // cfg.patch_size, w // cfg.patch_size
        x = self.embed(images.flatten(0, 1), frame_chunk)  # (B*S, N, C)
        n, c = x.shape[1:]
        local_rope = global_rope = None
        if self.rope is not None:
            tables = self.rope.get(c // cfg.num_heads, gh, gw, x.device, x.dtype)
            local_rope = tables[0], tables[1]
            global_rope = tables[2].repeat(s, 1, 1), tables[3].repeat(s, 1, 1)  # (S*N, 1, D)
        start, num_views = (0, s) if shard is None else (shard.start, shard.num_views)
        global_attn_fn = attn_fn if shard is None else shard.global_attention(attn_fn)
        # Position in x of each batch element's reference view (window view 0 unless selected).
        ref_pos = torch.full((b,), -start, dtype=torch.long, device=x.device)
        local_x, restore, outs = x, None, []
        for i, blk in enumerate(self.blocks):
            if i == cfg.alt_start - 1 and num_views >= MIN_VIEWS_FOR_SELECTION and cam_token is None:
                cls = x.view(b, s, n, c)[:, :, 0]
                if shard is None:  # upstream: move the reference first, restore for the heads
                    ref = select_reference_view(cls, ref_view_strategy)
                    order, restore = reorder_indices(ref, s)
                    x = gather_views(x.view(b, s, n, c), order).flatten(0, 1)
                    local_x = x
                else:
                    ref_pos = select_reference_view(shard.gather_views(cls), ref_view_strategy) - start
            if i == cfg.alt_start:
                x = self._insert_camera_token(x.view(b, s, n, c), cam_token, ref_pos).flatten(0, 1)
            use_rope = i >= cfg.rope_start
            if cfg.is_global_block(i):
                rope = global_rope if use_rope else None
                x = blk(x.view(b, s * n, c), global_attn_fn, rope).view(b * s, n, c)
            else:
                rope = local_rope if use_rope else None
                x = chunked(lambda t, blk=blk, rope=rope: blk(t, attn_fn, rope), x, frame_chunk)
                local_x = x
            if i in cfg.out_layers:
                outs.append(self._out_feature(local_x, x, b, s, restore))
        return outs

    def _insert_camera_token(self, x: torch.Tensor, cam_token: torch.Tensor | None,
                             ref_pos: torch.Tensor) -> torch.Tensor:
        """Overwrite token 0 of every view of ``x (B, S, N, C)``.

        ``cam_token (B, S, C)`` when given; else ``camera_token[0]`` for the view at
        ``ref_pos (B,)`` (none when it lies outside ``[0, S)``) and ``camera_token[1]`` for the
        others.
        """
        b, s = x.shape[:2]
        if cam_token is None:
            is_ref = torch.arange(s, device=x.device)[None, :, None] == ref_pos[:, None, None]
            cam_token = torch.where(is_ref, self.camera_token[:, :1], self.camera_token[:, 1:])
        return torch.cat([cam_token.to(x.dtype)[:, :, None], x[:, :, 1:]], dim=2)

    def _out_feature(self, local_x, x, b, s, restore):
        if self.cfg.cat_token:
            feat = torch.cat([local_x, self.norm(x)], dim=-1)
            cam = torch.cat([local_x[:, 0], x[:, 0]], dim=-1)
        else:
            feat, cam = self.norm(x), x[:, 0]
        feat = feat[:, 1:].view(b, s, -1, feat.shape[-1])
        cam = cam.view(b, s, -1)
        if restore is not None:
            feat, cam = gather_views(feat, restore), gather_views(cam, restore)
        return feat, cam


class Backbone(nn.Module):
    """Holder giving the official key prefix ``backbone.pretrained``."""

    def __init__(self, cfg: DA3Config) -> None:
        super().__init__()
        self.pretrained = VisionTransformer(cfg)
