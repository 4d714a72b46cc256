"""Import ``depth_anything_3.api.DepthAnything3`` where some of its declared dependencies are missing.

Upstream 0.1.1 installed with ``--no-deps`` (as ``make setup`` does) imports, from ``api.py``:
``utils.export`` (moviepy, trimesh, pycolmap, plyfile, imageio: only for ``export_dir``, which
the wrapper never passes), ``utils.pose_align`` (evo: only with input extrinsics, never
passed), ``utils.parallel_utils`` (imageio: only in a save helper) and, on the inference path,
``torchvision.transforms`` (``ToTensor``, ``Normalize``, ``CenterCrop`` in the input processor).

:func:`import_depth_anything_3` imports the real modules where they import, and otherwise puts a
stand-in into ``sys.modules``: the export / pose-align / imageio stand-ins raise when called (so
a path that needs them fails loudly instead of doing something else); the torchvision one
implements the three transforms with torch exactly as torchvision defines them (uint8 HWC ->
float CHW / 255; ``(x - mean) / std`` per channel; centre crop). PyPI's torchvision does not
import beside the CPU torch 2.13.0 of this machine ("operator torchvision::nms does not exist");
the GPU machine has the real one. Which stand-ins were used is returned and reported.
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import torch


def _raising(name: str):
    def call(*_args, **_kwargs):
        raise RuntimeError(f"{name} is not available in this bench environment (stand-in module)")
    return call


class _ToTensor:
    def __call__(self, pic) -> torch.Tensor:
        a = np.asarray(pic)
        a = a[:, :, None] if a.ndim == 2 else a
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float().div(255.0)


class _Normalize:
    def __init__(self, mean, std) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.as_tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return (t - self.mean.to(t.device, t.dtype)) / self.std.to(t.device, t.dtype)


class _CenterCrop:
    def __init__(self, size) -> None:
        self.h, self.w = (size, size) if isinstance(size, int) else size

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        H, W = t.shape[-2:]
        top, left = int(round((H - self.h) / 2.0)), int(round((W - self.w) / 2.0))
        return t[..., top:top + self.h, left:left + self.w]


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__bench_stand_in__ = True
    return mod


def _torchvision_stand_in() -> None:
    transforms = _module("torchvision.transforms", ToTensor=_ToTensor, Normalize=_Normalize,
                         CenterCrop=_CenterCrop)
    sys.modules["torchvision"] = _module("torchvision", transforms=transforms)
    sys.modules["torchvision.transforms"] = transforms


def _try_import(name: str) -> bool:
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - ImportError, or torchvision's RuntimeError on a mismatched torch
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[mod]  # a half-imported package must not shadow the stand-in
        return False
    return True


def import_depth_anything_3():
    """``(DepthAnything3 class, MODEL_REGISTRY, [names of stand-in modules used])``."""
    used = []
    if not _try_import("torchvision.transforms"):
        _torchvision_stand_in()
        used.append("torchvision.transforms")
    if not _try_import("imageio"):
        sys.modules["imageio"] = _module("imageio", imwrite=_raising("imageio.imwrite"))
        used.append("imageio")
    for name, funcs in (("depth_anything_3.utils.export", ("export",)),
                        ("depth_anything_3.utils.pose_align", ("align_poses_umeyama",))):
        if not _try_import(name):
            sys.modules[name] = _module(name, **{f: _raising(f"{name}.{f}") for f in funcs})
            used.append(name)
    from depth_anything_3.api import DepthAnything3
    from depth_anything_3.registry import MODEL_REGISTRY

    return DepthAnything3, MODEL_REGISTRY, used
