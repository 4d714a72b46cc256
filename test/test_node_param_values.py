"""Parameter values as users type them, unknown names, and restart parameters, over real DDS.

The node runs as its own process; the test reads and sets its parameters and drives its
lifecycle through the standard services (:class:`da3_ros.tools.ctl.NodeClient`, what
``da3-ctl`` uses), and once through the ``da3-ctl`` command itself.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from _node_harness import (
    REPO,
    NodeProcess,
    Recorder,
    RosHarness,
    SyntheticCamera,
    render_sequence,
    unique_domain_id,
    unique_namespace,
    wait_until,
)
from geometry_msgs.msg import PoseStamped

from da3_ros.dds_env import loopback_env
from da3_ros.tools.ctl import NodeClient

pytestmark = pytest.mark.timeout(180)

# Written by hand: YAML's own spelling, as a user writes it (yaml.safe_dump would quote).
PARAMS_FILE = """\
/**:
  ros__parameters:
    autostart: false
    accelerate: off
    conf_threshold: 1
    depth_colored_range: [0, 10]
    conf_treshold: 2.0
    camera.rear.frame_id: rear
"""


def _state(client: NodeClient) -> str:
    try:
        return client.state()
    except Exception:  # noqa: BLE001 - not up yet
        return ""


def test_values_as_typed_on_the_command_line_and_in_a_params_file(tmp_path):
    params_file = tmp_path / "typed.yaml"
    params_file.write_text(PARAMS_FILE)
    cli = ["-p", "fixed_frame:=no", "-p", "device:=0", "-p", "cameras:=[front,off]",
           "-p", "camera.off.frame_id:=yes", "-p", "max_depth_m:=20", "-p", "path_period_s:=2"]
    domain, ns = unique_domain_id(), unique_namespace()
    with NodeProcess(tmp_path, None, domain, params_file=params_file, ns=ns, extra_args=cli) as node, \
            RosHarness(domain) as ros:
        client = NodeClient(ros.node, f"{ns}/da3_node", timeout_s=60)
        assert wait_until(lambda: _state(client) == "unconfigured", 60, alive=node.alive), node.log()
        got = client.get(["accelerate", "conf_threshold", "depth_colored_range", "fixed_frame", "device",
                          "cameras", "camera.off.frame_id", "max_depth_m", "path_period_s"])
        assert got == {"accelerate": "off", "conf_threshold": 1.0, "depth_colored_range": [0.0, 10.0],
                       "fixed_frame": "no", "device": "0", "cameras": ["front", "off"],
                       "camera.off.frame_id": "yes", "max_depth_m": 20.0, "path_period_s": 2.0}, node.log()
        # at run time too: an integer for a float, a YAML boolean for a string with choices
        assert all(ok for _, ok, _ in client.set({"conf_threshold": 3, "accelerate": False})), node.log()
        assert client.get(["conf_threshold", "accelerate"]) == {"conf_threshold": 3.0, "accelerate": "off"}
        # the da3-ctl command: a string parameter gets the text as typed
        ctl = subprocess.run([sys.executable, "-m", "da3_ros.tools.ctl", "param", "set", f"{ns}/da3_node",
                              "fixed_frame", "yes", "voxel_size_m", "1"], env=loopback_env(domain),
                             cwd=REPO, capture_output=True, text=True, timeout=90)
        assert ctl.returncode == 0, ctl.stdout + ctl.stderr
        assert client.get(["fixed_frame", "voxel_size_m"]) == {"fixed_frame": "yes", "voxel_size_m": 1.0}
        log = node.log()
        assert node.stop() == 0, node.log()
    assert "unknown parameter conf_treshold (ignored); did you mean conf_threshold?" in log
    assert "camera.rear.frame_id is ignored: 'rear' is not in cameras ['front', 'off']" in log
    assert "Traceback" not in log


def _play_and_get_frame(cam, rec, steps, node) -> str:
    before = rec.count("/da3_node/camera/pose")
    cam.prime_camera_info(steps)
    cam.play(steps)
    assert wait_until(lambda: rec.count("/da3_node/camera/pose") >= before + len(steps) - 2, 60,
                      alive=node.alive), node.log()
    return rec.get("/da3_node/camera/pose")[-1].header.frame_id


def test_restart_parameters_change_while_unconfigured_and_apply_at_configure(tmp_path):
    steps = render_sequence(["camera"], 12, 64, 48, kind="room", seed=5)
    params = {"model": "truth", "autostart": False, "input_qos": "reliable", "input_queue_depth": 50,
              "queue_size": 64, "num_view": 3, "stride": 1, "fixed_frame": "first",
              "camera.camera.image_topic": "camera/image_raw",
              "camera.camera.camera_info_topic": "camera/camera_info"}
    domain, ns = unique_domain_id(), unique_namespace()
    with NodeProcess(tmp_path, params, domain, ns=ns) as node, RosHarness(domain) as ros:
        client = NodeClient(ros.node, f"{ns}/da3_node", timeout_s=60)
        rec = Recorder(ros.node, {"/da3_node/camera/pose": PoseStamped}, ns=ns)
        cam = SyntheticCamera(ros.node, ["camera"], ns=ns)
        assert wait_until(lambda: _state(client) == "unconfigured", 60, alive=node.alive), node.log()
        assert client.set({"fixed_frame": "second", "num_view": 2}) == [("fixed_frame", True, ""),
                                                                         ("num_view", True, "")]
        assert client.transition("configure") and client.transition("activate"), node.log()
        [(_, ok, reason)] = client.set({"fixed_frame": "late"})
        assert not ok and "unconfigured" in reason
        assert cam.wait_for_subscribers(30, topics=("image", "info", "depth", "pose")), node.log()
        time.sleep(0.5)
        assert _play_and_get_frame(cam, rec, steps[:6], node) == "second"

        # cleanup -> configure: the window size and the frame change (the num_view case)
        assert client.transition("deactivate") and client.transition("cleanup"), node.log()
        assert all(ok for _, ok, _ in client.set({"fixed_frame": "third", "num_view": 4}))
        assert client.get(["num_view"]) == {"num_view": 4}
        assert client.transition("configure") and client.transition("activate"), node.log()
        assert _play_and_get_frame(cam, rec, steps[6:], node) == "third"
        assert node.stop() == 0, node.log()
