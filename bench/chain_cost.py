"""What chaining one window costs the worker: WindowChainer.chain on 8 views of 640x480 (CPU only).

    python bench/chain_cost.py [--windows 50]

Windows of num_view 8 / stride 8 (no shared frames: the extrapolated path, as in the live
benchmark's saturation runs), depth maps the chain scales, owned by the prediction as the
engine's are and chained as the pipeline chains them (in place), once without and once with the
pose check (moving images). glibc's allocator is tuned as in the inference process. Prints
milliseconds a window.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when run as a file


def _predictions(n: int):
    import numpy as np

    from da3_ros.core.frames import CameraIntrinsics, Frame, WindowPrediction, depth_thumb

    rng = np.random.default_rng(0)
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    base = rng.integers(0, 255, (480, 640, 3), np.uint8)
    out = []
    for w in range(n):
        frames = [Frame(image=np.roll(base, (w * 8 + i) * 3, axis=1), stamp_ns=(w * 8 + i + 1) * 1_000_000,
                        camera="camera", frame_id="camera_optical_frame") for i in range(8)]
        depth = [rng.random((480, 640), np.float32) + 1 for _ in range(8)]
        poses = np.tile(np.eye(4), (8, 1, 1))
        poses[:, 0, 3] = np.arange(8) * 0.05
        pred = WindowPrediction(frames=frames, depth=depth, confidence=depth, world_from_cam=poses,
                                intrinsics=[CameraIntrinsics(K=K, width=640, height=480)] * 8,
                                depth_thumbs=[depth_thumb(d) for d in depth])
        if hasattr(pred, "owns_maps"):
            pred.owns_maps = True  # as the engine marks its own buffers (absent before that change)
        out.append(pred)
    return out


def main() -> int:
    """Time the chain both ways and print one line each."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", type=int, default=50)
    args = p.parse_args()
    from da3_ros.inference.allocator import keep_large_allocations

    keep_large_allocations(respect_env=False)
    import inspect

    from da3_ros.core.alignment import WindowChainer
    from da3_ros.core.config import PipelineConfig
    from da3_ros.core.pose_check import PoseCheck

    # as the pipeline calls it: done with each prediction (the parameter is absent before that change)
    kwargs = {"in_place": True} if "in_place" in inspect.signature(WindowChainer.chain).parameters else {}
    for label, check in (("without pose check", None), ("with pose check", PoseCheck(PipelineConfig()))):
        preds = _predictions(args.windows + 5)
        chainer = WindowChainer("sim3", check=check)
        for pred in preds[:5]:
            chainer.chain(pred, **kwargs)
        t0 = time.perf_counter()
        for pred in preds[5:]:
            chainer.chain(pred, **kwargs)
        print(f"chain {label}: {(time.perf_counter() - t0) / args.windows * 1e3:.2f} ms a window")
    return 0


if __name__ == "__main__":
    sys.exit(main())
