"""DPT heads: DualDPT (depth + ray, any-view models) and DPT (depth + sky, metric/mono).

Both take the backbone's four out-layer features ``(B, S, h*w, C)`` and run per frame (in
chunks of frames to bound memory). Module names follow the official checkpoint
(``head.projects``, ``head.scratch.refinenet1`` ...). The final 32->k convolutions and the
exp activations run in fp32 whatever the head's dtype, because depth = exp(logit).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from da3_ros.model.presets import DA3Config


class Permute(nn.Module):
    """``x.permute(*dims)`` as a module (keeps upstream's Sequential indices)."""

    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the module (shapes in the class docstring)."""
        return x.permute(*self.dims)


class ResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` with 3x3 convolutions."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, 1, 1)
        self.conv2 = nn.Conv2d(features, features, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the module (shapes in the class docstring)."""
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FeatureFusionBlock(nn.Module):
    """RefineNet step: merge a lateral input, refine, upsample (bilinear, aligned), 1x1 conv."""

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)  # noqa: N815 - checkpoint name
        self.resConfUnit2 = ResidualConvUnit(features)  # noqa: N815
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: torch.Tensor, lateral: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        """Apply the module (shapes in the class docstring)."""
        if lateral is not None:
            x = x + self.resConfUnit1(lateral)
        x = self.resConfUnit2(x)
        size = size if size is not None else (2 * x.shape[-2], 2 * x.shape[-1])
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


_UV_CACHE: dict[tuple, torch.Tensor] = {}


def uv_pos_embed(channels: int, h: int, w: int, aspect: float, device: torch.device,
                 dtype: torch.dtype) -> torch.Tensor:
    """DA3's UV sin-cos embedding ``(1, channels, h, w)``, already multiplied by 0.1.

    The grid spans the image plane normalised by its diagonal (aspect = W/H); x and y get
    ``channels/2`` each as ``[sin, cos]`` with ``omega_0 = 100``. Computed in fp32, cached
    per (channels, h, w, aspect, device, dtype) when eager; inside ``torch.compile`` it is
    computed in the graph instead, so no guard depends on a global cache that another thread
    (an eager forward beside a background compile) may fill meanwhile.
    """
    if torch.compiler.is_compiling():
        return _uv_embed(channels, h, w, aspect, device, dtype)
    key = (channels, h, w, aspect, torch.device(device), dtype)
    if key not in _UV_CACHE:
        _UV_CACHE[key] = _uv_embed(channels, h, w, aspect, device, dtype)
    return _UV_CACHE[key]


def _uv_embed(channels: int, h: int, w: int, aspect: float, device, dtype) -> torch.Tensor:
    diag = (aspect ** 2 + 1.0) ** 0.5
    sx, sy = aspect / diag, 1.0 / diag
    xs = torch.linspace(-sx * (w - 1) / w, sx * (w - 1) / w, w, device=device)
    ys = torch.linspace(-sy * (h - 1) / h, sy * (h - 1) / h, h, device=device)
    uu, vv = torch.meshgrid(xs, ys, indexing="xy")  # (h, w)
    emb = torch.cat([_sincos(channels // 2, uu.reshape(-1)), _sincos(channels // 2, vv.reshape(-1))], -1)
    return (emb.view(h, w, channels).permute(2, 0, 1)[None] * 0.1).to(dtype)


def _sincos(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 100.0 ** omega
    out = pos[:, None] * omega[None, :]
    return torch.cat([out.sin(), out.cos()], dim=1)


def _add_pe(x: torch.Tensor, aspect: float) -> torch.Tensor:
    return x + uv_pos_embed(x.shape[1], x.shape[2], x.shape[3], aspect, x.device, x.dtype)


def _out_head(c_in: int, c_out: int, shared_ln: nn.LayerNorm | None = None) -> nn.Sequential:
    mid = [Permute((0, 2, 3, 1)), shared_ln, Permute((0, 3, 1, 2))] if shared_ln is not None else []
    return nn.Sequential(nn.Conv2d(c_in, 32, 3, 1, 1), *mid, nn.ReLU(), nn.Conv2d(32, c_out, 1))


def _run_fp32_head(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run a final head in its own (fp32) weight dtype."""
    return seq(x.to(seq[0].weight.dtype)).float()


class _Pyramid(nn.Module):
    """Projections, resizers and scratch convs shared by every DPT-style head."""

    def __init__(self, dim_in: int, features: int, out_channels: tuple[int, ...], layer_norm: bool):
        super().__init__()
        if layer_norm:
            self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList([nn.Conv2d(dim_in, oc, 1) for oc in out_channels])
        oc = out_channels
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(oc[0], oc[0], 4, stride=4), nn.ConvTranspose2d(oc[1], oc[1], 2, stride=2),
            nn.Identity(), nn.Conv2d(oc[3], oc[3], 3, stride=2, padding=1)])
        self.scratch = nn.Module()
        for i, c in enumerate(out_channels, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(c, features, 3, 1, 1, bias=False))
        self._add_refinenets("")
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, 1, 1)

    def _add_refinenets(self, suffix: str) -> None:
        f = self.scratch.layer1_rn.out_channels
        for i in range(1, 5):
            setattr(self.scratch, f"refinenet{i}{suffix}", FeatureFusionBlock(f, has_residual=i != 4))

    def levels(self, tokens: list[torch.Tensor], gh: int, gw: int, aspect: float,
               pos_embed: bool) -> list[torch.Tensor]:
        """Tokens ``(F, h*w, C)`` x4 -> the four ``layer*_rn`` maps (4h, 2h, h, h/2)."""
        out = []
        for i, t in enumerate(tokens):
            if hasattr(self, "norm"):
                t = self.norm(t)
            proj = self.projects[i]
            x = F.linear(t, proj.weight.flatten(1), proj.bias)  # 1x1 conv on tokens
            x = x.transpose(1, 2).reshape(t.shape[0], -1, gh, gw)
            if pos_embed:
                x = _add_pe(x, aspect)
            x = self.resize_layers[i](x)
            out.append(getattr(self.scratch, f"layer{i + 1}_rn")(x))
        return out

    def fuse(self, rn: list[torch.Tensor], suffix: str = "") -> torch.Tensor:
        """Top-down RefineNet chain over the four maps; output at 8h x 8w."""
        s = self.scratch
        out = getattr(s, f"refinenet4{suffix}")(rn[3], size=rn[2].shape[2:])
        out = getattr(s, f"refinenet3{suffix}")(out, rn[2], size=rn[1].shape[2:])
        out = getattr(s, f"refinenet2{suffix}")(out, rn[1], size=rn[0].shape[2:])
        return getattr(s, f"refinenet1{suffix}")(out, rn[0])


class DualDPT(_Pyramid):
    """Depth + ray head. Depth = exp(ch0), conf = exp(ch1) + 1; ray linear 6 ch at 8h x 8w."""

    def __init__(self, cfg: DA3Config) -> None:
        super().__init__(cfg.head_dim_in, cfg.head_features, cfg.head_out_channels, layer_norm=True)
        f = cfg.head_features
        self.scratch.output_conv2 = _out_head(f // 2, 2)
        self._add_refinenets("_aux")
        self.scratch.output_conv1_aux = nn.ModuleList([
            nn.Sequential(*[nn.Conv2d(f if j % 2 == 0 else f // 2, f // 2 if j % 2 == 0 else f, 3, 1, 1)
                            for j in range(5)]) for _ in range(4)])
        shared_ln = nn.LayerNorm(32)  # one module in all four levels, as upstream
        self.scratch.output_conv2_aux = nn.ModuleList([_out_head(f // 2, 7, shared_ln) for _ in range(4)])

    def forward_frames(self, tokens: list[torch.Tensor], gh: int, gw: int, patch: int,
                       rays: bool) -> dict[str, torch.Tensor]:
        """Tokens ``(F, h*w, C)`` x4 -> depth/depth_conf ``(F, H, W)`` [+ ray ``(F, 8h, 8w, 6)``]."""
        aspect = gw / gh
        rn = self.levels(tokens, gh, gw, aspect, pos_embed=True)
        main = self.scratch.output_conv1(self.fuse(rn))
        main = F.interpolate(main, size=(gh * patch, gw * patch), mode="bilinear", align_corners=True)
        logits = _run_fp32_head(self.scratch.output_conv2, _add_pe(main, aspect))
        out = {"depth": logits[:, 0].exp(), "depth_conf": logits[:, 1].exp() + 1}
        if rays:
            aux = self.scratch.output_conv1_aux[-1](self.fuse(rn, "_aux"))
            aux = _run_fp32_head(self.scratch.output_conv2_aux[-1], _add_pe(aux, aspect))
            out["ray"] = aux[:, :6].permute(0, 2, 3, 1)
            out["ray_conf"] = aux[:, 6].exp() + 1
        return out


class DPT(_Pyramid):
    """Depth + sky head (metric/mono). Depth = exp(logit), sky = relu(logit); no pos-emb."""

    def __init__(self, cfg: DA3Config) -> None:
        super().__init__(cfg.head_dim_in, cfg.head_features, cfg.head_out_channels, layer_norm=False)
        f = cfg.head_features
        self.scratch.output_conv2 = _out_head(f // 2, 1)
        self.scratch.sky_output_conv2 = _out_head(f // 2, 1)

    def forward_frames(self, tokens: list[torch.Tensor], gh: int, gw: int, patch: int,
                       rays: bool) -> dict[str, torch.Tensor]:
        """Tokens ``(F, h*w, C)`` x4 -> depth and sky ``(F, H, W)``."""
        rn = self.levels(tokens, gh, gw, gw / gh, pos_embed=False)
        feat = self.scratch.output_conv1(self.fuse(rn))
        feat = F.interpolate(feat, size=(gh * patch, gw * patch), mode="bilinear", align_corners=True)
        depth = _run_fp32_head(self.scratch.output_conv2, feat)[:, 0].exp()
        sky = _run_fp32_head(self.scratch.sky_output_conv2, feat)[:, 0].relu()
        return {"depth": depth, "sky": sky}


class GSHeadParams(_Pyramid):
    """Parameters of upstream's Gaussian-splatting head (giant) so its checkpoint loads.

    The 3DGS branch is not implemented here; these weights are held but never used.
    """

    def __init__(self, cfg: DA3Config) -> None:
        super().__init__(cfg.head_dim_in, cfg.head_features, cfg.head_out_channels, layer_norm=False)
        f = cfg.head_features
        self.scratch.output_conv2 = nn.Sequential(nn.Conv2d(f // 2, 32, 3, 1, 1), nn.ReLU(),
                                                  nn.Conv2d(32, 38, 1))
        m = f // 2
        self.images_merger = nn.Sequential(nn.Conv2d(3, m // 4, 3, 1, 1), nn.GELU(),
                                           nn.Conv2d(m // 4, m // 2, 3, 1, 1), nn.GELU(),
                                           nn.Conv2d(m // 2, m, 3, 1, 1), nn.GELU())


def run_head(head: DualDPT | DPT, feats: list[torch.Tensor], image_hw: tuple[int, int], patch: int,
             rays: bool, chunk: int) -> dict[str, torch.Tensor]:
    """Run a head over ``feats`` (four ``(B, S, h*w, C)``) in chunks of ``chunk`` frames.

    Returns:
        Dict of ``(B, S, ...)`` tensors: depth, depth_conf / sky, ray, ray_conf.
    """
    b, s = feats[0].shape[:2]
    gh, gw = image_hw[0] // patch, image_hw[1] // patch
    tokens = [f.flatten(0, 1) for f in feats]
    n = b * s
    parts = [head.forward_frames([t[i:i + chunk] for t in tokens], gh, gw, patch, rays)
             for i in range(0, n, chunk)]
    out = {k: torch.cat([p[k] for p in parts], dim=0) if len(parts) > 1 else parts[0][k] for k in parts[0]}
    return {k: v.view(b, s, *v.shape[1:]) for k, v in out.items()}
