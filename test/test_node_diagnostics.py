"""NodeDiagnostics accounting: drops vs events, and counts kept across pipeline restarts; log throttling."""

import logging

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus

from da3_ros.ros.diagnostics import LATENCY_VIEWS, NodeDiagnostics
from da3_ros.ros.logs import RosLogHandler, Throttle


def _values(diag, stats):
    msg = diag.build("active", stats, None, Time(sec=1))
    return {kv.key: kv.value for kv in msg.status[0].values}


def test_input_problems_that_lose_no_image_are_events_not_drops():
    diag = NodeDiagnostics("n: pipeline", ["camera"])
    diag.on_bad_input("camera", "decode_error")
    diag.on_bad_input("camera", "camera_info_mismatch")
    diag.on_bad_input("camera", "time_jump_reset")
    values = _values(diag, {"processed": 2, "windows": 1, "dropped": {}})
    assert values["drops_total"] == "1" and values["drops.input_decode_error"] == "1"
    assert values["events.input_camera_info_mismatch"] == "1"
    assert values["events.input_time_jump_reset"] == "1"


def test_retired_pipeline_counts_stay_in_the_totals():
    diag = NodeDiagnostics("n: pipeline", ["camera"])
    # the pipeline replaced at a time jump: 10 processed, 3 still waiting when it was closed
    diag.retire_pipeline({"processed": 10, "windows": 4, "errors": 1, "dropped": {"closed": 3}})
    values = _values(diag, {"processed": 5, "windows": 2, "errors": 0, "dropped": {"queue_full": 2}})
    assert values["frames_processed"] == "15"
    assert values["windows"] == "6"
    assert values["window_errors"] == "1"
    assert values["drops.closed"] == "3" and values["drops.queue_full"] == "2"
    assert values["drops_total"] == "5"


def test_latency_mean_stays_defined_when_a_period_publishes_nothing():
    """A window slower than the diagnostics period: mean and max keep the last views' values."""
    diag = NodeDiagnostics("n: pipeline", ["camera"])
    values = _values(diag, None)
    assert values["latency_mean_s"] == values["latency_max_s"] == values["latency_last_s"] == "nan"
    diag.on_published(0.2)
    diag.on_published(0.4)
    keys = ("latency_mean_s", "latency_max_s", "latency_last_s")
    first = _values(diag, None)
    assert tuple(first[k] for k in keys) == ("0.3000", "0.4000", "0.4000")
    again = _values(diag, None)  # nothing published in this period: same values, no nan
    assert tuple(again[k] for k in keys) == ("0.3000", "0.4000", "0.4000")
    for _ in range(LATENCY_VIEWS):
        diag.on_published(1.0)
    values = _values(diag, None)  # the old views have left the window
    assert (values["latency_mean_s"], values["latency_max_s"]) == ("1.0000", "1.0000")


def test_stage_times_say_where_a_window_goes():
    """The worker's stage times (moving means of the pipeline's stats) and the publish thread's."""
    from da3_ros.core.results import STAGE_MEAN_WEIGHT, PipelineStats

    stats = PipelineStats()
    stats.add_stage_times({"network": 0.020, "cloud": 0.004})
    stats.add_stage_times({"network": 0.030, "cloud": 0.004})
    diag = NodeDiagnostics("n: pipeline", ["camera"])
    assert "time_ms.publish" not in _values(diag, stats.as_dict())
    diag.on_window_published(0.005)
    values = _values(diag, stats.as_dict())
    assert values["time_ms.network"] == f"{20.0 + STAGE_MEAN_WEIGHT * 10.0:.2f}"
    assert values["time_ms.cloud"] == "4.00" and values["time_ms.publish"] == "5.00"


def test_held_pose_jumps_are_reported_and_warn_once():
    diag = NodeDiagnostics("n: pipeline", ["camera"])
    diag.on_input("camera", 1)
    diag.retire_pipeline({"processed": 4, "windows": 2, "pose_held": {"static": 2}})
    stats = {"processed": 6, "windows": 3, "dropped": {}, "pose_held": {"static": 1, "jump": 1},
             "last_pose_jump": "[camera] frame 1.000 s turned 170.0 deg from the previous frame"}
    msg = diag.build("active", stats, None, Time(sec=1))
    values = {kv.key: kv.value for kv in msg.status[0].values}
    assert (values["pose_held.static"], values["pose_held.jump"]) == ("3", "1")
    assert values["last_pose_jump"] == stats["last_pose_jump"]
    assert msg.status[0].level == DiagnosticStatus.WARN and "turned 170.0 deg" in msg.status[0].message
    again = diag.build("active", stats, None, Time(sec=2))  # no new jump in this period
    assert again.status[0].level == DiagnosticStatus.OK


def test_publish_errors_are_counted_and_warn_once():
    diag = NodeDiagnostics("n: pipeline", ["camera"])
    diag.on_input("camera", 1)
    stats = {"processed": 8, "windows": 1, "dropped": {}}
    assert _values(diag, stats)["publish_errors"] == "0"
    diag.on_publish_error("RuntimeError: publishing a serialised message on /d failed: rcl error 1")
    msg = diag.build("active", stats, None, Time(sec=1))
    values = {kv.key: kv.value for kv in msg.status[0].values}
    assert values["publish_errors"] == "1" and "rcl error 1" in values["last_publish_error"]
    assert msg.status[0].level == DiagnosticStatus.WARN and "1 publish error(s)" in msg.status[0].message
    assert diag.build("active", stats, None, Time(sec=2)).status[0].level == DiagnosticStatus.OK


def test_a_result_the_inference_process_could_not_send_counts_as_a_window_error():
    from da3_ros.core.config import PipelineConfig
    from da3_ros.core.pipeline import Pipeline
    from da3_ros.inference.worker_process import sender_failed

    pipeline = Pipeline(PipelineConfig(), predictor=object())
    sender_failed(OSError("No space left on device"), [pipeline])
    assert pipeline.stats.errors == 1
    assert "could not be handed to the node: OSError: No space left" in pipeline.stats.last_error
    values = _values(NodeDiagnostics("n: pipeline", ["camera"]), pipeline.stats.as_dict())
    assert values["window_errors"] == "1" and "handed to the node" in values["last_error"]


def test_package_warnings_are_throttled_per_kind_of_message_not_per_template():
    """'window failed: %s' with two different errors: both are logged, a repeat is not."""
    lines = []

    class _Logger:
        def warning(self, text):
            lines.append(text)

    class _Node:
        def get_logger(self):
            return _Logger()

    log = logging.getLogger("da3_ros.test_throttle")
    handler = RosLogHandler(_Node(), Throttle(60.0))
    log.addHandler(handler)
    log.propagate = False
    try:
        for error in ("LookupError: no truth for 12", "ValueError: bad depth",
                      "LookupError: no truth for 13"):
            log.warning("window failed: %s", error)
    finally:
        log.removeHandler(handler)
    assert lines == ["[da3_ros.test_throttle] window failed: LookupError: no truth for 12",
                     "[da3_ros.test_throttle] window failed: ValueError: bad depth"]
