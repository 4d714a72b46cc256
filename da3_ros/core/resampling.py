"""Resampling between camera images and the network: upstream DA3's input rule, and back.

Input (upstream ``InputProcessor`` with ``upper_bound_resize``): resize so the long side is
``process_res`` (cv2 INTER_AREA when shrinking, INTER_CUBIC when enlarging), then a small resize
of each side to the nearest multiple of 14, then ImageNet normalisation. Output maps go back to
each view's source size (bilinear when enlarging, area when shrinking).

Two implementations of the same rule: numpy / cv2 (:func:`preprocess_image`, :func:`resize_map`;
the CPU path, equal to upstream's preprocessing) and torch on any device
(:func:`preprocess_frames`; the GPU path: bilinear with antialiasing when shrinking, bicubic when
enlarging, so values differ from cv2 by resampling differences, a few 1e-2 in normalised units
at edges, never by convention: same sizes, pixel-centre alignment, mean and std).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

PATCH = 14
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _nearest_multiple(x: int, p: int = PATCH) -> int:
    """Nearest multiple of p (ties go up, as upstream), at least p."""
    down = (x // p) * p
    up = down + p
    return max(p, up if abs(up - x) <= abs(x - down) else down)


def process_size(width: int, height: int, process_res: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Upstream's two resize targets for a (width, height) image.

    Returns:
        ((w1, h1) after the long-side resize, (w, h) after rounding each to a multiple of 14).
    """
    if max(width, height) == process_res:
        w1, h1 = width, height
    else:
        s = process_res / float(max(width, height))
        w1, h1 = max(1, int(round(width * s))), max(1, int(round(height * s)))
    return (w1, h1), (_nearest_multiple(w1), _nearest_multiple(h1))


def resize_steps(width: int, height: int, process_res: int,
                 size: tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """The (w, h) resize targets, in order, taking a (width, height) image to the network input.

    Its own process size: the long-side resize, then the rounding to multiples of 14. Another
    ``size`` (the window's common size): one resize straight to it.
    """
    first, final = process_size(width, height, process_res)
    return [first, final] if size is None or tuple(size) == final else [tuple(size)]


def resize_image(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """An image (H, W[, C]) resized to (h, w): cv2 INTER_AREA when shrinking, INTER_CUBIC when enlarging."""
    if img.shape[1] == w and img.shape[0] == h:
        return img
    enlarge = w > img.shape[1] or h > img.shape[0]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC if enlarge else cv2.INTER_AREA)


def preprocess_image(image: np.ndarray, process_res: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """One RGB uint8 image (H, W, 3) to a normalised (3, h, w) float32 array.

    Args:
        image: (H, W, 3) uint8 RGB.
        process_res: long-side target in pixels.
        size: force this (w, h) (the window's common size); None = the image's own process size.
    """
    out = image
    for w, h in resize_steps(image.shape[1], image.shape[0], process_res, size):
        out = resize_image(out, w, h)
    x = (out.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def resize_map(x: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a float map (h, w) to (height, width): bilinear when enlarging, area when shrinking."""
    if x.shape == (height, width):
        return x.astype(np.float32, copy=False)
    enlarge = width > x.shape[1] or height > x.shape[0]
    return cv2.resize(x.astype(np.float32), (width, height),
                      interpolation=cv2.INTER_LINEAR if enlarge else cv2.INTER_AREA)



def _resize_torch(x: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """``x (N, C, H, W)`` float -> ``(N, C, h, w)``: antialiased bilinear down, bicubic up."""
    if x.shape[-1] == w and x.shape[-2] == h:
        return x
    enlarge = w > x.shape[-1] or h > x.shape[-2]
    if enlarge:
        return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).clamp_(0, 255)
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)


def resize_image_torch(img: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """A uint8 image tensor ``(H, W, 3)`` resized to ``(h, w, 3)`` on its device (:func:`_resize_torch`)."""
    if img.shape[1] == w and img.shape[0] == h:
        return img
    x = _resize_torch(img.permute(2, 0, 1)[None].float(), w, h)[0]
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()


def preprocess_frames(images: Sequence[np.ndarray], process_res: int, size: tuple[int, int],
                      device: torch.device | str,
                      pin: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """RGB uint8 images ``(H_i, W_i, 3)`` -> normalised ``(1, S, 3, h, w)`` float32 on ``device``.

    Args:
        images: the window's images (any sizes).
        process_res: long-side target (as ``DA3Engine``).
        size: the window's common ``(w, h)``; images whose own process size differs are resized
            straight to it (as ``DA3Engine``).
        device: where to compute.
        pin: stage the upload in pinned memory (CUDA only) so it is asynchronous.

    Returns:
        ``(network input (1, S, 3, h, w), the uploaded uint8 images (H_i, W_i, 3) on device)``;
        each image crosses to the device once and the cloud colours come from these copies.
    """
    device = torch.device(device)
    mean = torch.as_tensor(IMAGENET_MEAN, device=device).view(3, 1, 1) * 255.0
    std = torch.as_tensor(IMAGENET_STD, device=device).view(3, 1, 1) * 255.0
    out = torch.empty(len(images), 3, size[1], size[0], device=device)
    uploaded: list[torch.Tensor | None] = [None] * len(images)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):  # same-size views cross and resize together
        groups.setdefault(tuple(img.shape), []).append(i)
    pin = pin and device.type == "cuda"
    for shape, idx in groups.items():
        sources = [pinned_tensor(images[i]) for i in idx] if pin else [None]
        if all(src is not None for src in sources):  # already in pinned memory: straight to the device
            dev = torch.empty((len(idx), *shape), dtype=torch.uint8, device=device)
            for j, src in enumerate(sources):
                dev[j].copy_(src, non_blocking=True)
        else:
            host = torch.empty((len(idx), *shape), dtype=torch.uint8, pin_memory=pin)
            staged = host.numpy()
            for j, i in enumerate(idx):
                np.copyto(staged[j], images[i])  # one copy into the staging buffer (GIL released)
            dev = host.to(device, non_blocking=pin)
        uploaded_group = dev.unbind(0)
        for j, i in enumerate(idx):
            uploaded[i] = uploaded_group[j]
        x = dev.permute(0, 3, 1, 2).float()
        for w, h in resize_steps(shape[1], shape[0], process_res, size):
            x = _resize_torch(x, w, h)
        out[idx] = (x - mean) / std
    return out[None], uploaded


def pinned_image(shape: tuple[int, ...]) -> np.ndarray:
    """An empty uint8 array in pinned (page-locked) host memory: its upload needs no staging copy.

    :func:`preprocess_frames` uploads such an image straight from where it lies. The memory comes
    from torch's caching host allocator and returns to it when the array is gone.
    """
    return torch.empty(shape, dtype=torch.uint8, pin_memory=True).numpy()


def pinned_tensor(image: np.ndarray) -> torch.Tensor | None:
    """The pinned tensor ``image`` is the whole of (:func:`pinned_image`), else None."""
    base = image.base
    if (isinstance(base, torch.Tensor) and base.dtype == torch.uint8 and tuple(base.shape) == image.shape
            and base.data_ptr() == image.ctypes.data and image.flags.c_contiguous and base.is_pinned()):
        return base
    return None


def resize_maps_torch(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Float maps ``(N, h, w)`` -> ``(N, height, width)``, as :func:`resize_map` does on the CPU.

    Bilinear (half-pixel centres, cv2's INTER_LINEAR) when enlarging, area averaging when
    shrinking (cv2's INTER_AREA for integer factors; close otherwise).
    """
    if x.shape[-2:] == (height, width):
        return x.float()
    enlarge = width > x.shape[-1] or height > x.shape[-2]
    mode = {"mode": "bilinear", "align_corners": False} if enlarge else {"mode": "area"}
    return F.interpolate(x.float()[None], size=(height, width), **mode)[0]
