"""The node's whole path on the GPU, timed stage by stage, and the memory planner against peaks.

Stages of one window (what ``da3_node`` does per window, minus ROS):
preprocess (``DA3Engine``: resize + normalise on the CPU), upload + network + download
(``DA3Engine``), postprocess (resize depth/confidence back to the source size, poses),
point cloud (``pipeline.window_cloud``: unproject, colour, filter, voxel, cap), and message
payload encoding. The GPU machine has no ROS wheels, so the payloads are encoded the way
``da3_ros/ros/conversions.py`` fills ``msg.data``: one C-order copy of each numpy array's
bytes (``np.ascontiguousarray(a).tobytes()``): a 32FC1 depth image and a confidence image
per view and one PointCloud2 body (x, y, z float32, rgb uint32, confidence float32).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from bench.common import sync
from da3_ros.core.cloud import window_cloud, window_cloud_torch
from da3_ros.core.config import PipelineConfig
from da3_ros.core.engine import DA3Engine
from da3_ros.core.frames import Frame

CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4"), ("confidence", "<f4")])


def _frames(views: int, width: int, height: int, seed: int) -> list[Frame]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    frames = []
    for i in range(views):  # smooth-ish textured images (upscaled noise), never all zeros
        img = np.kron(np.roll(base, i, axis=1), np.ones((8, 8, 1), dtype=np.uint8))[:height, :width]
        frames.append(Frame(image=np.ascontiguousarray(img), stamp_ns=i * 100_000_000, seq=i))
    return frames


def encode_payloads(pred, pts: np.ndarray, cols: np.ndarray, conf: np.ndarray) -> int:
    """Bytes of every output message body (depth + confidence images, one cloud)."""
    total = 0
    for d, c in zip(pred.depth, pred.confidence):
        total += len(np.ascontiguousarray(d, dtype=np.float32).tobytes())
        total += len(np.ascontiguousarray(c, dtype=np.float32).tobytes())
    cloud = np.empty(len(pts), CLOUD_DTYPE)
    cloud["x"], cloud["y"], cloud["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    c = cols.astype(np.uint32)
    cloud["rgb"] = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    cloud["confidence"] = conf
    return total + len(cloud.tobytes())


def node_path(model, device: torch.device, views: int, width: int = 640, height: int = 480,
              iters: int = 5, dtype: torch.dtype = torch.bfloat16, process_res: int = 504,
              gpu_steps: bool = False) -> dict:
    """Median stage times (ms) of one window of ``views`` frames of ``width`` x ``height``.

    ``model`` is what the node would hold (a network or a ``GraphedDA3``); the engine runs
    it with reference view ``first`` like the network benchmark. ``gpu_steps``: the engine's
    device path (``DA3Engine(device_io=True)``: resampling on ``device``) and the cloud from its
    device maps (:func:`da3_ros.core.cloud.window_cloud_torch`), instead of numpy / cv2.
    """
    engine = DA3Engine(model, process_res=process_res, device=device, dtype=dtype, ref_view_strategy="first",
                       device_io=gpu_steps)
    cfg = PipelineConfig(num_view=views)
    rng = np.random.default_rng(0)
    frames = _frames(views, width, height, seed=views)
    stages: dict[str, list[float]] = {}
    for it in range(iters + 2):
        sync()
        t0 = time.perf_counter()
        pred = engine.predict(frames)
        t1 = time.perf_counter()
        if gpu_steps:
            pts, cols, conf = window_cloud_torch(pred, list(range(views)), cfg)
        else:
            pts, cols, conf = window_cloud(pred, list(range(views)), cfg, rng)
        t2 = time.perf_counter()
        nbytes = encode_payloads(pred, pts, cols, conf)
        t3 = time.perf_counter()
        if it < 2:  # warm-up (graph capture, cuDNN autotune)
            continue
        times = dict(pred.timings_s)
        times.update(point_cloud=t2 - t1, encode=t3 - t2, total=t3 - t0)
        for k, v in times.items():
            stages.setdefault(k, []).append(v * 1e3)
    out = {k: float(np.median(v)) for k, v in stages.items()}
    out.update(views=views, source=f"{width}x{height}", points=int(len(pts)), payload_bytes=nbytes,
               gpu_steps=gpu_steps)
    return out


def planner_vs_measured(preset_name: str, model: torch.nn.Module, rows: list, width: int, height: int,
                        dtype: torch.dtype) -> list[dict]:
    """``core.memory.estimate_peak_bytes`` next to each measured peak of ``rows`` (ours)."""
    from da3_ros.core import memory
    from da3_ros.model import get_preset

    cfg = get_preset(preset_name)
    pbytes = memory.param_bytes(model)
    act = 4 if dtype == torch.float32 else 2
    out = []
    for r in rows:
        if r.impl != "ours" or not np.isfinite(r.peak_gib):
            continue
        est = memory.estimate_peak_bytes(cfg, r.views, height, width, pbytes, act_bytes=act)
        out.append({"views": r.views, "measured_gib": r.peak_gib, "estimate_gib": est / 2**30,
                    "estimate_over_measured": est / 2**30 / r.peak_gib, "param_gib": pbytes / 2**30})
    return out
