"""da3_node parameters and lifecycle, in process (fast), plus bad params files in a subprocess."""

from __future__ import annotations

import gc
import math
import os
import subprocess
import weakref

import numpy as np
import pytest
import rclpy
import torch
from _node_harness import NODE_EXE, NodeProcess, unique_domain_id, unique_namespace, wait_until
from rcl_interfaces.msg import ParameterType
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

from da3_ros.core.geometry import ROS_BODY_FROM_OPTICAL, fixed_from_model_world, points_to_fixed
from da3_ros.core.visualize import colorize_depth
from da3_ros.dds_env import loopback_env
from da3_ros.ros.node import Da3Node
from da3_ros.ros.overrides import quote_cli_overrides
from da3_ros.ros.parameters import RESTART_NOTE, SPEC_BY_NAME, SPECS, spec_for

pytestmark = pytest.mark.timeout(120)
OK = TransitionCallbackReturn.SUCCESS


@pytest.fixture
def make_node():
    contexts, nodes = [], []

    def make(**params):
        ctx = rclpy.Context()
        rclpy.init(context=ctx, domain_id=unique_domain_id(), signal_handler_options=SignalHandlerOptions.NO)
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        node = Da3Node(context=ctx, parameter_overrides=overrides)
        contexts.append(ctx)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node._stop()
        node.destroy_node()
    for ctx in contexts:
        rclpy.shutdown(context=ctx)


def _set(node, name, value):
    return node.set_parameters([Parameter(name, value=value)])[0]


def test_descriptors_types_ranges_and_read_only(make_node):
    node = make_node()
    assert {s.name for s in SPECS} <= set(node._parameters)
    model = node.describe_parameter("model")  # restart: settable while unconfigured, so not read-only
    assert model.type == ParameterType.PARAMETER_STRING and model.description
    assert RESTART_NOTE in model.additional_constraints
    conf = node.describe_parameter("conf_threshold")
    assert RESTART_NOTE not in conf.additional_constraints and conf.floating_point_range[0].from_value == 0.0
    res = node.describe_parameter("process_res")
    assert RESTART_NOTE in res.additional_constraints
    assert res.integer_range[0].from_value == 0  # 0: the weights' recommendation
    assert "drop_oldest" in node.describe_parameter("queue_policy").additional_constraints
    cam = node.describe_parameter("camera.camera.image_topic")
    assert RESTART_NOTE in cam.additional_constraints
    assert node.get_parameter("camera.camera.image_topic").value == "camera/image_raw"


def test_invalid_values_are_rejected_with_a_reason(make_node):
    node = make_node()
    bad = _set(node, "queue_policy", "newest_please")
    assert not bad.successful and "queue_policy" in bad.reason
    assert node.get_parameter("queue_policy").value == "drop_oldest"
    assert _set(node, "max_depth_m", 10.0).successful
    bad = _set(node, "min_depth_m", 20.0)
    assert not bad.successful and "min_depth_m" in bad.reason
    assert not _set(node, "conf_threshold", -1.0).successful  # descriptor range
    assert not _set(node, "conf_threshold", "high").successful  # type
    assert node.trigger_configure() == OK
    bad = _set(node, "model", "da3-large")  # restart parameter: only while unconfigured
    assert not bad.successful and "unconfigured" in bad.reason
    bad = _set(node, "depth_colored_range", [5.0, 1.0])
    assert not bad.successful and "depth_colored_range" in bad.reason


def test_lifecycle_phases_and_dynamic_parameters(make_node):
    node = make_node(model="truth", cameras=["front", "back"], **{"camera.back.transport": "compressed"})
    assert node.trigger_configure() == OK
    assert node.settings.mode == "multicam" and node.outputs is not None and node.pipeline is None
    assert set(node.outputs.per_camera) == {"front", "back"}
    assert node.trigger_activate() == OK
    assert node.pipeline is not None and node.predictor is not None
    assert wait_until(lambda: node.count_publishers("/back/image_raw/compressed") == 0
                      and node.count_subscribers("/back/image_raw") >= 1, 5)
    cfg = node.pipeline.config
    assert cfg.mode == "multicam" and cfg.cameras == ["front", "back"]

    assert _set(node, "conf_threshold", 2.5).successful and cfg.conf_threshold == 2.5
    assert _set(node, "queue_policy", "keep_latest").successful and cfg.queue_policy == "keep_latest"
    assert _set(node, "max_depth_m", 0.0).successful and math.isinf(cfg.max_depth_m)
    assert _set(node, "voxel_size_m", 0.05).successful and cfg.voxel_size_m == 0.05
    assert _set(node, "publish.points", False).successful and node.outputs.toggles.points is False
    assert _set(node, "path_max_length", 3).successful and node.outputs._path_poses.maxlen == 3

    released = weakref.ref(node.predictor)
    assert node.trigger_deactivate() == OK
    assert node.pipeline is None and node.predictor is None and node.inputs is None
    gc.collect()
    assert released() is None, "deactivate must drop every reference to the model"
    assert wait_until(lambda: node.count_subscribers("/front/image_raw") == 0, 5)
    assert node.trigger_activate() == OK and node.pipeline is not None  # reactivation works
    assert node.pipeline.config.conf_threshold == 2.5  # dynamic values survive a restart
    assert node.trigger_deactivate() == OK
    assert node.trigger_cleanup() == OK and node.outputs is None
    assert node.trigger_configure() == OK and node.trigger_activate() == OK  # a second life
    assert node.pipeline is not None and node.outputs is not None
    assert node.trigger_shutdown() == OK
    assert node.pipeline is None and node.outputs is None


def test_activation_fails_cleanly_on_an_unknown_model(make_node):
    node = make_node(model="no_such_model_dir")
    assert node.trigger_configure() == OK
    assert node.trigger_activate() == TransitionCallbackReturn.FAILURE
    assert node.pipeline is None and "no_such_model_dir" in node.diag.error
    assert node._state_machine.current_state[1] == "inactive"


@pytest.mark.parametrize("params, needle", [
    ({"process_res": 5}, "process_res"),
    ({"queue_policy": "bogus"}, "queue_policy"),
    ({"cameras": ["a", "a"]}, "duplicates"),
    ({"fixed_frame": False}, "quote it"),  # a params file's unquoted no/off for a free string
    ({"cameras": ["front", False]}, "a list must hold one type"),  # rcl refuses it before the node exists
], ids=["out_of_range", "bad_choice", "duplicate_cameras", "yaml_boolean_for_a_string", "mixed_list"])
def test_invalid_params_file_exits_with_a_message(tmp_path, params, needle):
    with NodeProcess(tmp_path, params, unique_domain_id()) as node:
        node.proc.wait(timeout=60)
        assert node.proc.returncode == 1
        assert needle in node.log()
        assert "Traceback" not in node.log()


@pytest.mark.parametrize("device, needle", [
    ("gpu", "device 'gpu' is not one of auto, cpu, cuda, cuda:N (cuda?)"),
    ("cuda", "CUDA is not available"),
])
def test_device_is_checked_at_configure_with_a_clear_message(tmp_path, device, needle):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with NodeProcess(tmp_path, {"device": device}, unique_domain_id()) as node:
        node.proc.wait(timeout=90)
        log = node.log()
    assert node.proc.returncode == 1 and needle in log, log
    assert "loading model" not in log and "Traceback" not in log and "pin_memory" not in log, log


def test_help_prints_the_usage_and_exits_without_starting_ros(tmp_path):
    done = subprocess.run([str(NODE_EXE), "--help"], capture_output=True, text=True, timeout=60,
                          env=loopback_env(unique_domain_id(), log_dir=str(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: da3_node") and "docs/node.md" in done.stdout
    assert all(spec.name in done.stdout for spec in SPECS)
    assert all(text in done.stdout for text in ("~/<camera>/depth", "~/points", "camera.<name>.transport"))
    assert not list(tmp_path.iterdir()), "--help must not start ROS (no log files)"


def test_the_log_names_the_topics_as_resolved_with_namespace_and_remaps(tmp_path):
    params = {"model": "truth", "camera.camera.image_topic": "/camera/image_raw",
              "camera.camera.camera_info_topic": "camera/camera_info"}
    ns = unique_namespace()
    with NodeProcess(tmp_path, params, unique_domain_id(), ns=ns,
                     extra_args=["-r", "/camera/image_raw:=/my/image"]) as node:
        assert wait_until(lambda: "active; subscribed" in node.log(), 60, alive=node.alive), node.log()
        assert node.stop() == 0
        log = node.log()
    assert f"subscribed to camera: /my/image, {ns}/camera/camera_info (raw)" in log, log
    assert "/camera/image_raw" not in log


def test_choices_and_defaults_come_from_their_one_home():
    """The parameter table reads choice lists and defaults from the model and config dataclasses."""
    from dataclasses import fields

    from da3_ros.core.config import PipelineConfig
    from da3_ros.inference.settings import InferenceSettings
    from da3_ros.model.attention import BACKENDS
    from da3_ros.model.refview import STRATEGIES

    assert SPEC_BY_NAME["attention_backend"].choices is BACKENDS
    assert SPEC_BY_NAME["ref_view_strategy"].choices == ("auto",) + STRATEGIES
    for cls, skip in ((InferenceSettings, ()), (PipelineConfig, ("mode", "cameras", "max_depth_m"))):
        for f in fields(cls):
            if f.name in SPEC_BY_NAME and f.name not in skip:
                default = SPEC_BY_NAME[f.name].default
                want = getattr(cls(), f.name)
                assert (list(want) if isinstance(want, tuple) else want) == default, f.name
    assert SPEC_BY_NAME["max_depth_m"].default == 0.0  # "no limit", which PipelineConfig spells inf
    assert PipelineConfig.normalised({"max_depth_m": 0.0})["max_depth_m"] == float("inf")


def test_fixed_frame_is_rep103():
    # the pipeline world = first camera's optical frame; its forward (z) is the fixed frame's x
    T = fixed_from_model_world(np.eye(4))
    np.testing.assert_allclose(T[:3, :3], ROS_BODY_FROM_OPTICAL)
    np.testing.assert_allclose(points_to_fixed(np.array([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])),
                               [[2.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]], atol=1e-6)


def test_colorize_depth_near_red_far_blue_unknown_black():
    depth = np.array([[1.0, 2.0, 3.0, np.nan, 0.0, np.inf]], np.float32)
    rgb = colorize_depth(depth, 1.0, 3.0)
    assert rgb.shape == (1, 6, 3) and rgb.dtype == np.uint8
    assert not rgb[0, 3:].any()
    near, far = rgb[0, 0].astype(int), rgb[0, 2].astype(int)
    assert near[0] > near[2] and far[2] > far[0]
    auto = colorize_depth(depth)
    assert auto[0, :3].any(axis=1).all() and not auto[0, 3:].any()


def test_command_line_values_of_string_and_float_list_parameters_are_quoted():
    argv = ["da3_node", "-p", "x:=off", "--ros-args", "-p", "accelerate:=off",
            "--param", "da3_node:fixed_frame:=no", "-p", "cameras:=[front, 'off']",
            "-p", "depth_colored_range:=[0, 10.5]", "-p", "conf_threshold:=1",
            "-p", "model:='da3-tiny'", "-p", "unknown:=off", "-r", "a:=b", "--", "-p", "accelerate:=off"]
    assert quote_cli_overrides(argv, spec_for) == [
        "da3_node", "-p", "x:=off", "--ros-args", "-p", "accelerate:='off'",
        "--param", "da3_node:fixed_frame:='no'", "-p", "cameras:=['front', 'off']",
        "-p", "depth_colored_range:=[0.0, 10.5]", "-p", "conf_threshold:=1",
        "-p", "model:='da3-tiny'", "-p", "unknown:=off", "-r", "a:=b", "--", "-p", "accelerate:=off"]


def test_overrides_and_run_time_values_take_the_declared_type(make_node):
    node = make_node(accelerate=False, conf_threshold=2, warmup=0, depth_colored_range=[0, 5], device=0,
                     cameras="front")
    assert node.get_parameter("accelerate").value == "off"
    assert node.get_parameter("conf_threshold").value == 2.0
    assert node.get_parameter("warmup").value is False
    assert list(node.get_parameter("depth_colored_range").value) == [0.0, 5.0]
    assert node.get_parameter("device").value == "0"
    assert list(node.get_parameter("cameras").value) == ["front"]
    assert node.has_parameter("camera.front.transport")
    assert _set(node, "max_depth_m", 7).successful and node.get_parameter("max_depth_m").value == 7.0
    assert not _set(node, "conf_threshold", "high").successful  # no guessing: still a type error
    with pytest.raises(ValueError, match="quote it"):
        make_node(fixed_frame=True)


def test_restart_parameters_set_while_unconfigured_apply_at_the_next_configure(make_node):
    node = make_node(model="truth")
    assert _set(node, "cameras", ["left", "right"]).successful and _set(node, "num_view", 6).successful
    assert node.trigger_configure() == OK
    assert node.has_parameter("camera.right.image_topic") and node.settings.mode == "multicam"
    assert node.trigger_activate() == OK and node.pipeline.config.num_view == 6
    bad = _set(node, "num_view", 2)
    assert not bad.successful and "unconfigured" in bad.reason
    assert node.trigger_deactivate() == OK and node.trigger_cleanup() == OK
    assert _set(node, "num_view", 2).successful
    assert node.trigger_configure() == OK and node.trigger_activate() == OK
    assert node.pipeline.config.num_view == 2


def test_rig_extrinsics_parameters_reach_the_pipeline(make_node):
    from da3_ros.ros.node_parameters import read_settings
    from da3_ros.ros.parameters import pipeline_config

    node = make_node(cameras=["left", "right"],
                     **{"camera.left.extrinsics": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
                        "camera.right.extrinsics": [0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]})
    assert node.describe_parameter("camera.left.extrinsics").type == ParameterType.PARAMETER_DOUBLE_ARRAY
    cfg = pipeline_config(read_settings(node))
    assert cfg.rig_extrinsics == {"left": (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
                                  "right": (0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)}
    plain = make_node(cameras=["left", "right"])  # not given: unknown
    assert pipeline_config(read_settings(plain)).rig_extrinsics == {"left": (), "right": ()}
    from da3_ros.ros.parameters import check_values

    assert "quaternion" in check_values({"camera.left.extrinsics": [0.0] * 7})
    assert "quaternion" in check_values({"camera.left.extrinsics": [1.0, 2.0]})


def test_devices_shard_the_windows_and_their_workers_stop_on_deactivate(make_node):
    import torch.distributed as dist

    from da3_ros.core.frames import Frame

    node = make_node(model="default", warmup=False)
    assert node.describe_parameter("devices").type == ParameterType.PARAMETER_STRING_ARRAY
    assert node.get_parameter_or("devices").value is None  # default []: declared, unset
    for bad in (["gpu0"], ["auto", "cpu"]):
        res = _set(node, "devices", bad)
        assert not res.successful and "devices" in res.reason
    assert _set(node, "devices", ["cpu", "cpu"]).successful
    assert node.trigger_configure() == OK and node.trigger_activate() == OK
    engine = node.predictor
    assert engine.ranks == 2 and dist.is_initialized()
    procs = list(engine.model._procs)
    frames = [Frame(image=np.full((48, 64, 3), 40 * i, np.uint8), stamp_ns=i + 1, camera="camera",
                    frame_id="camera_optical_frame") for i in range(3)]
    assert len(engine.predict(frames).depth) == 3
    assert node.trigger_deactivate() == OK
    assert all(p.exitcode == 0 for p in procs) and not dist.is_initialized()


def test_the_inference_process_follows_the_lifecycle_and_takes_dynamic_values(make_node):
    """inference_process on: activate starts the process, dynamic values reach it, deactivate ends
    it, and a second activation starts a new one."""
    from da3_ros.inference.process_pipeline import ProcessPipeline

    node = make_node(model="default", warmup=False, inference_process="on")
    assert node.describe_parameter("inference_process").type == ParameterType.PARAMETER_STRING
    assert not _set(node, "inference_process", "maybe").successful
    assert node.trigger_configure() == OK and node.trigger_activate() == OK
    pipeline = node.pipeline
    assert isinstance(pipeline, ProcessPipeline) and pipeline is node.predictor
    first = pipeline._process
    assert first.is_alive() and first.pid != os.getpid()
    assert _set(node, "conf_threshold", 2.5).successful and pipeline.config.conf_threshold == 2.5
    assert node.diag.info["device"] == "cpu"  # what the inference process reported
    assert node.trigger_deactivate() == OK
    assert node.pipeline is None and node.predictor is None and not first.is_alive()
    assert node.trigger_activate() == OK
    assert node.pipeline._process.pid != first.pid and node.pipeline.config.conf_threshold == 2.5
    assert node.trigger_shutdown() == OK and node.pipeline is None


def test_model_truth_cannot_run_in_an_inference_process(make_node):
    node = make_node(model="truth", inference_process="on")
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
