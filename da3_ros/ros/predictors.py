"""Build the node's predictor from its parameters (model, device, dtype, attention, ...).

``model`` accepts:

- ``default``: the bundled trained model ``data/models/da3-tiny-synth`` when it is
  present (source tree or installed share), else ``da3-tiny`` with random weights;
- a preset name (``da3-large``, ``da3-tiny``, ...): the network with RANDOM weights
  (plumbing checks only; logged as a loud warning);
- a local weights directory, or a Hugging Face hub id (``org/name``), loaded strictly;
- ``truth``: TEST AID. A stand-in that returns ground truth read from topics
  (``truth.depth_topic`` 32FC1 depth and ``truth.pose_topic`` PoseStamped
  camera-to-world optical pose, both stamped like the image) through
  :class:`da3_ros.core.standin.GroundTruthPredictor`. Never use it on a robot.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image

from da3_ros.core.frames import CameraIntrinsics, Frame
from da3_ros.ros import conversions as conv

BUNDLED_MODEL = Path("data") / "models" / "da3-tiny-synth"
FALLBACK_PRESET = "da3-tiny"


@dataclass
class PredictorInfo:
    """What diagnostics report about the predictor."""

    name: str
    device: str = "cpu"
    dtype: str = "float32"
    attention_backend: str = "n/a"
    accelerate: str = "off"
    is_metric: bool = False
    warnings: list[str] = field(default_factory=list)


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; other names pass through."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(name: str, device: str):
    """Torch dtype for a ``dtype`` parameter: ``auto`` is bfloat16/float16 on CUDA, float32 on CPU."""
    import torch

    if name == "auto":
        if not device.startswith("cuda"):
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, name)


def resolve_accelerate(device: str, setting: str) -> str:
    """Effective ``accelerate`` mode: ``off``, ``compile`` or ``compile_graphs``.

    ``auto`` is ``off`` (half-precision weights, eager): compiling and graph capture
    (``compile_graphs``, the benchmark's fastest path, bench/RESULTS.md) are opt-in until the
    node's own path has run them on a GPU, and they stall activation for about a minute. On a
    non-CUDA device every setting is ``off`` (``da3_ros.model.accel.accelerate`` does nothing
    there).
    """
    if not device.startswith("cuda"):
        return "off"
    if setting == "auto":
        return "off"
    if setting not in ("off", "compile", "compile_graphs"):
        raise ValueError(f"accelerate {setting!r} is not auto, off, compile or compile_graphs")
    return setting


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


def bundled_model_dir() -> Path | None:
    """The bundled trained model directory (source checkout or installed share), or None."""
    candidates = [Path(__file__).resolve().parents[2] / BUNDLED_MODEL]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("da3_ros")) / BUNDLED_MODEL)
    except Exception:  # noqa: BLE001 - not installed as an ament package
        pass
    return next((c for c in candidates if c.is_dir()), None)


def resolve_model_source(model: str) -> tuple[str, str]:
    """Classify the ``model`` parameter.

    Returns:
        ``(kind, value)`` with kind ``preset`` (random weights), ``path``, ``hub`` or ``truth``.

    Raises:
        ValueError: the value is neither a preset, an existing path nor a hub id.
    """
    from da3_ros.model.presets import PRESETS

    if model == "truth":
        return "truth", model
    if model == "default":
        found = bundled_model_dir()
        return ("path", str(found)) if found else ("preset", FALLBACK_PRESET)
    if model in PRESETS:
        return "preset", model
    if Path(model).expanduser().exists():
        return "path", str(Path(model).expanduser())
    if model.count("/") == 1 and not model.startswith((".", "/")):
        return "hub", model
    raise ValueError(f"model {model!r} is not a preset ({', '.join(sorted(PRESETS))}), "
                     "an existing weights directory, a hub id (org/name), 'default' or 'truth'")


DEFAULT_PROCESS_RES = 504
DEFAULT_REF_VIEW_STRATEGY = "saddle_balanced"


def recommended_settings(kind: str, source: str) -> dict:
    """The inference settings a weights directory recommends (its config.json ``da3_ros`` block).

    Our trained weights record the resolution and reference-view strategy they were trained
    for; official checkpoints carry none (upstream defaults apply).
    """
    if kind != "path":
        return {}
    config = Path(source) / "config.json"
    try:
        block = json.loads(config.read_text()).get("da3_ros", {})
    except (OSError, ValueError):
        return {}
    return {k: block[k] for k in ("process_res", "ref_view_strategy") if k in block}


def inference_settings(settings, kind: str, source: str) -> tuple[int, str]:
    """``(process_res, ref_view_strategy)``: the parameters, where 0 / ``auto`` defer to the weights."""
    recommended = recommended_settings(kind, source)
    process_res = int(settings["process_res"]) or int(recommended.get("process_res", DEFAULT_PROCESS_RES))
    ref = settings["ref_view_strategy"]
    if ref == "auto":
        ref = str(recommended.get("ref_view_strategy", DEFAULT_REF_VIEW_STRATEGY))
    return process_res, ref


def build_engine(settings, logger) -> tuple[object, PredictorInfo]:
    """Load the network and wrap it in a :class:`DA3Engine` as the parameters say."""
    import torch

    from da3_ros.core.engine import DA3Engine
    from da3_ros.model import build_model

    kind, source = resolve_model_source(settings["model"])
    device = resolve_device(settings["device"])
    dtype = resolve_dtype(settings["dtype"], device)
    backend = settings["attention_backend"]
    info = PredictorInfo(name=source, device=device, dtype=str(dtype).removeprefix("torch."))
    if kind == "preset":
        msg = (f"model {source!r}: preset with RANDOM WEIGHTS, outputs are meaningless; "
               "set the model parameter to a weights directory or hub id")
        logger.warning("!" * 20 + " " + msg + " " + "!" * 20)
        info.warnings.append("random weights")
        net = build_model(source, attention_backend=backend)
        info.name = f"{source} (random weights)"
    else:
        from da3_ros.model import load_pretrained

        logger.info(f"loading model {source} on {device} ({info.dtype})")
        net = load_pretrained(source, device=device, dtype=torch.float32, attention_backend=backend)
    net = net.to(device).eval()  # moving re-resolves the attention kernel for the device
    info.attention_backend = str(getattr(net, "attention_desc", backend))
    process_res, ref_view = inference_settings(settings, kind, source)
    logger.info(f"process_res {process_res}, ref_view_strategy {ref_view}")
    model, amp_dtype = _fast_path(net, device, dtype, ref_view, settings, logger, info)
    engine = DA3Engine(model, process_res=process_res, device=device, dtype=amp_dtype,
                       condition_on_intrinsics=bool(settings["condition_on_intrinsics"]),
                       condition_on_poses=bool(settings["condition_on_poses"]),
                       ref_view_strategy=ref_view,
                       attention="math" if backend == "manual" else "flash")
    info.is_metric = bool(engine.is_metric)
    return engine, info


def _fast_path(net, device: str, dtype, ref_view_strategy: str, settings, logger, info: PredictorInfo):
    """The callable the engine runs and its autocast dtype.

    On CUDA with a half dtype the weights are cast (``set_dtype``: camera modules stay fp32)
    and the engine does not autocast (float32); elsewhere weights stay fp32 and the engine
    autocasts to ``dtype`` as before. ``accelerate`` (see :func:`resolve_accelerate`) then
    wraps the network with ``da3_ros.model.accel.accelerate`` without shapes: each window shape
    compiles on first use, the warm-up window included.
    """
    import torch

    setting = str(settings["accelerate"])
    mode = resolve_accelerate(device, setting)
    if setting not in ("auto", "off") and mode == "off":
        logger.warning(f"accelerate={setting} needs CUDA; running eagerly on {device}")
    half = device.startswith("cuda") and dtype in (torch.bfloat16, torch.float16)
    if half:
        net.set_dtype(dtype)
    amp_dtype = torch.float32 if half else dtype
    if mode == "off":
        return net, amp_dtype
    from da3_ros.model.accel import accelerate

    fast = accelerate(net, shapes=(), graphs=mode == "compile_graphs",
                      ref_view_strategy=ref_view_strategy)
    info.accelerate = mode
    return ShapeLoggedNet(fast, net, logger, mode), amp_dtype


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
    """Drop the predictor (its CUDA graphs and compiled code too) and return cached GPU memory."""
    model = getattr(predictor, "model", None)
    if isinstance(model, ShapeLoggedNet):
        getattr(model.fast, "reset", lambda: None)()  # GraphedDA3: drop graphs and their pool
        import torch._dynamo

        torch._dynamo.reset()  # compiled code holds the network's weights
    del predictor, model
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


class TruthTopics:
    """TEST AID: caches ground-truth depth and poses from topics, keyed by (camera, stamp).

    Subscribes, for each camera, ``truth.depth_topic`` (32FC1 z-depth, metres) and
    ``truth.pose_topic`` (PoseStamped, camera optical frame to world); ``{camera}``
    in the names is replaced by the camera name. The test publishes truth before
    (or with) each image; :meth:`lookup` waits up to ``wait_s`` for late truth, and for a
    frame without intrinsics, up to ``wait_s`` for the camera's first CameraInfo from
    ``intrinsics_source(camera)`` (set by the node). Each table keeps the newest
    ``capacity`` entries (see :func:`truth_capacity`).
    """

    def __init__(self, node, cameras: list[str], depth_topic: str, pose_topic: str, qos,
                 wait_s: float = 1.0, capacity: int = 512) -> None:
        self._node = node
        self.wait_s = wait_s
        self._capacity = capacity
        self._depth: OrderedDict = OrderedDict()
        self._pose: OrderedDict = OrderedDict()
        self._cond = threading.Condition()
        self.intrinsics_source: Callable[[str], CameraIntrinsics | None] | None = None
        self._subs = []
        for cam in cameras:
            self._subs.append(node.create_subscription(
                Image, depth_topic.format(camera=cam),
                lambda m, c=cam: self._store(self._depth, c, m, conv.image_to_numpy(m)[0].copy()), qos))
            self._subs.append(node.create_subscription(
                PoseStamped, pose_topic.format(camera=cam),
                lambda m, c=cam: self._store(self._pose, c, m, conv.pose_to_matrix(m.pose)), qos))

    def _store(self, table: OrderedDict, camera: str, msg, value) -> None:
        with self._cond:
            table[(camera, conv.stamp_to_ns(msg.header.stamp))] = value
            while len(table) > self._capacity:
                table.popitem(last=False)
            self._cond.notify_all()

    def lookup(self, frame: Frame):
        """``(depth (H, W) float32 metres, world_from_cam (4, 4), CameraIntrinsics)`` of a frame.

        Raises:
            LookupError: no truth (or no CameraInfo) for this frame within ``wait_s``.
        """
        key = (frame.camera, frame.stamp_ns)
        with self._cond:
            ok = self._cond.wait_for(lambda: key in self._depth and key in self._pose, self.wait_s)
            if not ok:
                raise LookupError(f"no ground truth for {key} within {self.wait_s} s")
            depth, pose = self._depth[key], self._pose[key]
        return depth, pose, self._intrinsics(frame)

    def _intrinsics(self, frame: Frame) -> CameraIntrinsics:
        """The frame's intrinsics, else the camera's CameraInfo (waiting up to ``wait_s`` for it)."""
        intr, deadline = frame.intrinsics, time.monotonic() + self.wait_s
        while intr is None and self.intrinsics_source is not None:
            intr = self.intrinsics_source(frame.camera)
            if intr is None and time.monotonic() >= deadline:
                break
            if intr is None:
                time.sleep(0.01)
        if intr is None:
            raise LookupError(f"truth stand-in needs CameraInfo for camera {frame.camera!r} "
                              f"(none within {self.wait_s} s)")
        if (intr.width, intr.height) != (frame.width, frame.height):
            raise LookupError(f"CameraInfo of {frame.camera!r} is {intr.width}x{intr.height}, "
                              f"image {frame.width}x{frame.height}")
        return intr

    def destroy(self) -> None:
        """Remove the truth subscriptions."""
        for sub in self._subs:
            self._node.destroy_subscription(sub)
        self._subs.clear()


def truth_capacity(settings) -> int:
    """Truth entries (per table, all cameras together) the stand-in can still ask for.

    A window only looks up frames of the windower's history (``(num_view - 1) * max(dilations)
    + 1`` items); frames waiting in the pipeline queue (``queue_size``) or in the image
    subscription (``input_queue_depth``) are newer still, and their truth may already be here.
    Twice that, per camera, at least 32: ~300 KiB each for a 320 x 240 depth image.
    """
    span = (int(settings["num_view"]) - 1) * max(int(d) for d in settings["dilations"]) + 1
    per_camera = int(settings["queue_size"]) + int(settings["input_queue_depth"]) + span
    return max(32, 2 * per_camera * len(settings.cameras))


def build_truth(node, settings, qos) -> tuple[object, PredictorInfo, TruthTopics]:
    """TEST AID: the ground-truth stand-in predictor fed by :class:`TruthTopics`."""
    from da3_ros.core.standin import GroundTruthPredictor

    cams = [c.name for c in settings.cameras]
    topics = TruthTopics(node, cams, settings["truth.depth_topic"], settings["truth.pose_topic"], qos,
                         wait_s=float(settings["truth.wait_s"]), capacity=truth_capacity(settings))
    predictor = GroundTruthPredictor(
        topics.lookup, scale_range=tuple(settings["truth.scale_range"]),
        depth_noise=float(settings["truth.depth_noise"]), pose_noise=float(settings["truth.pose_noise"]),
        seed=int(settings["truth.seed"]), metric=bool(settings["truth.metric"]))
    info = PredictorInfo(name="truth (TEST AID: ground-truth stand-in)",
                         is_metric=bool(settings["truth.metric"]))
    return predictor, info, topics
