"""``da3-synth``: render a procedural scene into a rosbag2 with exact ground truth.

Topics, per camera ``<cam>`` (``camera`` for one camera, ``cam0`` .. ``cam<K-1>`` for a rig):

- ``/<cam>/image_raw`` sensor_msgs/Image ``rgb8``;
- ``/<cam>/camera_info`` sensor_msgs/CameraInfo (plumb_bob, zero distortion);
- ``/<cam>/depth_gt`` sensor_msgs/Image ``32FC1``, z-depth in metres, NaN where no surface (sky);
- ``/<cam>/pose_gt`` geometry_msgs/PoseStamped in frame ``world`` (z up): the pose of the
  camera's optical frame ``<cam>_optical_frame`` (x right, y down, z forward).

No ``/tf``. Stamps follow ``--rate`` with a small deterministic jitter; rig cameras are
stamped within a millisecond of each other (each pose at its own stamp). A bag's
``custom_data`` records the scene (kind, seed, size, trajectory, camera effects). The same
arguments give the same bag.

``--trajectory scan`` keeps the camera positions of the default ``survey`` but pans the camera far
left and right, so a window's views see near and far surfaces (a robot turning;
:data:`da3_ros.sim.scene.TRAJECTORY_STYLES`). With the same scene, seed, size, rate and the default
hfov a one-camera scan bag's images equal ``render_sequence(..., trajectory="scan")``'s frames.

``--camera-effects robot|severe`` degrades each image as a robot camera would (sensor noise on
every frame, some frames motion-blurred or badly exposed; :mod:`da3_ros.sim.camera_effects`);
depth, camera_info and poses stay exact. Each image is degraded by
:func:`da3_ros.sim.camera_effects.degrade_frame` (its own draw per frame, and per camera of a
rig), as ``da3_ros.training.evaluate`` degrades its frames, so with the same scene, seed, size,
rate and the default hfov a one-camera bag's images equal ``render_sequence``'s frames.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from da3_ros.sim.camera_effects import PRESETS as CAMERA_EFFECTS
from da3_ros.sim.camera_effects import degrade_frame
from da3_ros.sim.scene import (
    EPOCH_NS,
    SCENE_KINDS,
    TRAJECTORY_STYLES,
    default_intrinsics,
    make_scene,
    make_trajectory,
    rig_offsets,
    trajectory_at,
)
from da3_ros.tools.bag.io import BagError, BagWriter, typestore
from da3_ros.tools.cli import run_main


def camera_names(n_cameras: int) -> list[str]:
    """``["camera"]`` for one camera, else ``["cam0", ..., "cam<K-1>"]``."""
    return ["camera"] if n_cameras == 1 else [f"cam{k}" for k in range(n_cameras)]


def _header(stamp_ns: int, frame_id: str):
    ts = typestore().types
    stamp = ts["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 1_000_000_000),
                                              nanosec=int(stamp_ns % 1_000_000_000))
    return ts["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def image_msg(array: np.ndarray, encoding: str, header):
    """A ``rosbags`` sensor_msgs/Image from (H, W, 3) uint8 (rgb8) or (H, W) float32 (32FC1)."""
    data = np.ascontiguousarray(array)
    step = data.shape[1] * data.itemsize * (data.shape[2] if data.ndim == 3 else 1)
    return typestore().types["sensor_msgs/msg/Image"](
        header=header, height=data.shape[0], width=data.shape[1], encoding=encoding,
        is_bigendian=0, step=step, data=np.frombuffer(data.astype(data.dtype.newbyteorder("<")).tobytes(),
                                                      dtype=np.uint8))


def camera_info_msg(intr, header):
    """A ``rosbags`` sensor_msgs/CameraInfo for pinhole intrinsics without distortion."""
    ts = typestore().types
    K = np.asarray(intr.K, dtype=np.float64)
    P = np.zeros((3, 4))
    P[:, :3] = K
    roi = ts["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return ts["sensor_msgs/msg/CameraInfo"](
        header=header, height=intr.height, width=intr.width, distortion_model=intr.distortion_model,
        d=np.asarray(intr.D, dtype=np.float64), k=K.reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1),
        binning_x=0, binning_y=0, roi=roi)


def pose_msg(world_from_cam: np.ndarray, header):
    """A ``rosbags`` geometry_msgs/PoseStamped from a (4, 4) camera-to-world matrix."""
    ts = typestore().types
    q = Rotation.from_matrix(world_from_cam[:3, :3]).as_quat()  # x, y, z, w
    t = world_from_cam[:3, 3]
    pose = ts["geometry_msgs/msg/Pose"](
        position=ts["geometry_msgs/msg/Point"](x=float(t[0]), y=float(t[1]), z=float(t[2])),
        orientation=ts["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                                       w=float(q[3])))
    return ts["geometry_msgs/msg/PoseStamped"](header=header, pose=pose)


def rig_stamps(body_stamps_ns: np.ndarray, n_cameras: int, seed: int) -> np.ndarray:
    """(N, K) int64 per-camera stamps: the body stamp plus < 1 ms per-camera offset (K > 1)."""
    if n_cameras == 1:
        return body_stamps_ns[:, None].copy()
    rng = np.random.default_rng([int(seed), 31337])
    offsets = rng.integers(0, 1_000_000, size=(len(body_stamps_ns), n_cameras))
    return body_stamps_ns[:, None] + offsets


def synthesize(out: str | Path, frames: int = 60, cameras: int = 1, seed: int = 0, fmt: str = "mcap",
               scene: str = "room", width: int = 320, height: int = 240, rate_hz: float = 10.0,
               hfov_deg: float = 70.0, compress: bool = False, overwrite: bool = False,
               depth_quantum_m: float = 0.0, progress: bool = False, camera_effects: str = "none",
               trajectory: str = "survey") -> dict:
    """Render ``frames`` time steps of ``cameras`` cameras into a new bag at ``out``.

    ``depth_quantum_m`` > 0 rounds ground-truth depth to that step (e.g. 0.001: millimetres),
    which makes compressed bags about 4x smaller; 0 keeps depth exact. ``camera_effects`` names a
    :data:`da3_ros.sim.camera_effects.PRESETS` entry applied to the images only (see module docstring).
    ``trajectory`` is a :data:`da3_ros.sim.scene.TRAJECTORY_STYLES` entry (``survey``: today's bags).

    Returns:
        A summary: topics with message counts, camera names, scene parameters.
    """
    if frames < 1 or cameras < 1 or width < 8 or height < 8 or rate_hz <= 0:
        raise BagError("need frames >= 1, cameras >= 1, width and height >= 8 and rate > 0")
    if camera_effects not in CAMERA_EFFECTS:
        raise BagError(f"unknown camera effects {camera_effects!r} (one of {', '.join(CAMERA_EFFECTS)})")
    if trajectory not in TRAJECTORY_STYLES:
        raise BagError(f"unknown trajectory {trajectory!r} (one of {', '.join(TRAJECTORY_STYLES)})")
    fx = CAMERA_EFFECTS[camera_effects]
    world = make_scene(scene, seed)
    body_stamps, _ = make_trajectory(scene, frames, rate_hz, seed, trajectory)
    stamps = rig_stamps(body_stamps, cameras, seed)
    rig = rig_offsets(cameras)
    intr = default_intrinsics(width, height, hfov_deg)
    names = camera_names(cameras)
    info = {"scene": scene, "seed": seed, "frames": frames, "cameras": names, "width": width,
            "height": height, "rate_hz": rate_hz, "hfov_deg": hfov_deg, "depth_quantum_m": depth_quantum_m,
            "camera_effects": camera_effects, "trajectory": trajectory}
    with BagWriter(out, fmt=fmt, compress=compress, overwrite=overwrite) as bag:
        bag.set_metadata("da3_ros.synth", json.dumps(info, sort_keys=True))
        steps = range(frames)
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc="da3-synth", unit="frame")
        for i in steps:
            for k, cam in enumerate(names):
                stamp = int(stamps[i, k])
                t_s = np.array([(stamp - EPOCH_NS) * 1e-9])
                pose = trajectory_at(scene, t_s, seed, trajectory)[0] @ rig[k]
                rgb, depth = world.render(pose, intr.K, width, height)
                if fx is not None:  # the image only: depth, camera_info and pose stay exact
                    rgb, _ = degrade_frame(rgb, fx, seed, i, None if cameras == 1 else k)
                if depth_quantum_m > 0:
                    depth = np.round(depth / depth_quantum_m) * depth_quantum_m
                depth = np.where(np.isfinite(depth), depth, np.nan).astype(np.float32)
                header = _header(stamp, f"{cam}_optical_frame")
                bag.write(f"/{cam}/camera_info", stamp, camera_info_msg(intr, header))
                bag.write(f"/{cam}/image_raw", stamp, image_msg(rgb, "rgb8", header))
                bag.write(f"/{cam}/depth_gt", stamp, image_msg(depth, "32FC1", header))
                bag.write(f"/{cam}/pose_gt", stamp, pose_msg(pose, _header(stamp, "world")))
        counts = dict(bag.counts)
    return {**info, "path": str(out), "format": fmt, "topics": counts}


def build_parser() -> argparse.ArgumentParser:
    """Command-line arguments of ``da3-synth``."""
    p = argparse.ArgumentParser(prog="da3-synth", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="bag directory to create")
    p.add_argument("--frames", type=int, default=60, help="time steps")
    p.add_argument("--cameras", type=int, default=1, help="cameras in the rig")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", dest="fmt", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--scene", choices=SCENE_KINDS, default="room")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--rate", type=float, default=10.0, help="frame rate, Hz")
    p.add_argument("--hfov", type=float, default=70.0, help="horizontal field of view, degrees")
    p.add_argument("--compress", action="store_true", help="zstd-compressed mcap chunks")
    p.add_argument("--depth-quantum", type=float, default=0.0,
                   help="round ground-truth depth to this step in metres (0: exact)")
    p.add_argument("--camera-effects", choices=tuple(CAMERA_EFFECTS), default="none",
                   help="degrade the images (not depth or poses) as a robot camera would: sensor noise, "
                        "some frames motion-blurred or badly exposed")
    p.add_argument("--trajectory", choices=TRAJECTORY_STYLES, default="survey",
                   help="camera path: survey looks roughly along it; scan keeps the positions but pans "
                        "far left and right (a robot turning), so views see near and far surfaces")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bag at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``da3-synth``."""
    args = build_parser().parse_args(argv)

    def work() -> int:
        summary = synthesize(args.out, args.frames, args.cameras, args.seed, args.fmt, args.scene,
                             args.width, args.height, args.rate, args.hfov, args.compress,
                             args.overwrite, args.depth_quantum, progress=not args.quiet,
                             camera_effects=args.camera_effects, trajectory=args.trajectory)
        total = sum(summary["topics"].values())
        print(f"wrote {args.out}: {total} messages, cameras {', '.join(summary['cameras'])}, "
              f"scene {args.scene} seed {args.seed}"
              + (f", camera effects {args.camera_effects}" if args.camera_effects != "none" else "")
              + (f", trajectory {args.trajectory}" if args.trajectory != "survey" else ""))
        return 0

    return run_main(work, "da3-synth", args.debug)


if __name__ == "__main__":
    sys.exit(main())
