"""``/diagnostics`` for the node: rates, latency, queue, drops by reason, GPU memory, model.

One ``diagnostic_msgs/DiagnosticStatus`` named ``<fully qualified node name>: pipeline`` per
period, with key/values (all strings, as the message requires):

- ``state``: lifecycle state; ``model``, ``device``, ``dtype``, ``attention_backend``,
  ``accelerate`` (the effective mode), ``depth_units`` (``metric`` = metres, ``relative`` =
  model units);
- ``input_rate_hz.<camera>``, ``input_count.<camera>``, ``input_age_s.<camera>``;
  ``frames_without_intrinsics.<camera>`` (a camera with a CameraInfo topic whose frames went
  on without intrinsics: none arrived yet, see ``camera_info_wait_s``; not a drop);
- ``windows_per_s``, ``windows``, ``frames_processed``, ``views_published``;
- ``latency_mean_s``, ``latency_max_s``: image stamp to publish, on the node's clock
  (sim time under ``use_sim_time``), over the last :data:`LATENCY_VIEWS` published views;
  ``latency_last_s``: the latest view's. All three are ``nan`` only before the first view is
  published (a window slower than the diagnostics period leaves them at their last values);
- ``queue_len``, ``drops_total`` and ``drops.<reason>`` (pipeline and input drops together;
  input drops are ``input_<reason>``, see :mod:`da3_ros.ros.inputs`): images not processed;
- ``events.input_<reason>`` for input problems that drop no image (:data:`INPUT_EVENTS`);
- ``window_errors``, ``last_error``: windows that failed: the predictor raised, or (with the
  inference process) its result could not be handed to the node;
- ``publish_errors``, ``last_publish_error``: messages (or whole windows) the node failed to
  publish; their frames were processed, but what they would have carried is lost;
- ``pose_held.static``, ``pose_held.jump``: windows the pose check held (their motion was not
  chained: :mod:`da3_ros.core.pose_check`), ``last_pose_jump``: why the latest jump was held;
- ``time_ms.<stage>``: milliseconds per window of the worker's stages (``preprocess``,
  ``network`` (up to the device's results), ``postprocess``, ``predict`` (the three), ``align``,
  ``cloud``, ``colour``, ``total``) and of the publish thread (``publish``: one window's
  messages), moving means over about the last ten windows: where a window's time goes;
- ``gc.full_collections``, ``gc.collections``: the garbage collector's runs since the process
  started (every thread stops for a full one; :mod:`da3_ros.ros.gc_watch`);
- ``gpu_mem_allocated_mb``, ``gpu_mem_peak_mb`` when the device is CUDA.

Level: ERROR when the model failed to load, WARN when the node is not active, a
camera is stale, or drops or held pose jumps grew during the last period, else OK.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from da3_ros.core.results import fold_stage_time
from da3_ros.ros.gc_watch import gc_values

# Input problems that drop no image, so they are counted apart from the drops (every image is
# either processed or dropped, once): a CameraInfo of another size (the image goes on without
# its intrinsics), an invalid CameraInfo (that message is ignored), stamps jumping back by more
# than time_jump_reset_s (the pipeline restarts and the image is processed).
INPUT_EVENTS = frozenset({"camera_info_mismatch", "camera_info_invalid", "time_jump_reset"})
#: Published views the latency mean and max are taken over (a count, not a period: a window
#: slower than the diagnostics period must not turn the mean into nan next to a valid last value).
LATENCY_VIEWS = 100


class NodeDiagnostics:
    """Thread-safe counters of the node plus the message builder.

    Args:
        name: status name (``<node>: pipeline``).
        cameras: camera names (for per-camera rates and staleness).
        stale_input_s: a camera silent this long makes the status WARN.
    """

    def __init__(self, name: str, cameras: list[str], stale_input_s: float = 2.0) -> None:
        self.name = name
        self.cameras = list(cameras)
        self.stale_input_s = stale_input_s
        self.info: dict[str, str] = {}
        self.error: str = ""
        self._lock = threading.Lock()
        self._arrivals = {c: deque(maxlen=1000) for c in self.cameras}
        self._counts = dict.fromkeys(self.cameras, 0)
        self._input_drops: dict[str, int] = defaultdict(int)
        self._input_events: dict[str, int] = defaultdict(int)
        # counts of pipelines replaced (time-jump reset) or stopped (deactivate), so the totals
        # keep every image a node instance received
        self._retired: dict = {"processed": 0, "windows": 0, "errors": 0, "dropped": defaultdict(int),
                               "pose_held": defaultdict(int)}
        self._last_jumps = 0
        self._no_intrinsics: dict[str, int] = {}
        self._latencies: deque[float] = deque(maxlen=LATENCY_VIEWS)  # the latest published views'
        self._published = 0
        self._publish_ms: dict[str, float] = {}  # {"publish": moving mean}, once a window is out
        self._publish_errors = 0
        self._last_publish_error = ""
        self._reported_publish_errors = 0
        self._last_drops_total = 0
        self._last_windows: tuple[float, int] | None = None
        self._start = time.monotonic()

    def on_input(self, camera: str, _stamp_ns: int) -> None:
        """Count one received image of ``camera``."""
        with self._lock:
            if camera in self._arrivals:
                self._arrivals[camera].append(time.monotonic())
                self._counts[camera] += 1

    def on_no_intrinsics(self, camera: str) -> None:
        """Count one frame of ``camera`` (which has a CameraInfo topic) processed without intrinsics."""
        with self._lock:
            self._no_intrinsics[camera] = self._no_intrinsics.get(camera, 0) + 1

    def on_bad_input(self, camera: str, reason: str, count: int = 1) -> None:
        """Count ``count`` input problems of ``camera``: dropped images, or events (:data:`INPUT_EVENTS`)."""
        with self._lock:
            counts = self._input_events if reason in INPUT_EVENTS else self._input_drops
            counts[f"input_{reason}"] += count

    def on_published(self, latency_s: float) -> None:
        """Record one published view with its stamp-to-publish latency."""
        with self._lock:
            self._published += 1
            self._latencies.append(latency_s)

    def on_window_published(self, seconds: float) -> None:
        """Record the time the publish thread took for one window's messages."""
        with self._lock:
            fold_stage_time(self._publish_ms, "publish", seconds)

    def on_publish_error(self, what: str) -> None:
        """Count one message (or window) that could not be published, and why."""
        with self._lock:
            self._publish_errors += 1
            self._last_publish_error = what

    def retire_pipeline(self, stats: dict) -> None:
        """Fold a closed pipeline's final ``PipelineStats.as_dict()`` into the running totals."""
        with self._lock:
            for key in ("processed", "windows", "errors"):
                self._retired[key] += int(stats.get(key, 0))
            for group in ("dropped", "pose_held"):
                for reason, count in stats.get(group, {}).items():
                    self._retired[group][reason] += int(count)

    def build(self, state: str, pipeline_stats: dict | None, gpu: dict[str, float] | None,
              stamp) -> DiagnosticArray:
        """The DiagnosticArray for now.

        Args:
            state: lifecycle state label.
            pipeline_stats: ``PipelineStats.as_dict()`` or None when no pipeline runs.
            gpu: ``{"allocated_mb":..., "peak_mb":...}`` or None.
            stamp: builtin_interfaces/Time for the header.
        """
        now = time.monotonic()
        kv: dict[str, str] = {"state": state, **self.info}
        level, problems = DiagnosticStatus.OK, []
        with self._lock:
            for cam in self.cameras:
                arr = self._arrivals[cam]
                recent = [t for t in arr if now - t <= 5.0]
                span = (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
                rate = (len(recent) - 1) / span if span > 0 else 0.0
                age = now - arr[-1] if arr else now - self._start
                kv[f"input_rate_hz.{cam}"] = f"{rate:.2f}"
                kv[f"input_count.{cam}"] = str(self._counts[cam])
                kv[f"input_age_s.{cam}"] = f"{age:.2f}"
                if cam in self._no_intrinsics:
                    kv[f"frames_without_intrinsics.{cam}"] = str(self._no_intrinsics[cam])
                if age > self.stale_input_s:
                    problems.append(f"{cam} stale ({age:.1f} s)")
            lat = list(self._latencies)
            drops = {k: int(v) for k, v in self._input_drops.items()}
            retired = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self._retired.items()}
            kv.update({f"events.{k}": str(v) for k, v in self._input_events.items()})
            kv["views_published"] = str(self._published)
            publish_ms = dict(self._publish_ms)
            kv["publish_errors"] = str(self._publish_errors)
            kv["last_publish_error"] = self._last_publish_error
            if self._publish_errors > self._reported_publish_errors:
                problems.append(f"{self._publish_errors - self._reported_publish_errors} publish error(s): "
                                f"{self._last_publish_error}")
            self._reported_publish_errors = self._publish_errors
        kv["latency_mean_s"] = f"{sum(lat) / len(lat):.4f}" if lat else "nan"
        kv["latency_max_s"] = f"{max(lat):.4f}" if lat else "nan"
        kv["latency_last_s"] = f"{lat[-1]:.4f}" if lat else "nan"
        for key, value in retired["dropped"].items():
            drops[key] = drops.get(key, 0) + value
        if pipeline_stats:
            for key, value in pipeline_stats.get("dropped", {}).items():
                drops[key] = drops.get(key, 0) + int(value)
            windows = retired["windows"] + int(pipeline_stats.get("windows", 0))
            kv["windows"] = str(windows)
            kv["frames_processed"] = str(retired["processed"] + int(pipeline_stats.get("processed", 0)))
            kv["queue_len"] = str(pipeline_stats.get("queue_len", 0))
            kv["windows_per_s"] = f"{self._window_rate(now, windows):.3f}"
            kv["window_errors"] = str(retired["errors"] + int(pipeline_stats.get("errors", 0)))
            kv["last_error"] = str(pipeline_stats.get("last_error", ""))
            held = pipeline_stats.get("pose_held", {})
            for kind in ("static", "jump"):
                kv[f"pose_held.{kind}"] = str(retired["pose_held"].get(kind, 0) + int(held.get(kind, 0)))
            kv["last_pose_jump"] = str(pipeline_stats.get("last_pose_jump", ""))
            kv.update({f"time_ms.{k}": f"{v:.2f}" for k, v in pipeline_stats.get("stage_ms", {}).items()})
            jumps = int(kv["pose_held.jump"])
            if jumps > self._last_jumps:
                problems.append(f"{jumps - self._last_jumps} pose jump(s) held: {kv['last_pose_jump']}")
            self._last_jumps = jumps
        kv.update({f"time_ms.{k}": f"{v:.2f}" for k, v in publish_ms.items()})
        total = sum(drops.values())
        kv["drops_total"] = str(total)
        kv.update({f"drops.{k}": str(v) for k, v in sorted(drops.items())})
        if total > self._last_drops_total:
            problems.append(f"{total - self._last_drops_total} dropped")
        self._last_drops_total = total
        kv.update(gc_values())
        if gpu:
            kv["gpu_mem_allocated_mb"] = f"{gpu['allocated_mb']:.1f}"
            kv["gpu_mem_peak_mb"] = f"{gpu['peak_mb']:.1f}"
        if self.error:
            level, message = DiagnosticStatus.ERROR, self.error
        elif state != "active":
            level, message = DiagnosticStatus.WARN, f"not active ({state})"
        elif problems:
            level, message = DiagnosticStatus.WARN, "; ".join(problems)
        else:
            message = "ok"
        status = DiagnosticStatus(level=level, name=self.name, message=message, hardware_id="da3",
                                  values=[KeyValue(key=k, value=v) for k, v in kv.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = stamp
        return msg

    def _window_rate(self, now: float, windows: int) -> float:
        prev, self._last_windows = self._last_windows, (now, windows)
        if prev is None or now <= prev[0]:
            return 0.0
        return (windows - prev[1]) / (now - prev[0])
