"""Inference engine: preprocess frames as upstream DA3 does, run the network, map outputs back.

Preprocessing (upstream ``InputProcessor`` with ``upper_bound_resize``): resize so the long side
is ``process_res`` (cv2 INTER_AREA when shrinking, INTER_CUBIC when enlarging), then a small
resize of each side to the nearest multiple of 14, then ImageNet normalisation.

Views of different sizes: upstream center-crops every view to the smallest processed size, which
throws away the border of the larger views (they would get no depth there). We instead resize
every view straight to the first view's process size, so every source pixel gets depth; a view
with another aspect ratio is stretched, which its intrinsics carry exactly (fx and fy scale
separately), and everything is mapped back to each view's own source resolution.

Outputs (``WindowPrediction``): depth and confidence resized back to each view's output size
(bilinear when enlarging, area when shrinking), intrinsics rescaled to it with the pixel-centre
rule of ``CameraIntrinsics.scaled``, poses converted from the model's world-to-camera (3, 4)
extrinsics to camera-to-world (4, 4) in OpenCV optical axes, in the window's own frame (the
model's reference view). The output size is the source size by default; ``output_resolution``
(:func:`~da3_ros.core.config.output_size`) can make it the network's size or a given long side,
and then the prediction's frames carry their image resized to it too (the cloud's colours), with
their known intrinsics scaled to match; both paths (numpy and device) honour it.

Per-view models (``da3metric-large``, ``da3mono-large``) predict no cameras: every view gets an
identity pose (chain them with known poses), and the intrinsics are the ones the network was
given, else the known ones (CameraInfo), else a 60-degree guess (:func:`guess_K`): a model that
predicts no camera never reports a guess for a view whose intrinsics are known. The metric
variant always runs with metric scaling (depth x focal / 300), so its depth is in metres.

Conditioning:
- ``condition_on_intrinsics`` (the node's default): views with known intrinsics (CameraInfo)
  report them (rescaled to their source size) instead of the predicted ones, and the network
  gets them where it reads them: the camera encoder with known poses (below) and the metric
  variant's focal scaling. An any-view model without known poses cannot be told them (its camera
  encoder needs poses too), so they are not passed (the call stays unconditioned, so it can run
  compiled). Its depth is kept as predicted (z along the optical axis, per pixel) and the
  calibration replaces its focal: relative depth between pixels is what the network is good at,
  and a wrong focal only stretches its reconstruction sideways, which the calibrated rays undo;
  the cloud is unprojected with the calibration, so depth, cloud and camera_info agree.
  Images whose intrinsics carry lens distortion are first undistorted onto their own K
  (:mod:`da3_ros.core.undistortion`; on the CPU, before the upload, on both paths), so depth,
  confidence and the cloud's colours are in that undistorted geometry; a distortion that cannot
  be undone makes the view go on without its intrinsics (logged once).
- ``condition_on_poses``: when every view has a known pose *and* known intrinsics, the camera
  encoder gets the poses, normalised as upstream (relative to view 0, translations divided by the
  median camera distance, clamped >= 0.1). The output then uses the known poses and depth is
  rescaled into their unit by the Umeyama scale between predicted and known camera centres
  (upstream's ``align_to_input_ext_scale``); depth and poses are then in the known poses' unit
  and world (``is_metric`` still states only what the model is). Otherwise the window runs
  unconditioned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from da3_ros.core import memory
from da3_ros.core.config import output_size, parse_output_resolution
from da3_ros.core.frames import (
    CameraIntrinsics,
    DeviceMaps,
    Frame,
    WindowPrediction,
    pinhole_intrinsics,
    thumb_step,
)
from da3_ros.core.geometry import cam_from_world_to_world_from_cam, invert_rigid, umeyama
from da3_ros.core.resampling import (
    preprocess_frames,
    preprocess_image,
    process_size,
    resize_image,
    resize_image_torch,
    resize_map,
    resize_maps_torch,
)
from da3_ros.core.sharded import ShardedNet
from da3_ros.core.undistortion import Undistorter, blank_outside, supported

LOG = logging.getLogger("da3_ros.core.engine")

#: Horizontal field of view assumed for a view whose intrinsics nobody knows (per-view models).
GUESS_HFOV_DEG = 60.0


def guess_K(width: int, height: int) -> np.ndarray:
    """(3, 3) guess used when a per-view model needs a focal and none is known (60 deg FOV)."""
    return pinhole_intrinsics(width, height, GUESS_HFOV_DEG).K


def normalise_extrinsics(cam_from_world: np.ndarray) -> tuple[np.ndarray, float]:
    """Upstream pose normalisation for conditioning: relative to view 0, unit median distance.

    Args:
        cam_from_world: (S, 4, 4) world-to-camera.

    Returns:
        ((S, 4, 4) normalised world-to-camera, the median camera distance divided out, >= 0.1).
    """
    rel = cam_from_world @ invert_rigid(cam_from_world[0])
    centres = invert_rigid(rel)[:, :3, 3]
    med = max(float(np.median(np.linalg.norm(centres, axis=1))), 0.1)
    rel[:, :3, 3] /= med
    return rel, med


class DA3Engine:
    """Predictor backed by a DA3 network (see module docstring for pre/postprocessing).

    Args:
        model: a ``DA3Net`` / ``NestedDA3Net`` (eval mode, already on ``device``), or a callable
            wrapper of one (``da3_ros.model.accel``) exposing it as ``.module`` and its ``preset``.
        process_res: long side of the network input in pixels.
        device: torch device for the inputs.
        dtype: autocast dtype for the network (``torch.float32`` = no autocast; bf16/fp16 on GPU).
            Weights already cast to a half dtype (``net.set_dtype``) run without autocast when
            this is float32; activations are then estimated at 2 bytes all the same.
        condition_on_intrinsics, condition_on_poses: see module docstring. Both default to False
            here, upstream's behaviour (the network's own estimate, what the parity tests compare);
            the node and ``da3-eval`` build the engine from ``InferenceSettings``, whose
            ``condition_on_intrinsics`` defaults to True (:func:`da3_ros.inference.build.build_engine`).
        ref_view_strategy: the network's reference-view strategy.
        memory_fraction: fraction of free GPU memory a window may plan for.
        attention: attention backend name used for memory estimation ("math" adds N^2 terms).
        device_io: the device path (default: on CUDA): images are uploaded once and resized,
            normalised, and the outputs resized back to source size on ``device``
            (:mod:`da3_ros.core.resampling`'s torch twins); depth and confidence come back to
            the host once, into pinned memory, with their thumbnails, and stay on the device as
            ``WindowPrediction.device_maps`` for the cloud and colourisation. Off: numpy / cv2,
            equal to upstream's preprocessing.
        output_resolution: ``source`` (each view's image size), ``network`` (the window's
            processed size) or a long side in pixels; see :func:`~da3_ros.core.config.output_size`.
        devices: two or more devices (distinct GPUs, or ``cpu`` repeated): every window with
            at least that many views runs sharded over them, one process per device
            (:class:`~da3_ros.core.sharded.ShardedNet`; ``device`` becomes ``devices[0]``, an
            accelerated wrapper's network runs eagerly), and the memory planner budgets each
            device for its share. Empty: the single ``device``. :meth:`close` stops the workers.
    """

    def __init__(self, model, process_res: int = 504, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, condition_on_intrinsics: bool = False,
                 condition_on_poses: bool = False, ref_view_strategy: str = "saddle_balanced",
                 memory_fraction: float = 0.9, attention: str = "flash", device_io: bool | None = None,
                 output_resolution: str | int = "source", devices: Sequence[str] = ()):
        if len(devices) > 1:
            device = devices[0]
            model = ShardedNet(getattr(model, "module", model).to(device), devices)
        self.model = model
        self.process_res = int(process_res)
        self.device = torch.device(device)
        self.dtype = dtype
        self.condition_on_intrinsics = condition_on_intrinsics
        self.condition_on_poses = condition_on_poses
        self.ref_view_strategy = ref_view_strategy
        self.memory_fraction = memory_fraction
        self.attention = attention
        self.device_io = self.device.type == "cuda" if device_io is None else bool(device_io)
        self.output_resolution = parse_output_resolution(output_resolution)
        preset = getattr(model, "preset", None)
        # The metric variant is metric once scaled by focal / 300: always ask the network for it.
        self._metric_variant = getattr(preset, "kind", "") == "metric"
        self.is_metric = bool(getattr(model, "is_metric", False)) or self._metric_variant
        self.name = getattr(preset, "name", type(model).__name__)
        net = getattr(model, "module", model)  # accel's wrappers expose the network as .module
        is_module = isinstance(net, torch.nn.Module)
        self._param_bytes = memory.param_bytes(net) if is_module else 0
        self._weight_dtype = memory.weight_dtype(net) if is_module else None
        self._undistorter = Undistorter()
        self._warned_distortion: set[str] = set()

    def window_size(self, frames: Sequence[Frame]) -> tuple[int, int]:
        """Common process (w, h) of a window: the first view's process size."""
        return process_size(frames[0].width, frames[0].height, self.process_res)[1]

    def output_sizes(self, frames: Sequence[Frame], size: tuple[int, int]) -> list[tuple[int, int]]:
        """Each view's output (w, h) for a window of processed ``size`` (``output_resolution``)."""
        return [output_size(self.output_resolution, (f.width, f.height), size) for f in frames]

    @property
    def ranks(self) -> int:
        """Devices a window is sharded over (1 unless built with ``devices``)."""
        return int(getattr(self.model, "world_size", 1))

    def estimate_bytes(self, num_views: int, width: int, height: int) -> int:
        """Estimated peak GPU bytes (per device) for ``num_views`` views at (width, height) process size."""
        half = (torch.float16, torch.bfloat16)
        act = 2 if self.dtype in half or self._weight_dtype in half else 4
        ranks = self.ranks if num_views >= self.ranks else 1  # as ShardedNet runs it
        return memory.estimate_peak_bytes(self.model.preset, num_views, height, width, self._param_bytes,
                                          act_bytes=act, attention=self.attention, ranks=ranks)

    def plan(self, frames: Sequence[Frame], min_views: int = 2, group: int = 1) -> memory.MemoryPlan:
        """Memory plan for this window on this engine's device(s) (unlimited on CPU).

        Sharded, every device must fit its share; a window shrinks only when it does not fit
        spread over all of them.
        """
        w, h = self.window_size(frames)
        budget_of = getattr(self.model, "budget_bytes", None)
        budget = (budget_of(self.memory_fraction) if budget_of is not None
                  else memory.cuda_budget_bytes(self.device, self.memory_fraction))
        return memory.plan_views(lambda n: self.estimate_bytes(n, w, h), len(frames), budget,
                                 min_views, group, ranks=self.ranks)

    def close(self) -> None:
        """Stop a sharded network's worker processes (nothing to do on one device)."""
        getattr(self.model, "close", lambda: None)()

    def _known_K(self, f: Frame, w: int, h: int) -> np.ndarray | None:
        if f.intrinsics is None:
            return None
        return f.intrinsics.scaled(f.width, f.height).scaled(w, h).K

    def _conditioning(self, frames: Sequence[Frame], size: tuple[int, int]):
        """Known intrinsics (S, 3, 3) and normalised poses (S, 4, 4) for the network, or None."""
        w, h = size
        Ks = [self._known_K(f, w, h) for f in frames]
        have_K = all(k is not None for k in Ks)
        K_in = np.stack(Ks) if have_K and (self.condition_on_intrinsics or self.condition_on_poses) else None
        if self._metric_variant and K_in is None:  # metric scaling needs a focal length
            K_in = np.stack([k if k is not None else guess_K(w, h) for k in Ks])
        ex, med = None, 1.0
        if (self.condition_on_poses and have_K and all(f.world_from_cam is not None for f in frames)
                and getattr(self.model.preset, "has_camera", True)):
            ex, med = normalise_extrinsics(invert_rigid(np.stack([f.world_from_cam for f in frames])))
        return K_in, ex, med

    def _images(self, frames: Sequence[Frame], size: tuple[int, int]):
        """Network input (1, S, 3, h, w) on the device, and the uploaded images (device path)."""
        if self.device_io:
            return preprocess_frames([f.image for f in frames], self.process_res, size, self.device)
        imgs = np.stack([preprocess_image(f.image, self.process_res, size) for f in frames])
        return torch.as_tensor(imgs, device=self.device)[None], None

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor, K: np.ndarray | None, ex: np.ndarray | None):
        def t(a):
            return None if a is None else torch.as_tensor(a, dtype=torch.float32, device=self.device)[None]
        # The network reads intrinsics only with poses (camera encoder) or for metric scaling;
        # otherwise the engine reports known ones itself, and the call stays graph-capturable.
        K = K if ex is not None or self._metric_variant else None
        kwargs = {"extrinsics": t(ex), "intrinsics": t(K), "ref_view_strategy": self.ref_view_strategy}
        if self._metric_variant:
            kwargs["metric_scaling"] = True
        use_amp = self.dtype != torch.float32
        with torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=use_amp):
            return self.model(x, **kwargs)

    @torch.inference_mode()
    def predict(self, frames: Sequence[Frame]) -> WindowPrediction:
        """Run one window; see the module docstring for conventions.

        Raises:
            torch.cuda.OutOfMemoryError / RuntimeError("out of memory"): left to the caller
            (the pipeline retries smaller, see ``memory.run_with_oom_retry``).
        """
        t0 = time.perf_counter()
        frames, inside = self._undistort(list(frames))
        size = self.window_size(frames)
        K_in, ex, med = self._conditioning(frames, size)
        x, uploaded = self._images(frames, size)
        t1 = time.perf_counter()
        out = self._forward(x, K_in, ex)
        if self.device.type == "cuda":  # this stream only: the finishing thread's kernels run beside it
            torch.cuda.current_stream(self.device).synchronize()
        t2 = time.perf_counter()
        pred = self._postprocess(frames, size, out, K_in, ex, med, uploaded)
        blank_outside(pred, inside)
        pred.timings_s = {"preprocess": t1 - t0, "network": t2 - t1, "postprocess": time.perf_counter() - t2}
        return pred

    def _undistort(self, frames: list[Frame]) -> tuple[list[Frame], list[np.ndarray | None]]:
        """Frames with distortion undistorted onto their K when intrinsics are used (module docstring).

        Returns:
            (the frames, per view the mask of pixels with a source pixel, None: all).
        """
        if not self.condition_on_intrinsics:
            return frames, [None] * len(frames)
        out, inside = [], []
        for f in frames:
            if f.intrinsics is not None and not supported(f.intrinsics):
                if f.camera not in self._warned_distortion:
                    self._warned_distortion.add(f.camera)
                    LOG.warning("[%s] distortion model %r with %d coefficients cannot be undone: its "
                                "intrinsics are not used", f.camera, f.intrinsics.distortion_model,
                                np.asarray(f.intrinsics.D).size)
                f = replace(f, intrinsics=None)
            f, mask = self._undistorter.undistort(f)
            out.append(f)
            inside.append(mask)
        return out, inside

    def _postprocess(self, frames: list[Frame], size: tuple[int, int], out, K_in, ex, med,
                     uploaded) -> WindowPrediction:
        sizes = self.output_sizes(frames, size)
        poses, intr, scale = self._cameras(frames, size, out, K_in, ex, med, sizes)
        metric = bool(getattr(out, "is_metric", False)) or self.is_metric
        pred = WindowPrediction(frames=frames, depth=[], confidence=[], world_from_cam=poses, intrinsics=intr,
                                is_metric=metric, owns_maps=True)  # fresh buffers, below
        if self.device_io:
            self._maps_on_device(pred, out, scale, uploaded, sizes)
        else:
            depth = out.depth[0].float().cpu().numpy()
            conf = out.depth_conf[0].float().cpu().numpy()
            for i, (w, h) in enumerate(sizes):
                pred.depth.append(resize_map(depth[i] * scale, w, h))
                pred.confidence.append(resize_map(conf[i], w, h))
            pred.frames = [f if (f.width, f.height) == (w, h) else _with_image(f, resize_image(f.image, w, h))
                           for f, (w, h) in zip(frames, sizes)]
        return pred

    def _cameras(self, frames: list[Frame], size: tuple[int, int], out, K_in, ex, med,
                 sizes: list[tuple[int, int]]):
        """``(world_from_cam (S, 4, 4), intrinsics at each output size, depth scale)`` of a window."""
        w, h = size
        S = len(frames)
        if out.extrinsics is not None:
            w2c = out.extrinsics[0].float().cpu().numpy().astype(np.float64)
            poses = cam_from_world_to_world_from_cam(w2c)
        else:  # per-view models (metric/mono) predict no cameras
            poses = np.tile(np.eye(4), (S, 1, 1))
        if out.intrinsics is not None:
            K_proc = out.intrinsics[0].float().cpu().numpy().astype(np.float64)
        elif K_in is not None:
            K_proc = K_in
        else:  # no camera prediction and none known
            K_proc = np.tile(guess_K(w, h), (S, 1, 1))
        scale = 1.0
        if ex is not None:
            known = np.stack([np.asarray(f.world_from_cam, dtype=np.float64) for f in frames])
            s, _, _ = umeyama(poses[:, :3, 3], known[:, :3, 3]) if S >= 2 else (med, None, None)
            scale, poses = (s if np.isfinite(s) and s > 0 else med), known
        intr = []
        predicts_cameras = out.intrinsics is not None
        for i, (f, (ow, oh)) in enumerate(zip(frames, sizes)):
            if f.intrinsics is not None and (self.condition_on_intrinsics or not predicts_cameras):
                intr.append(f.intrinsics.scaled(ow, oh))
            else:
                intr.append(CameraIntrinsics(K=K_proc[i], width=w, height=h).scaled(ow, oh))
        return poses, intr, scale

    def _maps_on_device(self, pred: WindowPrediction, out, scale: float, uploaded,
                        sizes: list[tuple[int, int]]) -> None:
        """Depth and confidence resized to each output size on the device, copied to the host once.

        Fills ``pred.depth`` / ``confidence`` (numpy views of pinned host memory),
        ``depth_thumbs`` and ``device_maps``. Views of one size are resized together. A view
        whose output size is not its source size also gets its image resized on the device,
        and the prediction's frame carries a host copy of it.
        """
        depth, conf = out.depth[0].float() * scale, out.depth_conf[0].float()
        dev_depth, dev_conf = [None] * len(pred.frames), [None] * len(pred.frames)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, wh in enumerate(sizes):
            by_size.setdefault(wh, []).append(i)
        pin = self.device.type == "cuda"
        copies = []
        for (w, h), idx in by_size.items():
            d, c = (resize_maps_torch(m[idx], w, h) for m in (depth, conf))
            for j, i in enumerate(idx):
                dev_depth[i], dev_conf[i] = d[j], c[j]
            copies.append((idx, _to_host(d, pin), _to_host(c, pin)))  # one copy per size, not per view
        if pin:
            torch.cuda.current_stream(self.device).synchronize()  # the copies above are asynchronous
        n = len(pred.frames)
        pred.depth, pred.confidence, pred.depth_thumbs = [None] * n, [None] * n, [None] * n
        for idx, host_d, host_c in copies:
            d, c = host_d.numpy(), host_c.numpy()
            k = thumb_step(*d.shape[1:])
            for j, i in enumerate(idx):
                pred.depth[i], pred.confidence[i] = d[j], c[j]
                pred.depth_thumbs[i] = d[j, ::k, ::k].copy()  # compact: outlives the window
        images = uploaded or [torch.as_tensor(f.image, device=self.device) for f in pred.frames]
        images = [resize_image_torch(img, w, h) for img, (w, h) in zip(images, sizes)]
        pred.device_maps = DeviceMaps(depth=dev_depth, confidence=dev_conf, images=images)
        pred.frames = [f if (f.width, f.height) == (w, h) else _with_image(f, img.cpu().numpy())
                       for f, (w, h), img in zip(pred.frames, sizes, images)]


def _with_image(frame: Frame, image: np.ndarray) -> Frame:
    """``frame`` with ``image`` (the same view at another size) and its known intrinsics scaled to it.

    Stamp, camera, frame id, pose and ``seq`` are unchanged: it is the same frame, published smaller.
    """
    h, w = image.shape[:2]
    intr = frame.intrinsics.scaled(w, h) if frame.intrinsics is not None else None
    return replace(frame, image=image, intrinsics=intr)


def _to_host(x: torch.Tensor, pinned: bool) -> torch.Tensor:
    """Start copying ``x`` into a new (pinned, when ``pinned``) host tensor; returns it at once."""
    host = torch.empty(x.shape, dtype=x.dtype, pin_memory=pinned)
    host.copy_(x, non_blocking=pinned)
    return host
