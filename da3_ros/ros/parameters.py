"""The node's parameters: one table of specs, declared with descriptors, validated in one place.

Every parameter is declared (:mod:`da3_ros.ros.node_parameters`) with a
:class:`rcl_interfaces.msg.ParameterDescriptor` carrying its type, description and range.
*Restart* parameters (model, device, topics, QoS, window shape) are read at configure: they
can be set while the node is unconfigured (``additional_constraints`` says so) and take effect
at the next configure; the others are *dynamic* and take effect on the next window
(confidence threshold, depth range, voxel size, queue policy, publish toggles, ...).

Per-camera parameters live under ``camera.<name>.`` and are declared after the
``cameras`` list is known, so a params file can describe a whole rig::

    da3_node:
      ros__parameters:
        cameras: [front, left]
        camera.front.image_topic: /front/image_raw
        camera.front.camera_info_topic: /front/camera_info
        camera.left.image_topic: /left/image_raw/compressed
        camera.left.transport: compressed
        camera.front.extrinsics: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]     # rig calibration (optional)
        camera.left.extrinsics: [-0.06, 0.0, 0.0, 0.0, -0.259, 0.0, 0.966]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
)

from da3_ros.core.config import (
    ALIGN_MODES,
    QUEUE_POLICIES,
    WINDOW_MODES,
    PipelineConfig,
    parse_output_resolution,
)
from da3_ros.core.rig import pose_from_vector
from da3_ros.inference.settings import (
    ACCELERATE_SETTINGS,
    ATTENTION_BACKENDS,
    DEFAULT_PROCESS_RES,
    DEFAULT_REF_VIEW_STRATEGY,
    DEVICE_FORMS,
    DTYPES,
    REF_VIEW_SETTINGS,
    InferenceSettings,
    device_form_error,
    devices_form_error,
)

_T = ParameterType
_TYPES = {
    bool: _T.PARAMETER_BOOL, int: _T.PARAMETER_INTEGER, float: _T.PARAMETER_DOUBLE,
    str: _T.PARAMETER_STRING,
}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: name, default, description and constraints.

    ``choices`` restricts a string; ``lo``/``hi`` give a numeric range (for
    arrays, each element); ``dynamic`` False: read at configure only (a restart parameter);
    ``check(value)`` says why a value is invalid (None: valid), for rules choices cannot state.
    """

    name: str
    default: Any
    description: str
    dynamic: bool = False
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    array_of: type | None = None
    check: Callable[[Any], str | None] | None = None

    @property
    def ros_type(self) -> int:
        """The ParameterType value of this parameter."""
        if self.array_of is not None:
            return {str: _T.PARAMETER_STRING_ARRAY, int: _T.PARAMETER_INTEGER_ARRAY,
                    float: _T.PARAMETER_DOUBLE_ARRAY}[self.array_of]
        return _TYPES[type(self.default)]

    def descriptor(self) -> ParameterDescriptor:
        """The ParameterDescriptor declared for this parameter.

        Never ``read_only``: a restart parameter can be set while the node is unconfigured (the
        set callback refuses it in any other state) and is read at the next configure.
        """
        d = ParameterDescriptor(name=self.name, type=self.ros_type, description=self.description)
        extra = [] if self.dynamic else [RESTART_NOTE]
        if self.choices:
            extra.append("one of: " + ", ".join(self.choices))
        if self.lo is not None and self.array_of is None:
            if self.ros_type == _T.PARAMETER_INTEGER:
                d.integer_range = [IntegerRange(from_value=int(self.lo), to_value=int(self.hi), step=0)]
            else:
                d.floating_point_range = [FloatingPointRange(from_value=float(self.lo),
                                                             to_value=float(self.hi), step=0.0)]
        elif self.lo is not None:
            extra.append(f"each element in [{self.lo}, {self.hi}]")
        d.additional_constraints = "; ".join(extra)
        return d


#: Default ``max_input_pixels``: 3840 x 2160 (4K UHD). A 4000 x 3000 rgb8 image is 36 MB on the
#: wire (more than the loopback profile's 16 MiB shared-memory message, so best-effort QoS loses
#: them) and, at output_resolution source, 48 MB of depth + confidence per view.
MAX_INPUT_PIXELS = 3840 * 2160


def _output_resolution_error(value: Any) -> str | None:
    try:
        parse_output_resolution(value)
    except ValueError as exc:
        return str(exc)
    return None


#: Values of ``inference_process`` (see :func:`da3_ros.inference.process_pipeline.use_process`).
INFERENCE_PROCESS_SETTINGS: tuple[str, ...] = ("auto", "on", "off")
#: ``additional_constraints`` of the parameters that are read at configure only.
RESTART_NOTE = "restart: set it while unconfigured; read at the next configure"
#: Upper bound of "unbounded" numeric ranges in descriptors.
UNBOUNDED = 1.0e6
# Defaults and choices come from the config dataclasses (their one home); the table adds ROS
# types, ranges, descriptions and which parameters are dynamic.
_INF, _PIPE = InferenceSettings(), PipelineConfig()

#: Node-wide parameters, in declaration order.
SPECS: tuple[ParamSpec, ...] = (
    # --- model and device (restart) ---
    ParamSpec("model", _INF.model, "'default' (bundled trained model if present, else da3-tiny random), "
              "a preset name (random weights, plumbing only), a local weights directory, a Hugging Face "
              "hub id, or 'truth' (TEST AID: stand-in fed by ground-truth topics)"),
    ParamSpec("device", _INF.device, f"Torch device: {', '.join(DEVICE_FORMS)} (checked at configure)",
              check=device_form_error),
    ParamSpec("devices", list(_INF.devices), "Several local devices for one window, e.g. [cuda:0, cuda:1]: "
              "each window's views are sharded over them (one process each; global attention still "
              "spans every view; the memory planner budgets each device for its share; runs eagerly, "
              "accelerate is not used); []: the single device; one entry: that device",
              array_of=str, check=devices_form_error),
    ParamSpec("dtype", _INF.dtype, "Inference dtype", choices=DTYPES),
    ParamSpec("attention_backend", _INF.attention_backend, "Attention kernel (da3_ros.model.attention)",
              choices=ATTENTION_BACKENDS),
    ParamSpec("accelerate", _INF.accelerate, "GPU fast path: auto = on CUDA, windows run eagerly at once "
              "while each window shape compiles in the background (torch.compile + one CUDA graph per "
              "shape; about a minute cold, seconds from compile_cache_dir), then the compiled graph "
              "replays; compile / compile_graphs compile when a shape is first used, so activation "
              "waits for it; off = eager; always off on CPU",
              choices=ACCELERATE_SETTINGS),
    ParamSpec("compile_cache_dir", _INF.compile_cache_dir, "Where compiled kernels are kept across "
              "restarts (TORCHINDUCTOR_CACHE_DIR); '': $XDG_CACHE_HOME or ~/.cache, then "
              "da3_ros/torch_compile"),
    ParamSpec("compile_timeout_s", _INF.compile_timeout_s, "A background compile not done after this "
              "long is abandoned (the network stays eager; reported in /diagnostics)", lo=1.0, hi=86400.0),
    ParamSpec("inference_process", "auto", "Where the model, windows, alignment, cloud and colours run: "
              "on = an inference process of their own (images and results in shared memory), so the node's "
              "ROS threads and the inference never wait for one Python lock; off = a worker thread of the "
              "node; auto = on for a CUDA device, off on the CPU and for model truth",
              choices=INFERENCE_PROCESS_SETTINGS),
    ParamSpec("cpu_threads", _INF.cpu_threads, "torch CPU threads; 0: 2 on CUDA, else all cores but two "
              "(left to the node's ROS threads), at least 1", lo=0, hi=1024),
    ParamSpec("process_res", _INF.process_res, "Long side of the network input in pixels (28-4096); 0: "
              f"what the weights' config.json recommends (da3_ros block), else {DEFAULT_PROCESS_RES}",
              lo=0, hi=4096),
    ParamSpec("ref_view_strategy", _INF.ref_view_strategy, "Reference-view choice inside a window; auto: "
              "what the weights' config.json recommends (da3_ros block), else "
              f"{DEFAULT_REF_VIEW_STRATEGY}",
              choices=REF_VIEW_SETTINGS),
    ParamSpec("condition_on_intrinsics", _INF.condition_on_intrinsics,
              "Use CameraInfo intrinsics when present and valid: published camera_info is the "
              "calibration, depth and cloud follow it, the network gets it where it can (known poses, "
              "metric scaling); false: the network's own estimate"),
    ParamSpec("condition_on_poses", _INF.condition_on_poses, "Feed known poses to the network"),
    ParamSpec("warmup", _INF.warmup, "Run one dummy window on activation (first real window is then fast)"),
    ParamSpec("output_resolution", _INF.output_resolution, "Size of depth, confidence and camera_info "
              "(scaled to match): source = each camera's image size; network = the network's processed "
              "size (no upsampling: cheapest); N = long side of N pixels (never enlarged). The truth "
              "stand-in always answers at source size", check=_output_resolution_error),
    # --- inputs (restart) ---
    ParamSpec("cameras", ["camera"], "Camera names; per-camera settings under camera.<name>.*",
              array_of=str),
    ParamSpec("mode", "auto", "Windowing: temporal (one camera), multicam (synchronised rig), "
              "auto (multicam when more than one camera)", choices=("auto",) + WINDOW_MODES),
    ParamSpec("input_qos", "sensor_data", "QoS of image subscriptions",
              choices=("sensor_data", "reliable")),
    ParamSpec("input_queue_depth", 5, "History depth of image subscriptions", lo=1, hi=1000),
    ParamSpec("input_thread", True, "Take the cameras' images and CameraInfo on a thread of their own "
              "(one rcl wait set, the GIL released while it waits) instead of the node's executor, "
              "whose Python per message lost images at hundreds of frames per second"),
    ParamSpec("max_input_pixels", MAX_INPUT_PIXELS, "A camera's images larger than this (width x height) "
              "are logged once as too large for the CPU, memory and best-effort transport (0: never)",
              dynamic=True, lo=0, hi=1_000_000_000),
    ParamSpec("camera_info_wait_s", 1.0, "When intrinsics are used (condition_on_intrinsics, the "
              "default; condition_on_poses; model truth), hold a camera's images up to this long for its "
              "first CameraInfo; then they go on without (counted)", lo=0.0, hi=60.0),
    # --- windowing (restart) ---
    ParamSpec("num_view", _PIPE.num_view, "Time steps (temporal) or synchronised sets (multicam) per window",
              lo=1, hi=64),
    ParamSpec("stride", _PIPE.stride, "New frames (sets) per window", lo=1, hi=64),
    ParamSpec("dilations", list(_PIPE.dilations), "Frame gaps inside a window (RollingDepth style)",
              lo=1, hi=64, array_of=int),
    ParamSpec("slop_s", _PIPE.slop_s, "Multi-camera sync tolerance, seconds", lo=0.0, hi=10.0),
    ParamSpec("keyframe_min_dt_s", _PIPE.keyframe_min_dt_s,
              "Minimum time between keyframes (0: every frame)", lo=0.0, hi=3600.0),
    ParamSpec("keyframe_min_change", _PIPE.keyframe_min_change,
              "Minimum image change for a keyframe (0: off)", lo=0.0, hi=1.0),
    ParamSpec("queue_size", _PIPE.queue_size,
              "Frames waiting for the inference worker before drops (queue_policy); 0: two windows of "
              "new frames (2 x stride x cameras in multicam), at least 8", lo=0, hi=10000),
    ParamSpec("finish_thread", _PIPE.finish_thread, "Chain, build the cloud and colour each window on a "
              "thread of its own while the next window's network runs; false: one after the other"),
    ParamSpec("align", _PIPE.align, "Cross-window alignment (auto: sim3 relative, se3 metric)",
              choices=ALIGN_MODES),
    # --- outputs (restart) ---
    ParamSpec("fixed_frame", "da3_odom", "Frame of poses, path, odometry and points"),
    ParamSpec("points_qos", "reliable", "QoS of ~/points and ~/<camera>/depth_colored",
              choices=("reliable", "best_effort")),
    ParamSpec("publish_threads", 2, "Threads sending the images and clouds, each topic always on the "
              "same one (its messages stay in order) and the GIL released while DDS copies them; 0: the "
              "publish thread sends them itself, one after the other", lo=0, hi=16),
    ParamSpec("diagnostics_period_s", 1.0, "Period of /diagnostics", lo=0.05, hi=60.0),
    ParamSpec("autostart", True, "Configure and activate at start (no lifecycle manager needed)"),
    # --- dynamic: take effect on the next window ---
    ParamSpec("queue_policy", _PIPE.queue_policy, "What to drop when the inference queue is full",
              dynamic=True, choices=QUEUE_POLICIES),
    ParamSpec("conf_threshold", _PIPE.conf_threshold, "Minimum confidence of published points (DA3: >= 1)",
              dynamic=True, lo=0.0, hi=UNBOUNDED),
    ParamSpec("min_depth_m", _PIPE.min_depth_m, "Nearest published point (model units when relative)",
              dynamic=True, lo=0.0, hi=UNBOUNDED),
    ParamSpec("max_depth_m", 0.0, "Farthest published point, 0: no limit (model units when relative)",
              dynamic=True, lo=0.0, hi=UNBOUNDED),
    ParamSpec("voxel_size_m", _PIPE.voxel_size_m, "Voxel downsampling of ~/points (0: off)", dynamic=True,
              lo=0.0, hi=UNBOUNDED),
    ParamSpec("cloud_pixel_step", _PIPE.cloud_pixel_step, "~/points uses every k-th pixel of each view in "
              "both directions (4: 19,200 points of a 640x480 view; 1: all)", dynamic=True, lo=1, hi=64),
    ParamSpec("max_points", _PIPE.max_points, "Cap on points per ~/points message", dynamic=True,
              lo=1, hi=100_000_000),
    ParamSpec("publish_all_views", _PIPE.publish_all_views,
              "Republish every view of every window (not only new ones)", dynamic=True),
    ParamSpec("pose_check", _PIPE.pose_check, "Hold windows whose images did not change (static) or "
              "whose motion jumps: their motion is not chained (counted in /diagnostics pose_held.*)",
              dynamic=True),
    ParamSpec("static_max_shift_px", _PIPE.static_max_shift_px, "A camera is static while its image "
              "shifts less than this (phase correlation, source pixels) from the last chained one",
              dynamic=True, lo=0.0, hi=UNBOUNDED),
    ParamSpec("static_max_change", _PIPE.static_max_change, "... and changes less than this (mean "
              "absolute difference of blurred, normalised thumbnails)", dynamic=True, lo=0.0, hi=UNBOUNDED),
    ParamSpec("pose_jump_deg", _PIPE.pose_jump_deg, "A view turning more than this from its camera's "
              "previous one, or a window disagreeing this much with the frames it shares, is a jump (held)",
              dynamic=True, lo=0.001, hi=360.0),
    ParamSpec("pose_jump_depth_ratio", _PIPE.pose_jump_depth_ratio, "A view moving more than this many "
              "median depths from its camera's previous one (or a window disagreeing that much) is a jump "
              "(held)", dynamic=True, lo=0.001, hi=UNBOUNDED),
    ParamSpec("publish.depth", True, "Publish ~/<camera>/depth", dynamic=True),
    ParamSpec("publish.confidence", True, "Publish ~/<camera>/confidence", dynamic=True),
    ParamSpec("publish.camera_info", True, "Publish ~/<camera>/camera_info", dynamic=True),
    ParamSpec("publish.depth_colored", True, "Publish ~/<camera>/depth_colored", dynamic=True),
    ParamSpec("publish.pose", True, "Publish ~/<camera>/pose", dynamic=True),
    ParamSpec("publish.points", True, "Publish ~/points", dynamic=True),
    ParamSpec("publish.odometry", True, "Publish ~/odometry", dynamic=True),
    ParamSpec("publish.path", True, "Publish ~/path", dynamic=True),
    ParamSpec("publish.tf", True, "Broadcast TF fixed_frame -> optical frames (needs tf2_ros)",
              dynamic=True),
    ParamSpec("depth_colored_range", [0.0, 0.0], "Colormap range [near, far]; [0, 0]: per image",
              dynamic=True, lo=0.0, hi=UNBOUNDED, array_of=float),
    ParamSpec("path_max_length", 10000, "Poses kept in ~/path", dynamic=True, lo=1, hi=10_000_000),
    ParamSpec("path_period_s", 1.0, "~/path is sent at most this often, newest pose included "
              "(0: with every pose; a long path costs ~20 us a pose to send)", dynamic=True,
              lo=0.0, hi=3600.0),
    ParamSpec("stale_input_s", 2.0, "A camera silent this long is reported stale", dynamic=True,
              lo=0.01, hi=3600.0),
    ParamSpec("time_jump_reset_s", 1.0, "Stamps going back more than this reset the pipeline "
              "(bag loop); smaller jumps drop the frame", dynamic=True, lo=0.0, hi=UNBOUNDED),
    ParamSpec("log_throttle_s", 5.0, "Throttle period of repeated warnings, per kind of message",
              dynamic=True, lo=0.0, hi=3600.0),
)

#: Per-camera parameters; the name is prefixed with ``camera.<name>.``.
CAMERA_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("image_topic", "{camera}/image_raw", "Image topic (relative names are remappable)"),
    ParamSpec("camera_info_topic", "", "CameraInfo topic ('' : intrinsics estimated)"),
    ParamSpec("frame_id", "", "Optical frame id override ('': input header, else <camera>_optical_frame)"),
    ParamSpec("transport", "raw", "raw (sensor_msgs/Image) or compressed (CompressedImage)",
              choices=("raw", "compressed")),
    ParamSpec("extrinsics", [], "Calibrated pose of this camera's optical frame in a common rig frame, "
              "[x, y, z, qx, qy, qz, qw] (metres; as tf2_echo prints it); []: unknown. With two or more "
              "cameras calibrated, each window's relative poses are the calibrated ones (and in metres)",
              array_of=float),
)

SPEC_BY_NAME = {s.name: s for s in SPECS}
#: Parameters declared only by a feature that needs them (``truth.*`` by the test-aid stand-in,
#: :mod:`da3_ros.ros.truth_topics`); validated like the others once declared.
EXTRA_SPECS: dict[str, ParamSpec] = {}
#: Parameters that map one-to-one onto PipelineConfig fields.
PIPELINE_FIELDS = tuple(f.name for f in fields(PipelineConfig)
                        if f.name in SPEC_BY_NAME and f.name not in ("mode", "cameras"))
#: Of those, the ones a running pipeline picks up (the dynamic parameters).
DYNAMIC_PIPELINE_FIELDS = tuple(name for name in PIPELINE_FIELDS if SPEC_BY_NAME[name].dynamic)


def camera_param(camera: str, key: str) -> str:
    """Full parameter name of a per-camera setting, e.g. ``camera.front.image_topic``."""
    return f"camera.{camera}.{key}"


@dataclass
class CameraSettings:
    """One camera's input settings (topics are relative unless they start with '/')."""

    name: str
    image_topic: str
    camera_info_topic: str
    frame_id: str
    transport: str
    extrinsics: list[float] = field(default_factory=list)


@dataclass
class NodeSettings:
    """All parameter values, read at configure time (dynamic ones refreshed on change)."""

    values: dict[str, Any]
    cameras: list[CameraSettings] = field(default_factory=list)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def mode(self) -> str:
        """Windowing mode with 'auto' resolved."""
        mode = self.values["mode"]
        if mode == "auto":
            return "multicam" if len(self.cameras) > 1 else "temporal"
        return mode


def pipeline_config(settings: NodeSettings) -> PipelineConfig:
    """The core PipelineConfig for these parameter values."""
    fields_ = PipelineConfig.normalised({name: settings[name] for name in PIPELINE_FIELDS})
    return PipelineConfig(mode=settings.mode, cameras=[c.name for c in settings.cameras],
                          rig_extrinsics={c.name: tuple(c.extrinsics) for c in settings.cameras},
                          **fields_, **colorize_fields(settings.values))


def colorize_fields(values: dict) -> dict:
    """PipelineConfig's colourisation fields from ``publish.depth_colored`` / ``depth_colored_range``."""
    return {"colorize": bool(values["publish.depth_colored"]),
            "colorize_range": tuple(float(v) for v in values["depth_colored_range"])}


def spec_for(name: str) -> ParamSpec | None:
    """The spec of a parameter name (node-wide, ``camera.<name>.<key>`` or an extra one), or None."""
    return SPEC_BY_NAME.get(name) or _camera_spec(name) or EXTRA_SPECS.get(name)


def needs_restart(name: str) -> bool:
    """True for a parameter of the table that is read at configure only (not dynamic)."""
    spec = spec_for(name)
    return spec is not None and not spec.dynamic


def plain_value(value: Any) -> Any:
    """Parameter arrays arrive as array.array / numpy; hand out plain lists."""
    if value is not None and not isinstance(value, str | bool | int | float):
        return list(value)
    return value


def check_values(values: dict[str, Any], names: Iterable[str] | None = None) -> str | None:
    """Why ``values`` (name -> value, merged over the current ones) are invalid, or None.

    Checks what descriptors cannot: string choices and ``ParamSpec.check``, array element ranges
    (for ``names``, the parameters being set; default all of ``values``) and relations between
    parameters (over all ``values``). Types and scalar ranges are enforced by rclpy.
    """
    for name in values if names is None else names:
        spec = spec_for(name)
        if spec is None or name not in values:
            continue
        value = plain_value(values[name])
        if spec.check is not None and spec.check(value):
            return spec.check(value)
        if spec.choices and value not in spec.choices:
            return f"{name}={value!r} is not one of {', '.join(spec.choices)}"
        if spec.array_of is not None and spec.lo is not None:
            bad = [v for v in value if not (spec.lo <= v <= spec.hi) or
                   (isinstance(v, float) and math.isnan(v))]
            if bad:
                return f"{name}: elements {bad} outside [{spec.lo}, {spec.hi}]"
    return _check_relations(values)


def _camera_spec(name: str) -> ParamSpec | None:
    parts = name.split(".")
    if len(parts) == 3 and parts[0] == "camera":
        return next((s for s in CAMERA_SPECS if s.name == parts[2]), None)
    return None


def _check_relations(v: dict[str, Any]) -> str | None:
    if v.get("inference_process") == "on" and v.get("model") == "truth":
        return ("inference_process=on cannot run model truth (it reads ROS topics in the node): "
                "use auto or off")
    if 0 < v.get("process_res", 0) < 28:
        return f"process_res ({v['process_res']}) must be 0 (the model's recommendation) or at least 28"
    if v.get("max_depth_m") and not v.get("min_depth_m", 0.0) < v["max_depth_m"]:
        return f"min_depth_m ({v['min_depth_m']}) must be below max_depth_m ({v['max_depth_m']})"
    rng = v.get("depth_colored_range")
    if rng is not None and (len(rng) != 2 or (any(rng) and not rng[0] < rng[1])):
        return f"depth_colored_range must be [near, far] with near < far, or [0, 0]; got {list(rng)}"
    cams = v.get("cameras")
    if cams is not None:
        if not cams:
            return "cameras must name at least one camera"
        if len(set(cams)) != len(cams):
            return f"cameras has duplicates: {list(cams)}"
        bad = [c for c in cams if not c or not all(ch.isalnum() or ch == "_" for ch in c)
               or c[0].isdigit()]
        if bad:
            return f"camera names must be valid topic tokens ([A-Za-z_][A-Za-z0-9_]*): {bad}"
    for name, value in v.items():
        if name.startswith("camera.") and name.endswith(".extrinsics") and value is not None and len(value):
            try:
                pose_from_vector(value)
            except ValueError as exc:
                return f"{name}: {exc}"
    if "dilations" in v and not v["dilations"]:
        return "dilations must hold at least one value"
    if v.get("mode") == "temporal" and cams is not None and len(cams) > 1:
        return "mode temporal takes one camera; use multicam (or auto) for a rig"
    return None
