"""``da3_node``: the managed (lifecycle) ROS 2 node over the core pipeline.

Lifecycle:

- configure: read and validate parameters, create output publishers, /diagnostics and timers;
- activate: load the model, warm it up with a dummy window, start the inference worker,
  subscribe to the cameras;
- deactivate: unsubscribe, stop the worker, release the model and GPU memory;
- cleanup / shutdown: destroy publishers and timers.

With ``autostart`` (default) the node configures and activates itself, so
``da3_node --ros-args --params-file config/da3.yaml`` just runs; a lifecycle
manager (launch_ros ``LifecycleNode``, nav2 lifecycle manager) can set it false.

Threads (all created here):

- the executor thread (:func:`main` spins a ``SingleThreadedExecutor``): the timers
  (``/diagnostics``, the ``~/path`` flush, the release of images held for a first CameraInfo),
  parameter and lifecycle services, and with ``input_thread`` off the cameras' callbacks;
- the camera thread (``input_thread``, default on: :class:`~da3_ros.ros.intake.SubscriptionThread`,
  started with the subscriptions at activate): image and CameraInfo callbacks (decode, check,
  submit: they never wait on inference);
- the inference worker (:class:`~da3_ros.core.pipeline.AsyncPipeline`, started in
  :meth:`Da3Node._start_pipeline`): windows and the network; with ``finish_thread`` (default
  on) its finishing thread (:class:`~da3_ros.core.finishing.FinishingThread`) chains each window,
  builds its cloud and colours beside the next network and hands the result to the publish
  thread. With ``inference_process`` on (the CUDA default) the worker
  runs in an inference process instead (:class:`~da3_ros.inference.process_pipeline.ProcessPipeline`,
  started by :meth:`Da3Node._load_predictor`; the model loads there), and a receiver thread
  here hands its results to
- the publish thread (:class:`~da3_ros.core.handoff.HandoffThread`, started there too):
  builds and sends the messages while the worker runs the next window, the images and clouds
  through ``publish_threads`` publishing threads (:class:`~da3_ros.ros.publish_pool.PublishPool`,
  created with the publishers at configure).

Signals: SIGINT and SIGTERM are handled by :mod:`da3_ros.ros.stopping`, not by rclpy, so the
context stays valid until :func:`main` has torn the node down (a clean exit 0 at any moment).

Lock order (a thread holding one may take those after it, never before):
``CameraInputs`` hold lock -> ``Da3Node._lock`` (which pipeline is current) -> the pipeline's
lock -> ``NodeDiagnostics`` lock. ``OutputPublishers``' path lock and the publish thread's
hand-over lock are taken alone.
Topics, frames and parameters: see :mod:`da3_ros.ros.publishers`, :mod:`da3_ros.ros.inputs`
and :mod:`da3_ros.ros.parameters`.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions

from da3_ros.core.config import PipelineConfig
from da3_ros.core.handoff import HandoffThread
from da3_ros.core.rig import RigCalibration
from da3_ros.inference.process_pipeline import ProcessPipeline, use_process
from da3_ros.inference.settings import InferenceSettings
from da3_ros.inference.worker_process import runtime_state
from da3_ros.ros import memtrace
from da3_ros.ros.diagnostics import NodeDiagnostics
from da3_ros.ros.inputs import CameraInputs, input_qos
from da3_ros.ros.logs import RosLogHandler, Throttle, message_kind
from da3_ros.ros.node_parameters import (
    coercing_callback,
    declare_all,
    read_settings,
    unknown_parameter_warnings,
    validation_callback,
)
from da3_ros.ros.overrides import init_error_hint, quote_cli_overrides
from da3_ros.ros.parameters import (
    DYNAMIC_PIPELINE_FIELDS,
    NodeSettings,
    check_values,
    colorize_fields,
    pipeline_config,
    spec_for,
)
from da3_ros.ros.publishers import OutputPublishers
from da3_ros.ros.stopping import SIGNALS, StopRequested

if TYPE_CHECKING:
    from da3_ros.core.pipeline import AsyncPipeline

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
#: How often (at most) images held for a first CameraInfo are checked against ``camera_info_wait_s``.
HELD_CHECK_PERIOD_S = 0.25
#: How often the spinning main thread looks for a stop signal, in seconds (Python runs signal
#: handlers between bytecodes only, never while the executor blocks in rcl's wait).
STOP_POLL_S = 0.1


def _logs_exceptions(transition):
    """Log a transition callback's exception (rclpy turns it into a silent ERROR otherwise).

    After a stop signal an exception is the signal cutting the transition short: it leaves as
    :class:`StopRequested`, unlogged.
    """

    @functools.wraps(transition)
    def wrapper(self, state):
        try:
            return transition(self, state)
        except Exception as exc:
            if SIGNALS.requested:
                raise StopRequested(SIGNALS.signum) from exc
            self.get_logger().error(f"{transition.__name__} raised {type(exc).__name__}: {exc}\n"
                                    + traceback.format_exc())
            raise

    return wrapper


class Da3Node(LifecycleNode):
    """The DA3 depth / pose / point-cloud node (see module docstring)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("da3_node", **kwargs)
        self.state_label = "unconfigured"  # lifecycle state, kept by the transition callbacks
        self.add_pre_set_parameters_callback(coercing_callback)
        declare_all(self)
        self.add_on_set_parameters_callback(
            validation_callback(self, lambda: self.state_label == "unconfigured"))
        self.add_post_set_parameters_callback(self._apply_dynamic)
        for warning in unknown_parameter_warnings(self):
            self.get_logger().warning(warning)
        self.settings: NodeSettings | None = None
        self.outputs: OutputPublishers | None = None
        self.inputs: CameraInputs | None = None
        self.pipeline: AsyncPipeline | None = None
        self._publisher: HandoffThread | None = None
        self.predictor = None
        self.truth_topics = None
        self.diag: NodeDiagnostics | None = None
        self._diag_pub = None
        self._own_timers: dict[str, object] = {}
        self._generation = 0  # which pipeline's results are wanted (guarded by _lock)
        self._lock = threading.RLock()
        self.log_throttle = Throttle(5.0)  # the node's repeated errors, per kind of message

    # ----------------------------------------------------------------- lifecycle
    @_logs_exceptions
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read and validate parameters; create publishers, diagnostics and timers."""
        settings = read_settings(self)
        reason = check_values(settings.values) or self._device_problem(settings)
        if reason:
            self.get_logger().error(f"invalid parameters: {reason}")
            return FAILURE
        self.settings = settings
        cams = [c.name for c in settings.cameras]
        self.outputs = OutputPublishers(self, cams, settings["fixed_frame"],
                                        heavy_best_effort=settings["points_qos"] == "best_effort",
                                        on_published=self._on_view_published,
                                        publish_threads=settings["publish_threads"],
                                        on_error=self._on_publish_error)
        self.diag = NodeDiagnostics(f"{self.get_fully_qualified_name()}: pipeline", cams,
                                    settings["stale_input_s"])
        self.diag.info.update({"model": settings["model"], "mode": settings.mode})
        self._apply_dynamic([self.get_parameter_or(n) for n in settings.values])
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._set_timer("diagnostics", settings["diagnostics_period_s"], self._publish_diagnostics)
        self.get_logger().info(f"configured: cameras {cams}, mode {settings.mode}, "
                               f"fixed frame {settings['fixed_frame']}")
        self.state_label = "inactive"
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
                                   camera_info_wait_s=float(s["camera_info_wait_s"]),
                                   on_no_intrinsics=self.diag.on_no_intrinsics,
                                   uses_intrinsics=self._uses_intrinsics(),
                                   max_input_pixels=int(s["max_input_pixels"]),
                                   own_thread=bool(s["input_thread"]))
        # every timer wakes the executor: this one only runs while images may wait for CameraInfo
        wait_s = float(s["camera_info_wait_s"]) if self._uses_intrinsics() else 0.0
        self._set_timer("held_frames", min(HELD_CHECK_PERIOD_S, wait_s / 4) if wait_s > 0 else 0.0,
                        self._release_held_frames)
        if self.truth_topics is not None:
            self.truth_topics.intrinsics_source = self.inputs.intrinsics
        topics = "; ".join(f"{c.name}: {', '.join(self.inputs.topics[c.name])} ({c.transport})"
                           for c in s.cameras)
        self.get_logger().info(f"active; subscribed to {topics}")
        self.state_label = "active"
        return ret

    @_logs_exceptions
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe, stop the worker, release the model and GPU memory."""
        self._stop()
        self.get_logger().info("deactivated; model released")
        self.state_label = "inactive"
        return super().on_deactivate(state)

    @_logs_exceptions
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy publishers and timers."""
        self._destroy_outputs()
        self.state_label = "unconfigured"
        return super().on_cleanup(state)

    @_logs_exceptions
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything, whatever the state."""
        self._stop()
        self._destroy_outputs()
        self.state_label = "finalized"
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything; the node goes back to unconfigured."""
        self.get_logger().error(f"lifecycle error in state {state.label}; releasing resources")
        self._stop()
        self._destroy_outputs()
        self.state_label = "unconfigured"
        return SUCCESS

    # ----------------------------------------------------------------- model and pipeline
    def _load_predictor(self, qos) -> None:
        s = self.settings
        if s["model"] == "truth":
            from da3_ros.ros.truth_topics import build_truth  # TEST AID, never on a robot

            self.get_logger().warning("model 'truth': TEST AID ground-truth stand-in, not a network")
            self.predictor, info, self.truth_topics = build_truth(self, s, qos)
        else:
            with SIGNALS.interruptible():  # a stop signal cuts loading, compiling and warm-up short
                inference = InferenceSettings.from_mapping(s.values)
                n = int(s["num_view"]) * (len(s.cameras) if s.mode == "multicam" else 1)
                n = n if inference.warmup else 0
                if use_process(s["inference_process"], s["model"], (s["devices"] or [s["device"]])[0]):
                    # the predictor is the inference process; the pipeline adopts it at start
                    self.predictor = ProcessPipeline(pipeline_config(s), inference, warmup_views=n,
                                                     fixed_frame=s["fixed_frame"])  # it serialises too
                    info = self.predictor.launch()
                    self.get_logger().info(f"inference process {self.predictor.pid} runs the model")
                else:
                    from da3_ros.inference import build  # torch loads here, not at start-up

                    self.predictor, info = build.build_engine(inference, self.get_logger())
                    if n:
                        build.warm_up(self.predictor, n, self.get_logger())
        cfg = pipeline_config(s)
        rig_metric = cfg.mode == "multicam" and RigCalibration(cfg.rig_extrinsics).is_metric(cfg.cameras)
        units = "metric" if info.is_metric else "metric (rig baseline)" if rig_metric else "relative"
        self.diag.info.update({"model": info.name, "device": info.device, "dtype": info.dtype,
                               "attention_backend": info.attention_backend, "accelerate": info.accelerate,
                               "depth_units": units})

    @staticmethod
    def _device_problem(settings: NodeSettings) -> str | None:
        """Why ``device`` (or a ``devices`` entry) cannot run the model on this machine, or None."""
        asked = list(settings["devices"] or []) or [settings["device"]]
        gpus = [str(d) for d in asked if str(d).startswith("cuda")]
        if settings["model"] == "truth" or not gpus:
            return None
        from da3_ros.inference.build import device_problem  # torch: only when a GPU is asked for

        return next((p for p in map(device_problem, gpus) if p), None)

    def _uses_intrinsics(self) -> bool:
        """Whether CameraInfo intrinsics are used (then images wait for a first one, see inputs)."""
        s = self.settings
        return bool(s["model"] == "truth" or s["condition_on_intrinsics"] or s["condition_on_poses"])

    def _release_predictor(self) -> None:
        if self.truth_topics is not None:
            self.truth_topics.destroy()
            self.truth_topics = None
        predictor, self.predictor = self.predictor, None
        if isinstance(predictor, ProcessPipeline):
            predictor.close(timeout_s=5.0, drain=False)  # ends the process (no-op once closed)
        elif predictor is not None and self.settings["model"] != "truth":
            from da3_ros.inference.build import release

            release(predictor)

    def _start_pipeline(self) -> None:
        """Create the publish thread and the inference worker for the loaded predictor; start both."""
        from da3_ros.core.pipeline import AsyncPipeline

        with self._lock:
            self._generation += 1
            gen = self._generation
            self._publisher = HandoffThread(lambda r: self._on_result(gen, r), self._on_publish_error)
            self._publisher.start()
            if isinstance(self.predictor, ProcessPipeline):  # runs since _load_predictor
                self.pipeline = self.predictor
                self.pipeline.on_result = self._publisher.submit
            else:
                self.pipeline = AsyncPipeline(pipeline_config(self.settings), self.predictor,
                                              on_result=self._publisher.submit)
            self.pipeline.start()

    def _stop(self) -> None:
        if self.inputs is not None:
            self.inputs.destroy()
            self.inputs = None
        with self._lock:
            pipeline, publisher = self.pipeline, self._publisher
            self.pipeline = self._publisher = None
            self._generation += 1
        if pipeline is not None:
            # the worker may wait on a full hand-over: stop the publisher first (results of a
            # stopping node are not published), then the worker (waiting frames drop as "closed")
            publisher.close(timeout_s=5.0, drain=False)
            pipeline.close(timeout_s=5.0, drain=False)
            if self.diag is not None:
                self.diag.retire_pipeline(pipeline.stats.as_dict())
            del pipeline  # it references the predictor: drop it before releasing the model
        self._release_predictor()

    def _destroy_outputs(self) -> None:
        if self.outputs is not None:
            self.outputs.destroy()
            self.outputs = None
        for timer in self._own_timers.values():
            self.destroy_timer(timer)
        self._own_timers.clear()
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None

    def _set_timer(self, name: str, period_s: float, callback) -> None:
        """(Re)create the named timer with ``period_s``; a period of 0 removes it."""
        old = self._own_timers.pop(name, None)
        if old is not None:
            self.destroy_timer(old)
        if period_s > 0:
            self._own_timers[name] = self.create_timer(period_s, callback)

    def _submit(self, frame) -> None:
        with self._lock:
            if self.pipeline is not None:
                self.pipeline.submit(frame)

    def _on_time_jump(self, camera: str) -> None:
        """Stamps went back (bag loop): restart windows, chaining, path and stamp history."""
        with self._lock:
            if self.pipeline is not None:
                self.pipeline.reset("time_jump_reset")
            self.inputs.reset_stamps()
            self.outputs.reset()
        self.diag.on_bad_input(camera, "time_jump_reset")

    # ----------------------------------------------------------------- results (publish thread)
    def _on_result(self, generation: int, result) -> None:
        with self._lock:
            outputs = self.outputs if generation == self._generation else None
        if outputs is None:
            return  # a result of a pipeline stopped meanwhile
        t0 = time.perf_counter()
        outputs.publish_result(result)
        if self.diag is not None:
            self.diag.on_window_published(time.perf_counter() - t0)

    def _on_publish_error(self, exc: BaseException) -> None:
        what = f"{type(exc).__name__}: {exc}"
        if self.diag is not None:
            self.diag.on_publish_error(what)
        self._log_throttled(f"publishing failed: {what}")

    def _on_view_published(self, stamp_ns: int) -> None:
        if self.diag is not None:
            self.diag.on_published((self.get_clock().now().nanoseconds - stamp_ns) * 1e-9)

    def _log_throttled(self, msg: str) -> None:
        if self.log_throttle.ready(message_kind(msg)):
            self.get_logger().error(msg + " (repeats are throttled)")

    # ----------------------------------------------------------------- parameters and timers
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
            if "path_period_s" in changed:
                self._set_timer("path", float(s["path_period_s"]), self.outputs.publish_path_if_due)
        if self.diag is not None:
            self.diag.stale_input_s = float(s["stale_input_s"])
        self.log_throttle.period_s = float(s["log_throttle_s"])
        if self.inputs is not None:
            self.inputs.time_jump_reset_s = float(s["time_jump_reset_s"])
            self.inputs.throttle.period_s = float(s["log_throttle_s"])
            self.inputs.max_input_pixels = int(s["max_input_pixels"])
        updates = PipelineConfig.normalised({k: s[k] for k in DYNAMIC_PIPELINE_FIELDS if k in changed})
        if {"publish.depth_colored", "depth_colored_range"} & changed.keys():
            updates.update(colorize_fields(s))
        with self._lock:
            if updates and self.pipeline is not None:
                self.pipeline.update_config(updates)

    def _release_held_frames(self) -> None:
        """Timer: images waiting too long for a first CameraInfo go on without intrinsics."""
        inputs = self.inputs
        if inputs is not None:
            inputs.check_held()

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None or self.diag is None:
            return
        pipeline = self.pipeline
        stats = pipeline.stats.as_dict() if pipeline is not None else None
        if isinstance(pipeline, ProcessPipeline):  # the inference process reports its own
            runtime = pipeline.runtime
        else:
            runtime = runtime_state(self.predictor) if self.predictor is not None else {}
        compiling, gpu = runtime.get("compile"), runtime.get("gpu")
        if compiling is not None:  # accelerate auto: what the background compile is doing
            self.diag.info["accelerate"] = f"background: {compiling}"
        msg = self.diag.build(self.state_label, stats, gpu, self.get_clock().now().to_msg())
        self._diag_pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    """Console script ``da3_node``: spin the node until SIGINT/SIGTERM; exit 0 on a clean stop.

    Returns 1 when the parameters are invalid or autostart fails. A signal at any point (start-up,
    model loading, warm-up, while a window runs or publishes) is a clean stop with exit 0: rclpy
    runs without its own signal handlers, :mod:`da3_ros.ros.stopping` records the signal and cuts
    a start-up step short, and the node is torn down in order while the context is still valid.
    """
    installed_here = not SIGNALS.installed
    SIGNALS.install()
    node, executor, log_handler, code, initialised = None, None, None, 0, False
    trace = memtrace.start_from_env()  # DEBUG aid (DA3_MEMTRACE); None normally
    try:
        with SIGNALS.interruptible():
            argv = quote_cli_overrides(sys.argv if args is None else args, spec_for)
            rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
            initialised = True
            executor = SingleThreadedExecutor()
            node = Da3Node()
            log_handler = _route_package_logs(node)
            executor.add_node(node)
            if node.get_parameter("autostart").value and not _autostart(node):
                code = 1
        if code == 0:
            _spin(executor)
    except (StopRequested, ExternalShutdownException):
        pass
    except Exception as exc:  # noqa: BLE001 - e.g. an out-of-range value in the params file
        hint = "" if initialised else init_error_hint(str(exc))
        print(f"da3_node: {type(exc).__name__}: {exc}" + (f"\n  hint: {hint}" if hint else ""),
              file=sys.stderr)
        code = 1
    finally:
        _teardown(node, executor, log_handler)
        if trace is not None:
            trace.stop()
        if installed_here:
            SIGNALS.restore()
    return code


def _spin(executor: SingleThreadedExecutor) -> None:
    """Run callbacks until a stop signal (looked for every :data:`STOP_POLL_S`) or an rclpy shutdown."""
    while rclpy.ok() and not SIGNALS.requested:
        executor.spin_once(timeout_sec=STOP_POLL_S)


def _route_package_logs(node: Da3Node) -> RosLogHandler:
    """Send the package's Python ``logging`` records (core, model, inference) to the node's logger."""
    handler = RosLogHandler(node, node.log_throttle)
    package_log = logging.getLogger("da3_ros")
    package_log.addHandler(handler)
    package_log.setLevel(logging.INFO)
    package_log.propagate = False
    return handler


def _teardown(node: Da3Node | None, executor: SingleThreadedExecutor | None,
              log_handler: RosLogHandler | None) -> None:
    """Stop and destroy the node, then shut rclpy down (a signal now is only recorded).

    The order keeps every publisher valid while anything may still use it: inputs, worker and
    publish thread stop first, the package's log records stop going to the node before it is
    destroyed, and the context is shut down last.
    """
    if node is not None:
        node._stop()
        if log_handler is not None:
            logging.getLogger("da3_ros").removeHandler(log_handler)
        if executor is not None:
            executor.remove_node(node)
        node.destroy_node()
    if executor is not None:
        executor.shutdown()
    rclpy.try_shutdown()


def _autostart(node: Da3Node) -> bool:
    """Configure and activate; False (logged) when either transition fails.

    True when a stop signal came meanwhile: the caller then stops cleanly.
    """
    for name, trigger in (("configure", node.trigger_configure), ("activate", node.trigger_activate)):
        if SIGNALS.requested:
            return True
        if trigger() != SUCCESS and not SIGNALS.requested:
            node.get_logger().fatal(f"autostart: {name} failed; exiting (see the errors above)")
            return False
    return True


if __name__ == "__main__":
    sys.exit(main())
