"""Build a predictor from :class:`InferenceSettings`: network, device, dtype, fast path, engine.

Also the two things done with a built predictor: :func:`warm_up` (one dummy window, so the first
real window is fast) and :func:`release` (drop it and return cached GPU memory).
"""

from __future__ import annotations

import gc
import os
import time

import numpy as np
import torch

from da3_ros.core.engine import DA3Engine
from da3_ros.core.frames import Frame
from da3_ros.inference.compiling import BackgroundCompiledNet, default_cache_dir, use_cache_dir
from da3_ros.inference.settings import (
    ACCELERATE_SETTINGS,
    InferenceSettings,
    PredictorInfo,
    device_form_error,
)
from da3_ros.inference.sources import resolve_model_source, resolve_process_settings
from da3_ros.model import build_model, load_pretrained
from da3_ros.model.accel import accelerate

#: torch CPU threads of a process whose predictor runs on CUDA (see :func:`resolve_cpu_threads`).
CUDA_HOST_THREADS = 2
#: Cores a CPU-only node leaves to its own threads (executor, publishing, DDS).
RESERVED_CORES = 2


def resolve_cpu_threads(setting: int, device: str, cores: int | None = None) -> int:
    """Intra-op threads of torch: ``setting`` when > 0, else 2 on CUDA, else ``cores - 2`` (>= 1).

    More threads than that only fight the node's other threads for the cores: on a 2-core
    machine under load, da3-tiny at 56 px took 17 ms a frame with one torch thread and 55 ms
    with two (their spin barriers wait for a core the node's threads hold).
    """
    if setting > 0:
        return int(setting)
    if device.startswith("cuda"):
        return CUDA_HOST_THREADS
    cores = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, cores - RESERVED_CORES)


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; other names pass through once checked.

    Raises:
        ValueError: a malformed name or a device this machine does not have (:func:`device_problem`).
    """
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    problem = device_problem(name)
    if problem:
        raise ValueError(problem)
    return name


def device_problem(name: str) -> str | None:
    """Why ``device`` ``name`` cannot run here (malformed, no CUDA in this torch, no such GPU), or None."""
    problem = device_form_error(name)
    if problem or not name.startswith("cuda"):
        return problem
    if torch.version.cuda is None:
        return (f"device {name!r}: CUDA is not available in this torch build (torch {torch.__version__} "
                "is CPU-only); use device auto or cpu, or install a CUDA build of torch")
    if not torch.cuda.is_available():
        return (f"device {name!r}: CUDA is not available (torch {torch.__version__} has CUDA "
                f"{torch.version.cuda}, but no GPU is visible: driver, CUDA_VISIBLE_DEVICES?)")
    index = int(name.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        return f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    return None


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """Torch dtype for a ``dtype`` setting: ``auto`` is bfloat16/float16 on CUDA, float32 on CPU."""
    if name == "auto":
        if not device.startswith("cuda"):
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, name)


def resolve_accelerate(device: str, setting: str) -> str:
    """Effective ``accelerate`` mode: ``off``, ``compile``, ``compile_graphs`` or ``background``.

    ``auto`` on CUDA is ``background``: windows run eagerly (half-precision weights) from the
    start while each new window shape compiles on a thread of its own, then the compiled
    network replays as a CUDA graph (:mod:`da3_ros.inference.compiling`). ``compile`` and
    ``compile_graphs`` compile when a shape is first used, the warm-up window included, so
    activation waits for them. On a non-CUDA device every setting is ``off``.
    """
    if setting not in ACCELERATE_SETTINGS:
        raise ValueError(f"accelerate {setting!r} is not one of {', '.join(ACCELERATE_SETTINGS)}")
    if not device.startswith("cuda"):
        return "off"
    return "background" if setting == "auto" else setting


class ShapeLoggedNet:
    """An accelerated network that logs (INFO, once per shape) when a new window shape compiles.

    Callable like the network; ``module`` is the ``nn.Module`` (the engine counts its weights),
    ``preset`` / ``is_metric`` are the network's.
    """

    def __init__(self, fast, module, logger, mode: str) -> None:
        self.fast, self.module, self._logger, self._mode = fast, module, logger, mode
        self.preset = module.preset
        self.is_metric = bool(getattr(module, "is_metric", False))
        self.shapes_seen: set[tuple[int, ...]] = set()

    def __call__(self, images, *args, **kwargs):
        """Run ``images (B, S, 3, H, W)`` through the accelerated network."""
        shape = tuple(images.shape)
        if shape not in self.shapes_seen:
            self.shapes_seen.add(shape)
            self._logger.info(f"accelerate={self._mode}: first window of shape (B, S, 3, H, W)={shape} "
                              "compiles now (tens of seconds; later windows of this shape are fast)")
        return self.fast(images, *args, **kwargs)


def load_network(model: str, attention_backend: str = "auto", seed: int | None = None,
                 device: str = "cpu"):
    """The network a ``model`` value names, fp32 on ``device``, in eval mode.

    Args:
        model: see :func:`da3_ros.inference.sources.resolve_model_source`.
        attention_backend: one of ``da3_ros.model.options.ATTENTION_BACKENDS``; resolved for
            ``device`` (a GPU-only backend is built on the GPU, never refused on the way there).
        seed: seeds the random weights of a preset (None: torch's current state).
        device: where the network is built.

    Returns:
        ``(network, kind, source)`` with kind ``preset`` (random weights), ``path`` or ``hub``.
    """
    kind, source = resolve_model_source(model)
    if kind == "preset":
        if seed is not None:
            torch.manual_seed(seed)
        net = build_model(source, attention_backend=attention_backend, device=device)
    else:
        net = load_pretrained(source, device=device, dtype=torch.float32, attention_backend=attention_backend)
    return net.eval(), kind, source


def build_engine(settings: InferenceSettings, logger) -> tuple[DA3Engine, PredictorInfo]:
    """Load the network and wrap it in a :class:`DA3Engine` as the settings say.

    Args:
        settings: what to run and how.
        logger: anything with ``info`` / ``warning`` (an rclpy logger or a ``logging.Logger``).
    """
    devices = [resolve_device(d) for d in settings.devices or []]
    device = devices[0] if devices else resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    torch.set_num_threads(resolve_cpu_threads(settings.cpu_threads, device))
    backend = settings.attention_backend
    kind, source = resolve_model_source(settings.model)
    info = PredictorInfo(name=source, device=device, dtype=str(dtype).removeprefix("torch."))
    if kind == "preset":
        msg = (f"model {source!r}: preset with RANDOM WEIGHTS, outputs are meaningless; "
               "set the model parameter to a weights directory or hub id")
        logger.warning("!" * 20 + " " + msg + " " + "!" * 20)
        info.warnings.append("random weights")
        info.name = f"{source} (random weights)"
    else:
        logger.info(f"loading model {source} on {device} ({info.dtype})")
    net, _, _ = load_network(settings.model, backend, device=device)
    info.attention_backend = str(getattr(net, "attention_desc", backend))
    process_res, ref_view = resolve_process_settings(settings, kind, source)
    logger.info(f"process_res {process_res}, ref_view_strategy {ref_view}")
    sharded = len(devices) > 1
    if sharded and settings.accelerate not in ("auto", "off"):
        logger.warning(f"accelerate={settings.accelerate} is not used by a network sharded over "
                       f"{', '.join(devices)}; it runs eagerly")
    model, amp_dtype = _fast_path(net, device, dtype, ref_view, settings, logger, info, eager=sharded)
    if sharded:
        logger.info(f"each window's views are sharded over {', '.join(devices)} (one process each)")
    engine = DA3Engine(model, process_res=process_res, device=device, dtype=amp_dtype,
                       devices=devices if sharded else (),
                       condition_on_intrinsics=bool(settings.condition_on_intrinsics),
                       condition_on_poses=bool(settings.condition_on_poses),
                       ref_view_strategy=ref_view,
                       attention="math" if backend == "manual" else "flash",
                       output_resolution=settings.output_resolution)
    engine.name = info.name
    info.is_metric = bool(engine.is_metric)
    return engine, info


def _fast_path(net, device: str, dtype, ref_view_strategy: str, settings: InferenceSettings, logger,
               info: PredictorInfo, eager: bool = False):
    """The callable the engine runs and its autocast dtype.

    On CUDA with a half dtype the weights are cast (``set_dtype``: camera modules stay fp32)
    and the engine does not autocast (float32); elsewhere weights stay fp32 and the engine
    autocasts to ``dtype`` as before. ``accelerate`` (see :func:`resolve_accelerate`) then
    wraps the network: in the background (:class:`BackgroundCompiledNet`), or with
    ``da3_ros.model.accel.accelerate`` without shapes (each window shape compiles on first use,
    the warm-up window included). Compiled kernels go to ``compile_cache_dir``. ``eager``: no
    wrapper (a sharded network).
    """
    setting = "off" if eager else settings.accelerate
    mode = resolve_accelerate(device, setting)
    if setting not in ("auto", "off") and mode == "off":
        logger.warning(f"accelerate={setting} needs CUDA; running eagerly on {device}")
    half = device.startswith("cuda") and dtype in (torch.bfloat16, torch.float16)
    if half:
        net.set_dtype(dtype)
    amp_dtype = torch.float32 if half else dtype
    info.accelerate = mode
    if mode == "off":
        return net, amp_dtype
    cache = use_cache_dir(settings.compile_cache_dir or default_cache_dir())
    logger.info(f"accelerate={mode}: compiled kernels cached in {cache}")
    if mode == "background":
        return BackgroundCompiledNet(net, logger, timeout_s=settings.compile_timeout_s), amp_dtype
    fast = accelerate(net, shapes=(), graphs=mode == "compile_graphs", ref_view_strategy=ref_view_strategy)
    return ShapeLoggedNet(fast, net, logger, mode), amp_dtype


#: Image size (width, height) of the warm-up window.
WARMUP_SIZE = (640, 480)


def warm_up(predictor, n_views: int, logger, size: tuple[int, int] = WARMUP_SIZE) -> None:
    """Run one dummy window of ``n_views`` grey ``size`` (width, height) frames.

    It goes through ``predictor.predict`` like a real window, so with ``accelerate`` it compiles
    and captures exactly the shape real ``size`` images produce: ``(1, n_views, 3, h, w)`` with
    ``(w, h)`` from ``process_res`` (``DA3Engine.window_size``). The camera's size is not known at
    activation; real images of another size (or windows the memory planner shrinks) compile on
    their first use instead, logged once per shape.
    """
    w, h = size
    frames = [Frame(image=np.full((h, w, 3), 128, np.uint8), stamp_ns=i + 1, camera="warmup",
                    frame_id="warmup") for i in range(n_views)]
    t0 = time.monotonic()
    predictor.predict(frames)
    logger.info(f"warm-up window of {n_views} views of {w}x{h} done in {time.monotonic() - t0:.1f} s")


def release(predictor) -> None:
    """Drop the predictor (CUDA graphs, compiled code, a sharded engine's workers); free cached GPU memory."""
    getattr(predictor, "close", lambda: None)()  # a sharded engine's workers
    model = getattr(predictor, "model", None)
    if isinstance(model, ShapeLoggedNet | BackgroundCompiledNet):
        getattr(model.fast, "reset", lambda: None)()  # GraphedDA3: drop graphs and their pool
        torch._dynamo.reset()  # compiled code holds the network's weights
    del predictor, model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
