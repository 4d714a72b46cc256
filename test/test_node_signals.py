"""SIGINT and SIGTERM stop da3_node cleanly (exit 0, no traceback, no ERROR) at any moment.

The node runs as its own process on loopback DDS with the shipped config (bundled model on the
CPU). Each test waits for one point of the node's life, sends the signal there, and checks the
exit code and the whole log; it also checks, from the log, that the signal really landed in that
phase (the phase's end never appears).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
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
from sensor_msgs.msg import Image

from da3_ros.inference.shm_ring import SHM_DIR

pytestmark = pytest.mark.timeout(240)
CONFIG = REPO / "config" / "da3.yaml"
#: What must never appear in the log of a stop.
NOISE = ("Traceback", "[ERROR]", "[FATAL]", "Failed to publish", "never retrieved", "KeyboardInterrupt",
         "Exception")
#: A stop must end within this many seconds of the signal.
STOP_WITHIN_S = 15.0


def catches(pid: int, sig: int) -> bool:
    """True when process ``pid`` has a handler installed for ``sig`` (``SigCgt`` in /proc)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(mask >> (sig - 1) & 1)


def _stop_cleanly(node: NodeProcess, signals: tuple[int, ...], gap_s: float = 0.3) -> str:
    """Send ``signals`` (``gap_s`` apart); assert exit 0 within STOP_WITHIN_S and a quiet log."""
    t0 = time.monotonic()
    for i, sig in enumerate(signals):
        if i:
            time.sleep(gap_s)
        node.proc.send_signal(sig)
    try:
        code = node.proc.wait(timeout=STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        code = None  # the harness kills it on the way out
    took = time.monotonic() - t0
    log = node.log()
    assert code == 0, f"exit {code}\n{log}"
    assert took < STOP_WITHIN_S, log
    noise = [line for line in log.splitlines() if any(n in line for n in NOISE)]
    assert not noise, f"{noise}\n{log}"
    return log


# (name, what to wait for before the signal, what must not have been reached)
START_UP_POINTS = [
    ("import", None, "configured"),
    ("model_load", "loading model", "process_res"),
    ("warm_up", "process_res", "warm-up window"),
    ("active_idle", "active; subscribed", None),
]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("point, after, before", START_UP_POINTS, ids=[p[0] for p in START_UP_POINTS])
def test_signal_during_start_up_is_a_clean_stop(tmp_path, sig, point, after, before):
    with NodeProcess(tmp_path, None, unique_domain_id(), params_file=CONFIG) as node:
        if after is None:  # importing: the stop handlers are in, nothing is configured yet
            assert wait_until(lambda: catches(node.pid, signal.SIGTERM), 30, period_s=0.01,
                              alive=node.alive), node.log()
        else:
            assert wait_until(lambda: after in node.log(), 90, period_s=0.02, alive=node.alive), node.log()
        assert node.alive(), node.log()
        log = _stop_cleanly(node, (sig,))
    if before is not None:
        assert before not in log, f"the signal came too late to test the {point} phase:\n{log}"


def _inference_process_ended(log: str, node_pid: int) -> None:
    """The node's inference process (pid from its log) is gone, and so are its shared-memory files."""
    match = re.search(r"inference process (\d+) runs the model", log)
    assert match, log
    pid = int(match.group(1))
    assert wait_until(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), 5), log
    assert not [f for f in os.listdir(SHM_DIR) if f.startswith(f"da3_ros.{node_pid}.")]


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line for line in f)
    except OSError:
        return True


@pytest.mark.parametrize("point, after, before", [("model_load", "loading model", "process_res"),
                                                  ("warm_up", "process_res", "warm-up window")],
                         ids=["model_load", "warm_up"])
def test_signal_while_the_inference_process_loads_is_a_clean_stop(tmp_path, point, after, before):
    """With ``inference_process:=on`` the model loads in the inference process; SIGINT then ends both."""
    with NodeProcess(tmp_path, None, unique_domain_id(), params_file=CONFIG,
                     extra_args=["-p", "inference_process:=on"]) as node:
        assert wait_until(lambda: after in node.log(), 90, period_s=0.02, alive=node.alive), node.log()
        children = _children(node.pid)
        log = _stop_cleanly(node, (signal.SIGINT,))
    assert before not in log, f"the signal came too late to test the {point} phase:\n{log}"
    # the inference process, and multiprocessing's resource tracker (it ends once the node is gone)
    assert children and wait_until(lambda: all(not os.path.exists(f"/proc/{c}") or _zombie(c)
                                               for c in children), 5), log
    assert not [f for f in os.listdir(SHM_DIR) if f.startswith(f"da3_ros.{node.pid}.")]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


@pytest.mark.parametrize("inference_process", ["off", "on"])
@pytest.mark.parametrize("signals", [(signal.SIGINT,), (signal.SIGTERM,), (signal.SIGINT, signal.SIGTERM)],
                         ids=["SIGINT", "SIGTERM", "SIGINT_then_SIGTERM"])
def test_signal_while_windows_run_and_publish_is_a_clean_stop(tmp_path, signals, inference_process):
    """Frames stream in faster than the CPU runs windows, so the signal lands in a window or a publish."""
    steps = render_sequence(["camera"], 40, 320, 240, kind="room", seed=2)
    domain, ns = unique_domain_id(), unique_namespace()
    remaps = ["-r", f"/camera/image_raw:={ns}/camera/image_raw",
              "-r", f"/camera/camera_info:={ns}/camera/camera_info"]
    with NodeProcess(tmp_path, None, domain, params_file=CONFIG, ns=ns,
                     extra_args=["-p", "input_qos:=reliable", "-p", f"inference_process:={inference_process}",
                                 *remaps]) as node, RosHarness(domain) as ros:
        rec = Recorder(ros.node, {"/da3_node/camera/depth": Image}, ns=ns)
        cam = SyntheticCamera(ros.node, ["camera"], ns=ns)
        assert cam.wait_for_subscribers(120, topics=("image",)), node.log()
        playing = threading.Thread(target=cam.play, args=(steps, 10.0, False), daemon=True)
        playing.start()
        assert wait_until(lambda: rec.count("/da3_node/camera/depth") >= 2, 60, alive=node.alive), node.log()
        log = _stop_cleanly(node, signals)
        playing.join(timeout=10)
    if inference_process == "on":
        _inference_process_ended(log, node.pid)
