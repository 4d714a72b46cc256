"""``da3_node``: the managed (lifecycle) ROS 2 node over the core pipeline.

Lifecycle:

- configure: read and validate parameters, create output publishers and /diagnostics;
- activate: load the model, warm it up with a dummy window, start the pipeline worker,
  subscribe to the cameras;
- deactivate: unsubscribe, stop the worker, release the model and GPU memory;
- cleanup / shutdown: destroy publishers.

With ``autostart`` (default) the node configures and activates itself, so
``da3_node --ros-args --params-file config/da3.yaml`` just runs; a lifecycle
manager (launch_ros ``LifecycleNode``, nav2 lifecycle manager) can set it false.

Threads: a ``MultiThreadedExecutor`` runs the image callbacks (one callback group
per camera; they only decode and enqueue), the timers and the services; the
``AsyncPipeline`` worker thread runs inference and publishes the results.
Topics, frames and parameters: see :mod:`da3_ros.ros.publishers`,
:mod:`da3_ros.ros.inputs` and :mod:`da3_ros.ros.parameters`.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import threading
import traceback
from typing import TYPE_CHECKING

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from da3_ros.ros import memtrace, predictors
from da3_ros.ros.diagnostics import NodeDiagnostics, gpu_memory
from da3_ros.ros.inputs import CameraInputs, input_qos
from da3_ros.ros.logs import RosLogHandler, Throttle
from da3_ros.ros.parameters import (
    SPEC_BY_NAME,
    NodeSettings,
    check_values,
    declare_all,
    read_settings,
    validation_callback,
)
from da3_ros.ros.publishers import OutputPublishers

if TYPE_CHECKING:  # the core pulls in torch: imported when first needed, so start-up stays interruptible
    from da3_ros.core.pipeline import AsyncPipeline, PipelineConfig

#: Parameters that map one-to-one onto PipelineConfig fields.
PIPELINE_FIELDS = ("num_view", "stride", "slop_s", "keyframe_min_dt_s", "keyframe_min_change", "queue_size",
                   "queue_policy", "conf_threshold", "min_depth_m", "max_depth_m", "voxel_size_m",
                   "max_points", "align", "publish_all_views")
#: Of those, the ones a running pipeline picks up (the dynamic parameters).
DYNAMIC_PIPELINE_FIELDS = tuple(name for name in PIPELINE_FIELDS if SPEC_BY_NAME[name].dynamic)
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


def _logs_exceptions(transition):
    """Log a transition callback's exception (rclpy turns it into a silent ERROR otherwise)."""

    @functools.wraps(transition)
    def wrapper(self, state):
        try:
            return transition(self, state)
        except Exception as exc:
            self.get_logger().error(f"{transition.__name__} raised {type(exc).__name__}: {exc}\n"
                                    + traceback.format_exc())
            raise

    return wrapper


def pipeline_config(settings: NodeSettings) -> PipelineConfig:
    """The core PipelineConfig for these parameter values."""
    from da3_ros.core.pipeline import PipelineConfig

    fields = {name: settings[name] for name in PIPELINE_FIELDS}
    fields["max_depth_m"] = fields["max_depth_m"] or math.inf  # 0: no limit
    return PipelineConfig(mode=settings.mode, cameras=[c.name for c in settings.cameras],
                          dilations=tuple(int(d) for d in settings["dilations"]), **fields)


def update_pipeline_config(pipeline: AsyncPipeline, updates: dict) -> None:
    """Apply dynamic parameter values to a running pipeline (read by its next window / submit).

    The core reads these config fields at use time, so changing them on the shared
    config object under the pipeline's lock is enough.
    """
    updates = dict(updates)
    if "max_depth_m" in updates:
        updates["max_depth_m"] = updates["max_depth_m"] or math.inf
    with pipeline.pipeline.lock:
        for key, value in updates.items():
            setattr(pipeline.config, key, value)


class Da3Node(LifecycleNode):
    """The DA3 depth / pose / point-cloud node (see module docstring)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("da3_node", **kwargs)
        declare_all(self)
        self.add_on_set_parameters_callback(validation_callback(self))
        self.add_post_set_parameters_callback(self._apply_dynamic)
        self.settings: NodeSettings | None = None
        self.outputs: OutputPublishers | None = None
        self.inputs: CameraInputs | None = None
        self.pipeline: AsyncPipeline | None = None
        self.predictor = None
        self.truth_topics = None
        self.diag: NodeDiagnostics | None = None
        self._device = "cpu"  # the loaded predictor's device (GPU memory in diagnostics)
        self._diag_pub = None
        self._diag_timer = None
        self._generation = 0
        self._lock = threading.RLock()  # guards pipeline swaps (time jumps) against callbacks
        self._throttle = Throttle(5.0)

    # ----------------------------------------------------------------- lifecycle
    @_logs_exceptions
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read and validate parameters; create publishers and diagnostics."""
        settings = read_settings(self)
        reason = check_values(settings.values)
        if reason:
            self.get_logger().error(f"invalid parameters: {reason}")
            return FAILURE
        self.settings = settings
        cams = [c.name for c in settings.cameras]
        self.outputs = OutputPublishers(self, cams, settings["fixed_frame"],
                                        heavy_best_effort=settings["points_qos"] == "best_effort",
                                        on_published=self._on_view_published)
        self.diag = NodeDiagnostics(f"{self.get_fully_qualified_name()}: pipeline", cams,
                                    settings["stale_input_s"])
        self.diag.info.update({"model": settings["model"], "mode": settings.mode})
        self._apply_dynamic([self.get_parameter(n) for n in settings.values])
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(settings["diagnostics_period_s"], self._publish_diagnostics)
        self.get_logger().info(f"configured: cameras {cams}, mode {settings.mode}, "
                               f"fixed frame {settings['fixed_frame']}")
        return super().on_configure(state)

    @_logs_exceptions
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model, warm it up, start the pipeline and subscribe."""
        s = self.settings
        qos = input_qos(s["input_qos"], int(s["input_queue_depth"]))
        try:
            self._load_predictor(qos)
        except Exception as exc:  # noqa: BLE001 - report and stay inactive instead of dying
            self.get_logger().error(f"activation failed while loading the model: {type(exc).__name__}: {exc}")
            self.diag.error = f"model load failed: {exc}"
            self._release_predictor()
            return FAILURE
        self.diag.error = ""
        ret = super().on_activate(state)
        self._start_pipeline()
        self.inputs = CameraInputs(self, s.cameras, self._submit, self.diag.on_bad_input, self.diag.on_input,
                                   self._on_time_jump, qos, s["time_jump_reset_s"], s["log_throttle_s"],
                                   camera_info_wait_s=self._camera_info_wait_s(),
                                   on_no_intrinsics=self.diag.on_no_intrinsics)
        if self.truth_topics is not None:
            self.truth_topics.intrinsics_source = self.inputs.intrinsics
        topics = ", ".join(f"{c.name}: {c.image_topic} ({c.transport})" for c in s.cameras)
        self.get_logger().info(f"active; subscribed to {topics}")
        return ret

    @_logs_exceptions
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe, stop the worker, release the model and GPU memory."""
        self._stop()
        self.get_logger().info("deactivated; model released")
        return super().on_deactivate(state)

    @_logs_exceptions
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy publishers and timers."""
        self._destroy_outputs()
        return super().on_cleanup(state)

    @_logs_exceptions
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything, whatever the state."""
        self._stop()
        self._destroy_outputs()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything; the node goes back to unconfigured."""
        self.get_logger().error(f"lifecycle error in state {state.label}; releasing resources")
        self._stop()
        self._destroy_outputs()
        return SUCCESS

    # ----------------------------------------------------------------- model and pipeline
    def _load_predictor(self, qos) -> None:
        s = self.settings
        if s["model"] == "truth":
            self.get_logger().warning("model 'truth': TEST AID ground-truth stand-in, not a network")
            self.predictor, info, self.truth_topics = predictors.build_truth(self, s, qos)
        else:
            self.predictor, info = predictors.build_engine(s, self.get_logger())
            if s["warmup"]:
                n = int(s["num_view"]) * (len(s.cameras) if s.mode == "multicam" else 1)
                predictors.warm_up(self.predictor, n, self.get_logger())
        self.diag.info.update({"model": info.name, "device": info.device, "dtype": info.dtype,
                               "attention_backend": info.attention_backend, "accelerate": info.accelerate,
                               "depth_units": "metric" if info.is_metric else "relative"})
        self._device = info.device

    def _camera_info_wait_s(self) -> float:
        """How long images wait for a first CameraInfo: only when something uses intrinsics."""
        s = self.settings
        uses = s["model"] == "truth" or s["condition_on_intrinsics"] or s["condition_on_poses"]
        return float(s["camera_info_wait_s"]) if uses else 0.0

    def _release_predictor(self) -> None:
        if self.truth_topics is not None:
            self.truth_topics.destroy()
            self.truth_topics = None
        predictor, self.predictor = self.predictor, None
        if predictor is not None:
            predictors.release(predictor)

    def _start_pipeline(self) -> None:
        from da3_ros.core.pipeline import AsyncPipeline

        with self._lock:
            self._generation += 1
            gen = self._generation
            self.pipeline = AsyncPipeline(pipeline_config(self.settings), self.predictor,
                                          on_result=lambda r: self._on_result(gen, r))

    def _retire(self, pipeline, timeout_s: float) -> None:
        """Close a pipeline (its waiting frames count as dropped) and keep its counts in diagnostics."""
        pipeline.close(timeout_s=timeout_s, drain=False)
        if self.diag is not None:
            self.diag.retire_pipeline(pipeline.stats.as_dict())

    def _stop(self) -> None:
        if self.inputs is not None:
            self.inputs.destroy()
            self.inputs = None
        with self._lock:
            pipeline, self.pipeline = self.pipeline, None
            self._generation += 1
        if pipeline is not None:
            self._retire(pipeline, 5.0)
            del pipeline  # it references the predictor: drop it before releasing the model
        self._release_predictor()

    def _destroy_outputs(self) -> None:
        if self.outputs is not None:
            self.outputs.destroy()
            self.outputs = None
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None

    def _submit(self, frame) -> None:
        with self._lock:
            if self.pipeline is not None:
                self.pipeline.submit(frame)

    def _on_time_jump(self, camera: str) -> None:
        """Stamps went back (bag loop): start a fresh pipeline, path and stamp history."""
        with self._lock:
            old = self.pipeline
            self._start_pipeline()
            self.inputs.reset_stamps()
            self.outputs.reset()
            self.diag.on_bad_input(camera, "time_jump_reset")
        if old is not None:  # an in-flight window may take a while: close off the executor thread
            threading.Thread(target=self._retire, args=(old, 30.0), daemon=True).start()

    # ----------------------------------------------------------------- results (worker thread)
    def _on_result(self, generation: int, result) -> None:
        if generation != self._generation or self.outputs is None:
            return  # a result of a pipeline replaced after a time jump
        try:
            self.outputs.publish_result(result)
        except Exception as exc:  # noqa: BLE001 - one bad window must not stop the worker
            self._log_throttled("publish_error", f"publishing window failed: {type(exc).__name__}: {exc}")

    def _on_view_published(self, stamp_ns: int) -> None:
        if self.diag is not None:
            self.diag.on_published((self.get_clock().now().nanoseconds - stamp_ns) * 1e-9)

    def _log_throttled(self, key: str, msg: str) -> None:
        if self._throttle.ready(key):
            self.get_logger().error(msg + " (repeats are throttled)")

    # ----------------------------------------------------------------- parameters and diagnostics
    def _apply_dynamic(self, params) -> None:
        """Post-set callback: push dynamic parameter values into the running objects."""
        if self.settings is None:
            return
        changed = {p.name: p.value for p in params}
        self.settings.values.update({k: v for k, v in changed.items() if k in self.settings.values})
        s = self.settings.values
        if self.outputs is not None:
            for key in vars(self.outputs.toggles):
                setattr(self.outputs.toggles, key, bool(s[f"publish.{key}"]))
            self.outputs.publish_all_views = bool(s["publish_all_views"])
            self.outputs.colored_range = tuple(float(v) for v in s["depth_colored_range"])
            self.outputs.set_path_max_length(int(s["path_max_length"]))
            self.outputs.path_period_s = float(s["path_period_s"])
        if self.diag is not None:
            self.diag.stale_input_s = float(s["stale_input_s"])
        self._throttle.period_s = float(s["log_throttle_s"])
        if self.inputs is not None:
            self.inputs.time_jump_reset_s = float(s["time_jump_reset_s"])
            self.inputs.throttle.period_s = float(s["log_throttle_s"])
        updates = {k: s[k] for k in DYNAMIC_PIPELINE_FIELDS if k in changed}
        with self._lock:
            if updates and self.pipeline is not None:
                update_pipeline_config(self.pipeline, updates)

    def _publish_diagnostics(self) -> None:
        outputs, inputs = self.outputs, self.inputs
        if outputs is not None:  # the newest ~/path poses held back by path_period_s
            outputs.publish_path_if_due()
        if inputs is not None:  # images waiting too long for a first CameraInfo go on without
            inputs.check_held()
        if self._diag_pub is None or self.diag is None:
            return
        pipeline = self.pipeline
        stats = pipeline.stats.as_dict() if pipeline is not None else None
        gpu = gpu_memory(self._device) if self.predictor is not None else None
        msg = self.diag.build(self._state_machine.current_state[1], stats, gpu,
                              self.get_clock().now().to_msg())
        self._diag_pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    """Console script ``da3_node``: spin the node until SIGINT/SIGTERM; exit 0 on a clean stop.

    Returns 1 when the parameters are invalid or autostart fails; a signal at any point of
    start-up (even while the model loads) still ends in a clean exit 0.
    """
    node, code = None, 0
    trace = memtrace.start_from_env()  # DEBUG aid (DA3_MEMTRACE); None normally
    try:
        rclpy.init(args=args)
        executor = MultiThreadedExecutor(num_threads=4)
    except KeyboardInterrupt:
        return 0
    try:
        node = Da3Node()
        package_log = logging.getLogger("da3_ros")
        package_log.addHandler(RosLogHandler(node))
        package_log.setLevel(logging.INFO)
        package_log.propagate = False
        executor.add_node(node)
        if node.get_parameter("autostart").value and not _autostart(node):
            code = 1
        else:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:  # noqa: BLE001 - e.g. an out-of-range value in the params file
        if rclpy.ok():  # otherwise a signal shut the context down mid start-up: a clean stop
            print(f"da3_node: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = 1
    finally:
        if node is not None:
            node._stop()
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
        if trace is not None:
            trace.stop()
    return code


def _autostart(node: Da3Node) -> bool:
    """Configure and activate; False (logged) when either transition fails."""
    for name, trigger in (("configure", node.trigger_configure), ("activate", node.trigger_activate)):
        if not rclpy.ok(context=node.context):
            return True  # interrupted during start-up: spin() returns at once, exit 0
        if trigger() != SUCCESS:
            node.get_logger().fatal(f"autostart: {name} failed; exiting (see the errors above)")
            return False
    return True


if __name__ == "__main__":
    sys.exit(main())
