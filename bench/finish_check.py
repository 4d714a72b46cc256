"""On a CUDA machine: the finishing thread gives the workers' results, and what it saves.

    python bench/finish_check.py [--model da3-small] [--frames 160] [--accelerate off]

Builds the real engine (the variant's random weights; ``accelerate`` as the node's parameter),
then runs the same 640x480 frames (num_view 8, stride 4: windows share frames, so chaining
works) through :class:`~da3_ros.core.pipeline.AsyncPipeline` with ``finish_thread`` on and off,
alternating, twice each. It checks that both give the same poses, depth, confidence, clouds and
viewing colours (the finishing thread's CUDA stream must not change a number), then prints each
run's frames per second (the pipeline alone, every frame queued at once: no ROS, no camera) and
its per-window stage times. Exits 1 when the results differ. Run first in a GPU call.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when run as a file


def _frames(n: int, pinned: bool):
    """``n`` 640x480 frames: a slow pan over one random texture (views overlap, none is static).

    With ``pinned`` each image lies in pinned memory, as the inference process hands them over.
    """
    import numpy as np

    from da3_ros.core.frames import Frame
    from da3_ros.core.resampling import pinned_image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (480, 720, 3), dtype=np.uint8)
    frames = []
    for i in range(n):
        image = base[:, 2 * i % 80: 2 * i % 80 + 640]
        out = pinned_image(image.shape) if pinned else np.empty(image.shape, np.uint8)
        np.copyto(out, image)
        frames.append(Frame(image=out, stamp_ns=(i + 1) * 10**7, camera="cam", frame_id="cam_optical"))
    return frames


def _run(predictor, frames, finish_thread: bool):
    from da3_ros.core.config import PipelineConfig
    from da3_ros.core.pipeline import AsyncPipeline

    results = []
    cfg = PipelineConfig(num_view=8, stride=4, queue_size=len(frames) + 1, colorize=True,
                         finish_thread=finish_thread)
    ap = AsyncPipeline(cfg, predictor, on_result=results.append)
    ap.start()
    t0 = time.perf_counter()
    for f in frames:
        ap.submit(f)
    assert ap.close(timeout_s=600)
    wall = time.perf_counter() - t0
    s = ap.stats
    assert s.processed == len(frames) and s.errors == 0, s
    return results, len(frames) / wall, {k: round(v, 2) for k, v in s.stage_ms.items()}


def _same(a, b) -> str | None:
    """None when the two runs' results agree, else what differs first."""
    import numpy as np

    if len(a) != len(b):
        return f"{len(a)} against {len(b)} windows"
    for ra, rb in zip(a, b):
        pairs = [("poses", ra.world_from_cam, rb.world_from_cam), ("colors", ra.colors, rb.colors),
                 ("points", ra.points_world, rb.points_world)]
        depths = zip(ra.prediction.depth, rb.prediction.depth)
        pairs += [(f"depth{i}", da, db) for i, (da, db) in enumerate(depths)]
        pairs += [(f"colored{i}", ra.colored[i], rb.colored.get(i)) for i in ra.colored]
        for name, x, y in pairs:
            if y is None or np.shape(x) != np.shape(y) or not np.allclose(x, y, rtol=1e-5, atol=1e-6):
                return f"window {ra.window_index}: {name}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="da3-small")
    ap.add_argument("--frames", type=int, default=160)
    ap.add_argument("--accelerate", default="off")
    ap.add_argument("--device", default="cuda", help="cpu: checks this script on a CPU machine")
    ap.add_argument("--process-res", type=int, default=0, help="0: the model's own")
    args = ap.parse_args(argv)
    import torch

    from da3_ros.inference.build import build_engine, warm_up
    from da3_ros.inference.settings import InferenceSettings

    on_cuda = args.device.startswith("cuda")
    assert torch.cuda.is_available() or not on_cuda, "needs CUDA"
    log = logging.getLogger("finish_check")
    logging.basicConfig(level=logging.WARNING)
    settings = InferenceSettings(model=args.model, device=args.device, accelerate=args.accelerate,
                                 process_res=args.process_res)
    predictor, info = build_engine(settings, log)
    warm_up(predictor, 8, log)
    frames = _frames(args.frames, pinned=on_cuda)
    _run(predictor, frames[:24], True)  # warm: allocator, kernels
    runs = {True: [], False: []}
    for finish_thread in (True, False, True, False):
        results, fps, stages = _run(predictor, frames, finish_thread)
        runs[finish_thread].append(results)
        print(f"finish_thread {finish_thread!s:5}: {fps:6.1f} frames/s  stage ms/window {stages}", flush=True)
    problem = _same(runs[False][0], runs[True][0]) or _same(runs[False][0], runs[False][1])
    where = torch.cuda.get_device_name() if on_cuda else args.device
    verdict = f"DIFFER: {problem}" if problem else "same results with and without the finishing thread"
    print(f"{info.name} on {where}: {verdict}")
    return 0 if problem is None else 1


if __name__ == "__main__":
    sys.exit(main())
