"""Make ``test/data/real_camera/``: small camera bags from a real photograph, without ground truth.

Source image: ``grace_hopper.jpg`` from matplotlib's sample data (``matplotlib.cbook.get_sample_data``),
a U.S. Navy photograph of Grace Hopper (Wikimedia Commons "File:Grace_Hopper.jpg"), public domain as
a work of the U.S. federal government. It is printed as a 2.05 x 2.40 m poster on a grey wall (the
plane z = 2 m) and filmed by calibrated pinhole cameras; each pixel is the ray of the camera's
lens model (K and the plumb_bob distortion D of its CameraInfo) traced to the poster.

- ``street_jpeg/`` (rosbag2 mcap, chunks with CRCs and no compression, as ``ros2 bag record``
  writes them): one camera, ``/street/image_raw/compressed`` (CompressedImage, JPEG quality 80,
  160x120) and ``/street/camera_info`` (plumb_bob, slight barrel distortion), 12 frames at 10 Hz,
  the camera slowly sliding and panning in front of the poster.
- ``stereo_mono8/`` (rosbag2 sqlite3): a rectified stereo pair 12 cm apart, ``/stereo/left/...`` and
  ``/stereo/right/...`` ``image_raw`` (mono8, 128x96) and ``camera_info`` (right P carries
  Tx = -fx * baseline), 6 frames each at 5 Hz, the pair 1 ms apart, moving towards the poster.

No ground-truth topics: these bags are what a user brings. Deterministic; run from the repository
root: ``python test/data/make_real_camera.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from da3_ros.tools.bag.io import BagWriter, typestore
from da3_ros.tools.synth import _header as header

OUT = Path(__file__).resolve().parent / "real_camera"
POSTER_M_PER_PX = 0.004
POSTER_Z_M = 2.0
WALL_GREY = 96
EPOCH_NS = 1_760_000_000_000_000_000


def photo() -> np.ndarray:
    """The source photograph, (600, 512, 3) uint8 RGB."""
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        bgr = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def film(src: np.ndarray, K: np.ndarray, D: np.ndarray, size: tuple[int, int], cam_pos: np.ndarray,
         yaw_rad: float) -> np.ndarray:
    """What a camera at ``cam_pos`` (world = optical axes of the first view) yawed by ``yaw_rad`` sees.

    Returns (H, W, 3) uint8: per pixel, its ray through K and D (undistorted), rotated by the yaw,
    intersected with the poster plane z = POSTER_Z_M, sampled bilinearly (grey wall off the poster).
    """
    w, h = size
    u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    pts = np.stack([u.ravel(), v.ravel()], axis=1).reshape(-1, 1, 2)
    xy = cv2.undistortPoints(pts, K, D).reshape(-1, 2)
    rays = np.concatenate([xy, np.ones((len(xy), 1), np.float32)], axis=1)
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    rays = rays @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float32).T
    t = (POSTER_Z_M - cam_pos[2]) / rays[:, 2]
    hit = cam_pos[None, :2] + rays[:, :2] * t[:, None]
    ph, pw = src.shape[:2]
    map_x = (hit[:, 0] / POSTER_M_PER_PX + pw / 2).reshape(h, w).astype(np.float32)
    map_y = (hit[:, 1] / POSTER_M_PER_PX + ph / 2).reshape(h, w).astype(np.float32)
    return cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=(WALL_GREY,) * 3)


def camera_info(K: np.ndarray, D: np.ndarray, size: tuple[int, int], stamp_ns: int, frame_id: str,
                tx: float = 0.0):
    """A rosbags CameraInfo: K, plumb_bob D, R = I, P = [K | (tx, 0, 0)]."""
    P = np.zeros((3, 4))
    P[:, :3], P[0, 3] = K, tx
    return typestore().types["sensor_msgs/msg/CameraInfo"](
        header=header(stamp_ns, frame_id), height=size[1], width=size[0], distortion_model="plumb_bob",
        d=np.asarray(D, np.float64), k=K.ravel(), r=np.eye(3).ravel(), p=P.ravel(), binning_x=0, binning_y=0,
        roi=typestore().types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                                  do_rectify=False))


def street(src: np.ndarray) -> None:
    """``street_jpeg/``: one JPEG camera with a calibrated, slightly distorting lens."""
    size, n = (160, 120), 12
    K = np.array([[150.0, 0, 81.3], [0, 150.0, 59.2], [0, 0, 1]])
    D = np.array([-0.08, 0.012, 0.0005, -0.0003, 0.0])
    path = OUT / "street_jpeg"
    with BagWriter(path, fmt="mcap") as w:
        ts = typestore().types
        for k in range(n):
            stamp = EPOCH_NS + k * 100_000_000 + (k * 7919 % 13) * 100_000  # 10 Hz, a little jitter
            pos = np.array([-0.25 + 0.05 * k, 0.02 * np.sin(k / 3), 0.0])
            rgb = film(src, K, D, size, pos, yaw_rad=np.deg2rad(4 - 0.7 * k))
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 80])
            assert ok
            w.write("/street/image_raw/compressed", stamp, ts["sensor_msgs/msg/CompressedImage"](
                header=header(stamp, "street_optical_frame"), format="rgb8; jpeg compressed bgr8",
                data=np.frombuffer(jpg.tobytes(), np.uint8)))
            w.write("/street/camera_info", stamp, camera_info(K, D, size, stamp, "street_optical_frame"))
    with_crcs(next(path.glob("*.mcap")))


def with_crcs(mcap_path: Path, chunk_size: int = 16_384) -> None:
    """Rewrite an mcap file as ``ros2 bag record`` does: chunk and data CRCs, no compression.

    Small chunks, so that a damaged-chunk copy (the tests make one) has chunks before and after.
    """
    from mcap.reader import make_reader
    from mcap.writer import CompressionType, Writer

    tmp = mcap_path.with_suffix(".tmp")
    with open(mcap_path, "rb") as f, open(tmp, "wb") as g:
        reader = make_reader(f)
        summary = reader.get_summary()
        out = Writer(g, chunk_size=chunk_size, compression=CompressionType.NONE, enable_crcs=True,
                     enable_data_crcs=True)
        out.start(profile="ros2", library="da3_ros test/data/make_real_camera.py")
        schema_ids = {sid: out.register_schema(s.name, s.encoding, s.data)
                      for sid, s in summary.schemas.items()}
        chan_ids = {cid: out.register_channel(c.topic, c.message_encoding, schema_ids[c.schema_id],
                                              c.metadata)
                    for cid, c in summary.channels.items()}
        for _, channel, msg in reader.iter_messages(log_time_order=False):
            out.add_message(chan_ids[channel.id], msg.log_time, msg.data, msg.publish_time, msg.sequence)
        out.finish()
    tmp.replace(mcap_path)


def stereo(src: np.ndarray) -> None:
    """``stereo_mono8/``: a rectified mono8 pair, 12 cm baseline, moving towards the poster."""
    size, n, baseline = (128, 96), 6, 0.12
    K = np.array([[118.0, 0, 64.0], [0, 118.0, 48.0], [0, 0, 1]])
    D = np.zeros(5)
    path = OUT / "stereo_mono8"
    with BagWriter(path, fmt="sqlite3") as w:
        for k in range(n):
            stamp = EPOCH_NS + k * 200_000_000
            rig = np.array([0.1, -0.05, 0.04 * k])
            sides = (("left", 0.0, 0, 0.0), ("right", baseline, 1_000_000, -K[0, 0] * baseline))
            for side, dx, dt, tx in sides:
                grey = cv2.cvtColor(film(src, K, D, size, rig + [dx, 0, 0], 0.0), cv2.COLOR_RGB2GRAY)
                frame = f"stereo_{side}_optical_frame"
                w.write(f"/stereo/{side}/image_raw", stamp + dt, _mono8(grey, header(stamp + dt, frame)))
                w.write(f"/stereo/{side}/camera_info", stamp + dt,
                        camera_info(K, D, size, stamp + dt, frame, tx))


def _mono8(grey: np.ndarray, hdr):
    return typestore().types["sensor_msgs/msg/Image"](
        header=hdr, height=grey.shape[0], width=grey.shape[1], encoding="mono8", is_bigendian=0,
        step=grey.shape[1], data=np.ascontiguousarray(grey).ravel())


def main() -> None:
    """Write both bags (replacing older copies)."""
    src = photo()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    street(src)
    stereo(src)
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            print(f"{p.relative_to(OUT.parent)}  {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
