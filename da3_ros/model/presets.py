"""Frozen configurations for every Depth Anything 3 variant.

Each official preset reproduces the upstream ``depth_anything_3/configs/<name>.yaml`` so
that ``build_model(name).state_dict()`` has exactly the keys and shapes of the official
checkpoint (without its ``model.`` prefix). ``da3-tiny`` is our own small member of the
any-view family (same blocks, heads and camera modules, ~6M parameters) for tests and the
bundled demo model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DA3Config:
    """One DepthAnything3Net variant.

    Attributes:
        name: Preset name, as written to ``config.json`` (``model_name``).
        kind: ``"anyview"`` (multi-view depth + pose), ``"metric"`` (canonical metric depth,
            per view) or ``"mono"`` (relative depth, per view).
        embed_dim: ViT width C.
        depth: Number of ViT blocks.
        num_heads: Attention heads in the ViT.
        ffn: ``"mlp"`` (GELU MLP, 4C) or ``"swiglu"`` (DINOv2 fused SwiGLU, giant).
        alt_start: First block of the alternating local/global part (-1: all local, no
            camera token). Block i is global iff ``alt_start != -1 and i >= alt_start and
            i % 2 == 1``.
        qknorm_start: First block with per-head LayerNorm on q and k (-1: none).
        rope_start: First block with 2D RoPE (-1: none).
        out_layers: The four blocks whose outputs feed the heads.
        cat_token: Concatenate the last local block's tokens to each out layer (2C).
        head: ``"dualdpt"`` (depth + ray) or ``"dpt"`` (depth + sky).
        head_features: DPT fusion width.
        head_out_channels: DPT per-level projection widths.
        gs_head: Carry the (unused here) Gaussian-splatting head's parameters, so the
            giant checkpoint loads strictly.
        patch_size: ViT patch size in pixels.
        pos_embed_grid: Side of the learned position-embedding grid (518 / 14 = 37).
        rope_freq: RoPE base frequency.
        cam_enc_heads: Heads of the camera encoder's trunk blocks.
        cam_enc_depth: Trunk blocks in the camera encoder.
    """

    name: str
    kind: str
    embed_dim: int
    depth: int
    num_heads: int
    ffn: str
    alt_start: int
    qknorm_start: int
    rope_start: int
    out_layers: tuple[int, int, int, int]
    cat_token: bool
    head: str
    head_features: int
    head_out_channels: tuple[int, int, int, int]
    gs_head: bool = False
    patch_size: int = 14
    pos_embed_grid: int = 37
    rope_freq: float = 100.0
    cam_enc_heads: int = 16
    cam_enc_depth: int = 4

    @property
    def has_camera(self) -> bool:
        """True when the variant has camera token, camera encoder and decoder."""
        return self.alt_start != -1

    @property
    def head_dim_in(self) -> int:
        """Channels of each feature the head receives (2C with cat_token)."""
        return self.embed_dim * (2 if self.cat_token else 1)

    @property
    def is_metric(self) -> bool:
        """True for the metric variant (metric once focal-scaled, see DA3Net)."""
        return self.kind == "metric"

    def is_global_block(self, i: int) -> bool:
        """Whether block ``i`` attends over all views of the window."""
        return self.alt_start != -1 and i >= self.alt_start and i % 2 == 1


@dataclass(frozen=True)
class NestedConfig:
    """NestedDepthAnything3Net: an any-view model plus a metric model for scale."""

    name: str
    anyview: DA3Config
    metric: DA3Config
    kind: str = "nested"

    @property
    def is_metric(self) -> bool:
        """Nested output is always scaled to metres."""
        return True


_LARGE_HEAD = {"head_features": 256, "head_out_channels": (256, 512, 1024, 1024)}


def _anyview(name: str, **kw) -> DA3Config:
    return DA3Config(name=name, kind="anyview", ffn=kw.pop("ffn", "mlp"), cat_token=True,
                     head="dualdpt", **kw)


def _per_view_large(name: str, kind: str) -> DA3Config:
    return DA3Config(name=name, kind=kind, embed_dim=1024, depth=24, num_heads=16, ffn="mlp",
                     alt_start=-1, qknorm_start=-1, rope_start=-1, out_layers=(4, 11, 17, 23),
                     cat_token=False, head="dpt", **_LARGE_HEAD)


DA3_TINY = _anyview("da3-tiny", embed_dim=192, depth=8, num_heads=3, alt_start=4, qknorm_start=4,
                    rope_start=4, out_layers=(4, 5, 6, 7), head_features=32,
                    head_out_channels=(24, 48, 96, 192))
DA3_SMALL = _anyview("da3-small", embed_dim=384, depth=12, num_heads=6, alt_start=4, qknorm_start=4,
                     rope_start=4, out_layers=(5, 7, 9, 11), head_features=64,
                     head_out_channels=(48, 96, 192, 384))
DA3_BASE = _anyview("da3-base", embed_dim=768, depth=12, num_heads=12, alt_start=4, qknorm_start=4,
                    rope_start=4, out_layers=(5, 7, 9, 11), head_features=128,
                    head_out_channels=(96, 192, 384, 768))
DA3_LARGE = _anyview("da3-large", embed_dim=1024, depth=24, num_heads=16, alt_start=8, qknorm_start=8,
                     rope_start=8, out_layers=(11, 15, 19, 23), **_LARGE_HEAD)
DA3_GIANT = _anyview("da3-giant", embed_dim=1536, depth=40, num_heads=24, ffn="swiglu", alt_start=13,
                     qknorm_start=13, rope_start=13, out_layers=(19, 27, 33, 39), gs_head=True,
                     **_LARGE_HEAD)
DA3_METRIC_LARGE = _per_view_large("da3metric-large", "metric")
DA3_MONO_LARGE = _per_view_large("da3mono-large", "mono")
DA3_NESTED = NestedConfig("da3nested-giant-large", anyview=DA3_GIANT, metric=DA3_METRIC_LARGE)

PRESETS: dict[str, DA3Config | NestedConfig] = {
    c.name: c
    for c in (DA3_TINY, DA3_SMALL, DA3_BASE, DA3_LARGE, DA3_GIANT, DA3_METRIC_LARGE, DA3_MONO_LARGE,
              DA3_NESTED)
}
OFFICIAL_PRESETS: tuple[str, ...] = tuple(n for n in PRESETS if n != "da3-tiny")


def get_preset(preset: str | DA3Config | NestedConfig) -> DA3Config | NestedConfig:
    """Return the config for a preset name (or pass a config through).

    Raises:
        KeyError: Unknown name; the message lists the known presets.
    """
    if isinstance(preset, (DA3Config, NestedConfig)):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise KeyError(f"unknown DA3 preset {preset!r}; known: {sorted(PRESETS)}") from None
