"""Lens distortion: images undistorted onto their own camera matrix before the network.

DA3 is a pinhole model: it predicts depth for the image it sees, as if every pixel ``(u, v)``
were the ray ``K^-1 (u, v, 1)``. A CameraInfo with distortion (ROS ``plumb_bob``,
``rational_polynomial``: OpenCV's model with 4, 5, 8, 12 or 14 coefficients; ``equidistant``:
OpenCV's fisheye model with 4) describes a raw image where that is not so. Such an image is
remapped onto the same ``K`` without distortion (``R = I``, new camera matrix = ``K``), the
network runs on that, and its depth stays in that undistorted geometry: at the source
resolution, pixel ``(u, v)`` of the depth is the ray ``K^-1 (u, v, 1)``, which is what the
published CameraInfo's ``P = [K | 0]`` says (ROS consumers of depth, ``image_geometry`` and
``depth_image_proc``, read ``P``). Undistorted pixels whose source lies outside the raw image
have no depth (NaN).

Cost (cv2.remap with fixed-point maps, bilinear, 640 x 480 RGB, one core of the 2-core dev
machine): about 1 ms per image, done on the CPU on both engine paths before the upload; the
maps are computed once per calibration (about 10 ms) and cached.

A distortion model outside these, or a coefficient count OpenCV does not take, cannot be undone:
:func:`supported` is False and the node ignores that CameraInfo (``camera_info_invalid``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

import cv2
import numpy as np
import torch

from da3_ros.core.frames import CameraIntrinsics, Frame, WindowPrediction, thumb_step

#: ROS distortion models with OpenCV's (radial-tangential) model, and their coefficient counts.
PINHOLE_MODELS = ("plumb_bob", "rational_polynomial")
PINHOLE_COEFFS = (4, 5, 8, 12, 14)
#: ROS distortion model of OpenCV's fisheye model (4 coefficients).
FISHEYE_MODEL = "equidistant"


def has_distortion(intr: CameraIntrinsics | None) -> bool:
    """True when ``intr`` carries a non-zero distortion coefficient."""
    return intr is not None and np.any(np.asarray(intr.D, dtype=np.float64) != 0.0)


def supported(intr: CameraIntrinsics) -> bool:
    """Whether ``intr``'s distortion can be undone (always True without distortion)."""
    if not has_distortion(intr):
        return True
    n = np.asarray(intr.D).size
    if intr.distortion_model in PINHOLE_MODELS:
        return n in PINHOLE_COEFFS
    return intr.distortion_model == FISHEYE_MODEL and n >= 4 and not np.any(np.asarray(intr.D)[4:])


def undistortion_maps(intr: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """cv2.remap maps taking a raw image of ``intr`` onto ``intr.K`` without distortion.

    Returns:
        (map1, map2) fixed-point maps for ``cv2.remap`` (``CV_16SC2``), and the ``(H, W)`` bool
        mask of undistorted pixels whose source lies inside the raw image, or None when all do.

    Raises:
        ValueError: the distortion is not :func:`supported`.
    """
    if not supported(intr):
        raise ValueError(f"distortion model {intr.distortion_model!r} with {np.asarray(intr.D).size} "
                         "coefficients cannot be undone")
    K, D = np.asarray(intr.K, np.float64), np.asarray(intr.D, np.float64).ravel()
    size = (int(intr.width), int(intr.height))
    if intr.distortion_model == FISHEYE_MODEL:
        mx, my = cv2.fisheye.initUndistortRectifyMap(K, D[:4], np.eye(3), K, size, cv2.CV_32FC1)
    else:
        mx, my = cv2.initUndistortRectifyMap(K, D, np.eye(3), K, size, cv2.CV_32FC1)
    inside = (mx >= -0.5) & (mx <= size[0] - 0.5) & (my >= -0.5) & (my <= size[1] - 0.5)
    map1, map2 = cv2.convertMaps(mx, my, cv2.CV_16SC2)
    return map1, map2, None if inside.all() else inside


class Undistorter:
    """Undistorts frames, caching the maps of the last ``max_calibrations`` calibrations.

    Frames whose intrinsics carry no distortion pass through unchanged (same object).
    """

    def __init__(self, max_calibrations: int = 8):
        self.max_calibrations = max_calibrations
        self._maps: OrderedDict[tuple, tuple] = OrderedDict()

    def _maps_for(self, intr: CameraIntrinsics) -> tuple:
        key = (np.asarray(intr.K, np.float64).tobytes(), np.asarray(intr.D, np.float64).tobytes(),
               intr.distortion_model, intr.width, intr.height)
        maps = self._maps.get(key)
        if maps is None:
            maps = self._maps[key] = undistortion_maps(intr)
            while len(self._maps) > self.max_calibrations:
                self._maps.popitem(last=False)
        self._maps.move_to_end(key)
        return maps

    def undistort(self, frame: Frame) -> tuple[Frame, np.ndarray | None]:
        """``frame`` with its image undistorted onto its own K (intrinsics kept as given).

        Returns:
            (the frame, the (H, W) bool mask of pixels with a source inside the raw image, or
            None when all have one or nothing was done).

        Raises:
            ValueError: the frame's distortion is not :func:`supported`.
        """
        intr = frame.intrinsics
        if not has_distortion(intr):
            return frame, None
        intr = intr.scaled(frame.width, frame.height)  # the CameraInfo's size is the image's
        map1, map2, inside = self._maps_for(intr)
        image = cv2.remap(frame.image, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return replace(frame, image=image), inside


def blank_outside(pred: WindowPrediction, inside: list[np.ndarray | None]) -> None:
    """Set the depth of undistorted pixels that have no source pixel to NaN, in place.

    Args:
        pred: a window's prediction (host depth, its thumbnails, and device maps when present).
        inside: per view, the mask of :meth:`Undistorter.undistort` (None: every pixel has one).
    """
    for i, mask in enumerate(inside):
        if mask is None:
            continue
        pred.depth[i][~mask] = np.nan
        if pred.depth_thumbs is not None:
            k = thumb_step(*mask.shape)
            pred.depth_thumbs[i][~mask[::k, ::k]] = np.nan
        if pred.device_maps is not None:
            d = pred.device_maps.depth[i]
            d.masked_fill_(~torch.as_tensor(mask, device=d.device), float("nan"))
