"""What handing one window to the node costs the inference process's sender (CPU only).

    python bench/send_cost.py [--windows 40] [--points 153600]

A window as da3-small's saturation runs make them: 8 new views of 640x480 (depth, confidence and
viewing colours) and a cloud of ``--points`` points (8 views at ``cloud_pixel_step`` 4: 153,600).
Times :func:`~da3_ros.inference.worker_process.split_result` (the maps framed as messages, the
cloud packed as a PointCloud2) and the copy into a shared-memory slot
(:meth:`~da3_ros.inference.shm_ring.SlotRing.write`) as :class:`ResultSender` does them, and
prints milliseconds a window and the bytes written. glibc's allocator is tuned as in the
inference process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when run as a file


def _result(points: int):
    import numpy as np

    from da3_ros.core.alignment import Alignment
    from da3_ros.core.frames import CameraIntrinsics, Frame, WindowPrediction
    from da3_ros.core.results import WindowResult

    rng = np.random.default_rng(0)
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    frames = [Frame(image=np.zeros((480, 640, 3), np.uint8), stamp_ns=(i + 1) * 10**6, camera="camera",
                    frame_id="camera_optical_frame") for i in range(8)]
    depth = [rng.random((480, 640), np.float32) + 1 for _ in range(8)]
    pred = WindowPrediction(frames=frames, depth=depth, confidence=[d.copy() for d in depth],
                            world_from_cam=np.tile(np.eye(4), (8, 1, 1)),
                            intrinsics=[CameraIntrinsics(K=K, width=640, height=480)] * 8)
    colored = {i: rng.integers(0, 255, (480, 640, 3), np.uint8) for i in range(8)}
    return WindowResult(prediction=pred, world_from_cam=pred.world_from_cam, scale=1.0, residual=0.0,
                        drift=0.0, is_new=np.ones(8, bool), window_index=0, timings_s={},
                        points_world=rng.random((points, 3), np.float32) * 5,
                        colors=rng.integers(0, 255, (points, 3), np.uint8),
                        points_conf=rng.random(points, np.float32) + 1,
                        alignment=Alignment(1.0, np.eye(3), np.zeros(3), "first"),
                        colored=colored)


def main() -> int:
    """Time split_result and the slot write; one line each."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", type=int, default=40)
    p.add_argument("--points", type=int, default=153_600)
    args = p.parse_args()
    from da3_ros.inference.allocator import keep_large_allocations

    keep_large_allocations(respect_env=False)
    from da3_ros.inference.shm_ring import SlotRing, ring_name
    from da3_ros.inference.worker_process import split_result

    result = _result(args.points)
    ring = SlotRing(ring_name("sendcost"), 2)
    try:
        split = write = 0.0
        for w in range(args.windows + 3):
            t0 = time.perf_counter()
            light, arrays = split_result(result, False, "da3_odom")
            t1 = time.perf_counter()
            slot = ring.acquire()
            ring.write(slot, arrays)
            ring.release(slot)
            t2 = time.perf_counter()
            if w >= 3:  # the first ones grow the slot files
                split, write = split + t1 - t0, write + t2 - t1
        size, nbytes = len(arrays), layout_bytes(arrays)
    finally:
        ring.close()
    n = args.windows
    print(f"split_result {1e3 * split / n:.2f} ms/window, slot write {1e3 * write / n:.2f} ms/window "
          f"({size} entries, {nbytes / 1e6:.1f} MB)")
    return 0


def layout_bytes(arrays: dict) -> int:
    """Bytes the slot holds for ``arrays``."""
    return sum(getattr(v, "nbytes", 0) for v in arrays.values())


if __name__ == "__main__":
    sys.exit(main())
