"""sensor_msgs/CameraInfo <-> :class:`~da3_ros.core.frames.CameraIntrinsics` (REP-104 binning and ROI)."""

from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import CameraInfo

from da3_ros.core.frames import CameraIntrinsics
from da3_ros.ros.errors import ConversionError


def camera_info_to_intrinsics(msg, width: int | None = None, height: int | None = None,
                              rectified: bool = False) -> CameraIntrinsics:
    """CameraInfo -> CameraIntrinsics for the image the camera actually publishes.

    Binning and ROI follow REP-104 / image_geometry: the ROI is in full-resolution
    pixels, the published image is the ROI crop binned by ``binning_x/y``, so
    ``cx' = (cx - roi.x_offset) / binning_x`` and ``fx' = fx / binning_x``.

    Args:
        msg: sensor_msgs/CameraInfo (rclpy or rosbags).
        width: optional target image width; the intrinsics are then rescaled with
            :meth:`CameraIntrinsics.scaled` (give width and height, or neither).
        height: optional target image height.
        rectified: use ``P[:3, :3]`` and no distortion (for ``image_rect`` topics)
            instead of ``K`` and ``D``.

    Raises:
        ConversionError: zero size, an all-zero (uncalibrated) or non-finite matrix,
            non-positive focal lengths, an ROI outside the image, or only one of
            width / height.
    """
    full_w, full_h = int(msg.width), int(msg.height)
    if full_w <= 0 or full_h <= 0:
        raise ConversionError(f"CameraInfo has an empty image size {full_w}x{full_h}")
    K = (np.asarray(msg.p, dtype=np.float64).reshape(3, 4)[:, :3] if rectified
         else np.asarray(msg.k, dtype=np.float64).reshape(3, 3)).copy()
    name = "P" if rectified else "K"
    if not np.isfinite(K).all() or not K.any():
        raise ConversionError(
            f"CameraInfo {name} is all zero or not finite (uncalibrated camera?): {K.ravel()}"
        )
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ConversionError(f"CameraInfo {name} has non-positive focal lengths fx={K[0, 0]}, fy={K[1, 1]}")
    roi = msg.roi
    img_w, img_h = full_w, full_h
    if int(roi.width) > 0 and int(roi.height) > 0:
        x0, y0, img_w, img_h = int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)
        if x0 + img_w > full_w or y0 + img_h > full_h:
            raise ConversionError(
                f"CameraInfo ROI {img_w}x{img_h}+{x0}+{y0} lies outside the {full_w}x{full_h} image"
            )
        K[0, 2] -= x0
        K[1, 2] -= y0
    bx, by = max(int(msg.binning_x), 1), max(int(msg.binning_y), 1)
    K[0, :] /= bx
    K[1, :] /= by
    D = np.zeros(0) if rectified else np.asarray(msg.d, dtype=np.float64).copy()
    intr = CameraIntrinsics(K=K, width=img_w // bx, height=img_h // by, D=D,
                            distortion_model="" if rectified else str(msg.distortion_model))
    if (width is None) != (height is None):
        raise ConversionError(f"give both width and height to rescale intrinsics, got {width}x{height}")
    if width is not None and (width, height) != (intr.width, intr.height):
        if width <= 0 or height <= 0:
            raise ConversionError(f"cannot rescale intrinsics to an empty size {width}x{height}")
        intr = intr.scaled(int(width), int(height))
    return intr


def intrinsics_to_camera_info(intr: CameraIntrinsics, header=None) -> CameraInfo:
    """CameraIntrinsics -> CameraInfo (no binning, no ROI, R = I, P = [K | 0]).

    An empty ``distortion_model`` becomes ``"plumb_bob"`` with five zero
    coefficients when D is empty, so image_proc accepts the message.
    """
    K = np.asarray(intr.K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise ConversionError(f"intrinsics K must be a finite (3, 3) matrix, got shape {K.shape}")
    if intr.width <= 0 or intr.height <= 0:
        raise ConversionError(f"intrinsics have an empty image size {intr.width}x{intr.height}")
    D = np.asarray(intr.D, dtype=np.float64).ravel()
    model = intr.distortion_model or "plumb_bob"
    if not intr.distortion_model and D.size == 0:
        D = np.zeros(5)
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = int(intr.width), int(intr.height)
    msg.distortion_model = model
    msg.d = array.array("d", D.tolist())
    msg.k = K.ravel()
    msg.r = np.eye(3).ravel()
    msg.p = np.hstack([K, np.zeros((3, 1))]).ravel()
    return msg
