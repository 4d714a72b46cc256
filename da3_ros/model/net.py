"""DA3Net / NestedDA3Net: the full network, its output type and ``build_model``.

Conventions: images ``(B, S, 3, H, W)`` ImageNet-normalised RGB, H and W multiples of 14.
Extrinsics are world-to-camera (OpenCV optical axes), intrinsics in pixels of the input
resolution. Output depth is z-depth at the input resolution.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, fields

import torch
import torch.nn as nn

from da3_ros.model.attention import get_attention_fn, manual_attention, requested_backend, sdpa_attention
from da3_ros.model.camera import CameraDec, CameraEnc, affine_inverse, decode_pose
from da3_ros.model.dpt import DPT, DualDPT, GSHeadParams, run_head
from da3_ros.model.postprocess import align_to_metric, fill_sky_with_far_depth, focal_metric_scale
from da3_ros.model.presets import DA3Config, NestedConfig, get_preset
from da3_ros.model.refview import check_strategy
from da3_ros.model.vit import Backbone

DEFAULT_HEAD_CHUNK = 8


@dataclass
class DA3Output:
    """Network output; every tensor is in input view order.

    Attributes:
        depth: ``(B, S, H, W)`` z-depth (model units; metres when ``is_metric``).
        depth_conf: ``(B, S, H, W)`` confidence >= 1. DPT-head models (metric/mono) predict
            none: all ones there.
        extrinsics: ``(B, S, 3, 4)`` predicted world-to-camera; None for metric/mono. The
            world frame is the reference view's camera.
        intrinsics: ``(B, S, 3, 3)`` predicted K in input-res pixels; for metric/mono the
            given intrinsics (or None).
        sky: ``(B, S, H, W)`` sky score (>= 0, sky where >= 0.3) for metric/mono/nested.
        ray: ``(B, S, 8H/14, 8W/14, 6)`` ray directions and origins (``return_rays``).
        ray_conf: ``(B, S, 8H/14, 8W/14)`` ray confidence (``return_rays``).
        is_metric: Whether depth (and translations) are in metres.
        scale_factor: ``(B,)`` scale applied to reach metres (nested: least-squares giant ->
            metric; metric: per-view focal/300 is folded into depth, this is None).
    """

    depth: torch.Tensor
    depth_conf: torch.Tensor
    extrinsics: torch.Tensor | None = None
    intrinsics: torch.Tensor | None = None
    sky: torch.Tensor | None = None
    ray: torch.Tensor | None = None
    ray_conf: torch.Tensor | None = None
    is_metric: bool = False
    scale_factor: torch.Tensor | None = None

    def as_dict(self) -> dict:
        """The fields as a dict (None values kept)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __getitem__(self, key: str):
        return getattr(self, key)


class _AttentionMixin:
    """Resolves the attention kernel at build time and again whenever the model moves."""

    def _resolve_attention(self) -> None:
        param = next(self.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        self.attention_desc, self._attn_fn = get_attention_fn(self.attention_backend, device)
        # The camera encoder attends over S tokens in fp32: plain SDPA (or the reference).
        self._cam_attn_fn = manual_attention if self.attention_backend == "manual" else sdpa_attention

    def _apply(self, fn, recurse=True):  # called by .to(), .cuda(), .float() ...
        out = super()._apply(fn, recurse)
        if getattr(self, "attention_backend", None) is not None:
            self._resolve_attention()
        return out

    def set_attention_backend(self, backend: str | None) -> None:
        """Choose the attention backend (see :mod:`da3_ros.model.attention`)."""
        self.attention_backend = requested_backend(backend)
        self._resolve_attention()


class DA3Net(_AttentionMixin, nn.Module):
    """One DepthAnything3Net variant (any-view, metric or mono), checkpoint-compatible."""

    def __init__(self, cfg: DA3Config, attention_backend: str | None = None,
                 apply_metric_scaling: bool = False) -> None:
        super().__init__()
        self.preset = cfg
        self.backbone = Backbone(cfg)
        self.head = DualDPT(cfg) if cfg.head == "dualdpt" else DPT(cfg)
        if cfg.has_camera:
            self.cam_dec = CameraDec(cfg.head_dim_in)
            self.cam_enc = CameraEnc(cfg.embed_dim, cfg.cam_enc_heads, cfg.cam_enc_depth)
        if cfg.gs_head:
            self.gs_head = GSHeadParams(cfg)
        self.apply_metric_scaling = apply_metric_scaling
        self.set_attention_backend(attention_backend)

    @property
    def is_metric(self) -> bool:
        """True when outputs are in metres (metric variant with metric scaling on)."""
        return self.preset.is_metric and self.apply_metric_scaling

    def set_dtype(self, dtype: torch.dtype) -> DA3Net:
        """Cast weights to ``dtype``, keeping camera modules and final head convs in fp32."""
        self.to(dtype)
        keep = [getattr(self, "cam_enc", None), getattr(self, "cam_dec", None)]
        keep += [m for n, m in self.head.scratch.named_children() if n.startswith(("output_conv2",
                                                                               "sky_output_conv2"))]
        for m in keep:
            if m is not None:
                m.float()
        return self

    def forward(self, images: torch.Tensor, extrinsics: torch.Tensor | None = None,
                intrinsics: torch.Tensor | None = None, ref_view_strategy: str = "saddle_balanced",
                return_rays: bool = False, frame_chunk: int | None = None,
                metric_scaling: bool | None = None, shard=None) -> DA3Output:
        """Predict depth (and cameras) for a window of views.

        Args:
            images: ``(B, S, 3, H, W)`` normalised RGB; H, W multiples of 14.
            extrinsics: ``(B, S, 4, 4)`` world-to-camera for pose conditioning (any-view
                models; needs ``intrinsics``). Not used otherwise.
            intrinsics: ``(B, S, 3, 3)`` K in input-res pixels: with ``extrinsics`` it
                conditions the camera encoder; for the metric model it gives the focal for
                metric scaling.
            ref_view_strategy: ``first``, ``middle``, ``saddle_balanced`` or
                ``saddle_sim_range``; active for S >= 3 without pose conditioning.
            return_rays: Also run the ray branch (DualDPT models).
            frame_chunk: Frames per chunk for per-frame work (patch embedding, local
                blocks, head); global attention always spans all views. None: backbone
                unchunked, head in chunks of 8.
            metric_scaling: Metric model only: multiply depth by focal/300 (needs
                intrinsics). None: the model's ``apply_metric_scaling`` (default False, as
                upstream's standalone API).
            shard: None, or this rank's :class:`~da3_ros.model.context_parallel.ViewShard`
                of a window sharded over a process group: ``images`` are then this rank's
                views ``(B, S_local, 3, H, W)``, ``extrinsics`` / ``intrinsics`` the whole
                window's, and every rank returns the whole window's output.

        Returns:
            :class:`DA3Output` in input view order.
        """
        check_strategy(ref_view_strategy)
        cfg, (h, w) = self.preset, images.shape[-2:]
        if h % cfg.patch_size or w % cfg.patch_size or images.dim() != 5:
            raise ValueError("images must be (B, S, 3, H, W) with H, W multiples of 14, "
                             f"got {tuple(images.shape)}")
        cam_token = None
        if extrinsics is not None and cfg.has_camera:
            if intrinsics is None:
                raise ValueError("pose conditioning needs intrinsics together with extrinsics")
            cam_token = self.cam_enc(extrinsics, intrinsics, (h, w), self._cam_attn_fn)
            cam_token = cam_token if shard is None else shard.local(cam_token)
        x = images.to(self.backbone.pretrained.patch_embed.proj.weight.dtype)
        feats = self.backbone.pretrained(x, self._attn_fn, cam_token, ref_view_strategy, frame_chunk, shard)
        out = run_head(self.head, [f[0] for f in feats], (h, w), cfg.patch_size, return_rays,
                       frame_chunk or DEFAULT_HEAD_CHUNK)
        if cfg.has_camera:
            out["pose_enc"] = self.cam_dec(feats[-1][1])
        if shard is not None:  # per-view work is done: every rank gets the whole window
            out = {key: shard.gather_views(val) for key, val in out.items()}
        if cfg.has_camera:
            c2w, k = decode_pose(out["pose_enc"], (h, w))
            return DA3Output(out["depth"], out["depth_conf"], affine_inverse(c2w), k,
                             ray=out.get("ray"), ray_conf=out.get("ray_conf"))
        return self._per_view_output(out, intrinsics, metric_scaling)

    def _per_view_output(self, out: dict, intrinsics: torch.Tensor | None,
                         metric_scaling: bool | None) -> DA3Output:
        depth = fill_sky_with_far_depth(out["depth"], out["sky"])
        scale = self.apply_metric_scaling if metric_scaling is None else metric_scaling
        metric = bool(scale and self.preset.is_metric)
        if metric:
            if intrinsics is None:
                raise ValueError("metric scaling needs intrinsics (B, S, 3, 3) in input-res pixels")
            depth = focal_metric_scale(depth, intrinsics)
        return DA3Output(depth, torch.ones_like(depth), None, intrinsics, sky=out["sky"], is_metric=metric)


class NestedDA3Net(_AttentionMixin, nn.Module):
    """Any-view giant + metric-large: giant's depth and poses scaled to metres."""

    def __init__(self, cfg: NestedConfig, attention_backend: str | None = None) -> None:
        super().__init__()
        self.preset = cfg
        self.da3 = DA3Net(cfg.anyview, attention_backend)
        self.da3_metric = DA3Net(cfg.metric, attention_backend)
        self.set_attention_backend(attention_backend)

    is_metric = True

    def set_attention_backend(self, backend: str | None) -> None:
        """Choose the attention backend of both branches."""
        super().set_attention_backend(backend)
        for branch in (getattr(self, "da3", None), getattr(self, "da3_metric", None)):
            if branch is not None:
                branch.set_attention_backend(backend)

    def set_dtype(self, dtype: torch.dtype) -> NestedDA3Net:
        """Cast both branches (see :meth:`DA3Net.set_dtype`)."""
        self.da3.set_dtype(dtype)
        self.da3_metric.set_dtype(dtype)
        return self

    def forward(self, images: torch.Tensor, extrinsics: torch.Tensor | None = None,
                intrinsics: torch.Tensor | None = None, ref_view_strategy: str = "saddle_balanced",
                return_rays: bool = False, frame_chunk: int | None = None,
                metric_scaling: bool | None = None, shard=None) -> DA3Output:
        """Same arguments as :meth:`DA3Net.forward`; ``metric_scaling`` is ignored (always on).

        The metric branch's depth is scaled by the giant's predicted focal / 300; the giant
        depth is least-squares scaled to it over confident non-sky pixels; extrinsic
        translations get the same scale; sky is set to min(q99 of non-sky depth, 200) with
        confidence 1.
        """
        out = self.da3(images, extrinsics, intrinsics, ref_view_strategy, return_rays, frame_chunk,
                       shard=shard)
        metric = self.da3_metric(images, frame_chunk=frame_chunk, shard=shard)
        return align_to_metric(out, metric)


def build_model(preset: str | DA3Config | NestedConfig = "da3-large", *, attention_backend: str | None = None,
                apply_metric_scaling: bool = False, device: torch.device | str | None = None,
                dtype: torch.dtype | None = None) -> DA3Net | NestedDA3Net:
    """Build a DA3 network with random weights.

    Args:
        preset: Preset name (see :data:`PRESETS`) or config.
        attention_backend: See :mod:`da3_ros.model.attention` (None: env var, else auto).
        apply_metric_scaling: Metric variant: default of ``forward(metric_scaling=...)``.
        device: Build directly on this device (e.g. ``"meta"`` to allocate nothing).
        dtype: Optional weight dtype (camera modules and final head convs stay fp32).

    Returns:
        :class:`DA3Net` or :class:`NestedDA3Net`.
    """
    cfg = get_preset(preset)
    with torch.device(device) if device is not None else nullcontext():
        if isinstance(cfg, NestedConfig):
            net = NestedDA3Net(cfg, attention_backend)
        else:
            net = DA3Net(cfg, attention_backend, apply_metric_scaling=apply_metric_scaling)
    if dtype is not None:
        net.set_dtype(dtype)
    return net.eval()
