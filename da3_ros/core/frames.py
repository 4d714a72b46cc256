"""Frames, camera intrinsics and window predictions: the data the core passes around.

Conventions (see docs in ARCHITECTURE):
- Images are RGB ``uint8`` arrays of shape ``(H, W, 3)``.
- Stamps are integer nanoseconds (``stamp_ns``), the source image's stamp.
- Camera frame is OpenCV optical (x right, y down, z forward).
- ``world_from_cam`` is a 4x4 camera-to-world (camera pose in the world frame);
  ``cam_from_world`` (the model's "extrinsics") is its inverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


def principal_point(width: int, height: int) -> tuple[float, float]:
    """The centre of a ``width`` x ``height`` image in pixels: ``((width - 1) / 2, (height - 1) / 2)``.

    Pixel centres are at integer coordinates (the :class:`CameraIntrinsics` convention), so the
    first pixel's centre is 0 and the last one's ``width - 1``.
    """
    return (width - 1) / 2.0, (height - 1) / 2.0


def pinhole_intrinsics(width: int, height: int, hfov_deg: float) -> CameraIntrinsics:
    """Distortion-free intrinsics with square pixels and a ``hfov_deg`` horizontal field of view.

    The principal point is the image centre (:func:`principal_point`).
    """
    f = (width / 2.0) / np.tan(np.radians(hfov_deg) / 2.0)
    cx, cy = principal_point(width, height)
    K = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
    return CameraIntrinsics(K=K, width=int(width), height=int(height), D=np.zeros(5),
                            distortion_model="plumb_bob")


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of one camera at a given image size.

    Attributes:
        K: (3, 3) float64 camera matrix in pixels (fx, fy, cx, cy), pixel centres
            at integer coordinates (OpenCV / ROS CameraInfo convention).
        width, height: image size in pixels the matrix refers to.
        D: distortion coefficients (may be empty).
        distortion_model: ROS name ("plumb_bob", "rational_polynomial", "equidistant" or "").
    """

    K: np.ndarray
    width: int
    height: int
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))
    distortion_model: str = ""

    def scaled(self, width: int, height: int) -> CameraIntrinsics:
        """These intrinsics for the same camera resized to ``width x height`` pixels.

        Uses the pixel-centre-consistent rule ``u' = (u + 0.5) * s - 0.5``.
        """
        sx, sy = width / self.width, height / self.height
        K = np.array(self.K, dtype=np.float64, copy=True)
        K[0, 0] *= sx
        K[1, 1] *= sy
        K[0, 1] *= sx
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        return replace(self, K=K, width=int(width), height=int(height))


@dataclass
class Frame:
    """One camera image as it enters the pipeline.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        stamp_ns: source image stamp, nanoseconds.
        camera: camera name (unique per camera of a rig; used in topic names).
        intrinsics: known intrinsics (from CameraInfo) at this image's size, or None.
        world_from_cam: known (4, 4) camera-to-world pose in the OpenCV optical
            frame, or None.
        frame_id: the ROS frame id of the camera's optical frame (for output headers).
        seq: arrival index assigned by the pipeline (for accounting); -1 if unset.
    """

    image: np.ndarray
    stamp_ns: int
    camera: str = "camera"
    intrinsics: CameraIntrinsics | None = None
    world_from_cam: np.ndarray | None = None
    frame_id: str = ""
    seq: int = -1

    @property
    def height(self) -> int:
        """Image height in pixels."""
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        """Image width in pixels."""
        return int(self.image.shape[1])


@dataclass
class WindowPrediction:
    """What a predictor returns for one window of S views, at each view's source resolution.

    Attributes:
        frames: the S input frames, in window order (a predictor that undistorts returns them
            with the undistorted images, :mod:`da3_ros.core.undistortion`).
        depth: S arrays (H_i, W_i) float32 z-depth along the optical axis; model
            units for relative models, metres for metric ones; NaN where unknown. Pinhole:
            pixel (u, v) is the ray ``K^-1 (u, v, 1)`` of ``intrinsics`` (any distortion in
            their ``D`` was undone before the network).
        confidence: S arrays (H_i, W_i) float32, larger is more confident (DA3: >= 1).
        world_from_cam: (S, 4, 4) camera-to-world poses in the window's own world
            frame (the model's reference view), OpenCV optical axes.
        intrinsics: S CameraIntrinsics at each view's source resolution.
        is_metric: True when depth and translations are in metres.
        timings_s: optional stage timings (preprocess, network, postprocess, ...).
        depth_thumbs: optional S small maps, each view's depth at every k-th pixel
            (:func:`depth_thumb`), computed where the depth lives (the GPU path) so the
            chainer need not touch full-resolution maps; None: taken from ``depth``.
        device_maps: the same depth and confidence (and the images) as tensors on the
            predictor's device, for the GPU path's point cloud and colourisation; None on the
            CPU path.
        owns_maps: True when ``depth`` holds arrays made for this prediction alone (the
            engine's fresh buffers), so a caller done with the prediction may have chaining scale
            them in place (``WindowChainer.chain(pred, in_place=True)``, as the pipeline does)
            instead of copying 10 MB a window of 8 views at 640x480; False (the default) for a
            predictor that may keep them.
    """

    frames: list[Frame]
    depth: list[np.ndarray]
    confidence: list[np.ndarray]
    world_from_cam: np.ndarray
    intrinsics: list[CameraIntrinsics]
    is_metric: bool = False
    timings_s: dict[str, float] = field(default_factory=dict)
    depth_thumbs: list[np.ndarray] | None = None
    device_maps: DeviceMaps | None = None
    owns_maps: bool = False


@dataclass
class DeviceMaps:
    """A window's maps at each view's source resolution, on the predictor's device (torch).

    Attributes:
        depth: S tensors (H_i, W_i) float32 in the window's own units.
        confidence: S tensors (H_i, W_i) float32.
        images: S tensors (H_i, W_i, 3) uint8 RGB, the uploaded input images.
        depth_scale: global units per window unit (set by chaining): the depth the rest of the
            pipeline sees is ``depth * depth_scale``, like ``WindowPrediction.depth``.
    """

    depth: list
    confidence: list
    images: list
    depth_scale: float = 1.0


#: Longest side of a depth thumbnail (see :func:`depth_thumb`).
THUMB_MAX_SIDE = 64


def thumb_step(height: int, width: int, max_side: int = THUMB_MAX_SIDE) -> int:
    """Pixel step k so that every k-th pixel of a (height, width) map is at most ``max_side`` long."""
    return max(1, -(-max(height, width) // max_side))


def depth_thumb(depth: np.ndarray, max_side: int = THUMB_MAX_SIDE) -> np.ndarray:
    """Every k-th pixel of ``depth`` (:func:`thumb_step`), as a compact float32 copy.

    Same pixels for same-size inputs; a copy, so it does not keep the full map alive.
    """
    k = thumb_step(*depth.shape[:2], max_side)
    return np.array(depth[::k, ::k], dtype=np.float32, copy=True, order="C")


def thumb_medians(thumbs: list[np.ndarray], positive: bool = False) -> list[float | None]:
    """Each thumbnail's median over its finite values (and only those > 0 with ``positive``).

    One sort for all of them when they share a shape (a window's views usually do): the chainer
    and the pose check take several of these a window, and ``np.nanmedian`` per view cost more
    Python than the arithmetic. None for a thumbnail without such a value.
    """
    if not thumbs:
        return []
    if len({t.shape for t in thumbs}) > 1:
        return [m for t in thumbs for m in thumb_medians([t], positive)]
    x = np.stack([np.asarray(t, dtype=np.float32).ravel() for t in thumbs])
    bad = ~np.isfinite(x) | (x <= 0) if positive else ~np.isfinite(x)
    x[bad] = np.inf  # sorted last
    x.sort(axis=1)
    n = x.shape[1] - bad.sum(axis=1)
    rows = np.arange(len(x))
    lo, hi = x[rows, np.maximum(n - 1, 0) // 2], x[rows, np.minimum(n // 2, x.shape[1] - 1)]
    return [(float(a) + float(b)) / 2 if k else None for a, b, k in zip(lo, hi, n)]
