"""One measured node process and the bench's DDS side (camera + recorder), in one ROS domain.

``LiveSession`` starts the node (``da3`` or ``upstream``) with :class:`NodeRunner` on loopback
DDS, waits until it is ready (every camera topic subscribed and ``state == active`` in its
``/diagnostics``), sends camera frames (a thread of this process, or a child process per
``send``), samples the node's threads' CPU time at given moments, waits for the outputs to
settle, and stops the node with SIGINT. Wall-clock times are ``time.time()`` seconds.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor

from bench.live import procstat
from bench.live.camera import CameraThread, SendLog, SyntheticCamera
from bench.live.config import NODE_NAMES, REPO, bench_params, camera_names, node_command, write_params
from bench.live.recorder import Recorder
from da3_ros.inference.allocator import keep_large_allocations
from da3_ros.ros.inputs import input_qos
from da3_ros.ros.parameters import SPEC_BY_NAME
from da3_ros.tools.replay.cli import prepare_dds
from da3_ros.tools.replay.node_runner import NodeRunner


def _pythonpath() -> str:
    """PYTHONPATH for children: the repository first (``bench`` and ``da3_ros``), then this one's."""
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


@dataclass
class SessionOptions:
    """What node runs and how it is fed (see ``python -m bench.live run --help``)."""

    node: str = "da3"
    params: str | None = None
    sets: dict = field(default_factory=dict)
    cameras: int = 1
    width: int = 640
    height: int = 480
    camera_mode: str = "thread"
    node_cmd: str = ""
    domain_id: int | None = None
    wait_ready_s: float = 600.0
    settle_s: float = 3.0
    max_settle_s: float = 120.0
    textures: int = 4
    switch_interval_s: float = 0.001


@dataclass
class Mark:
    """State at one moment of a send: wall time, node and bench thread CPU times
    (:func:`procstat.thread_times`), the node's latest diagnostics, the machine's ``(busy, total)``
    CPU seconds and its 1-minute load average."""

    wall_s: float
    threads: dict
    diagnostics: dict
    bench_threads: dict = field(default_factory=dict)
    machine_s: tuple[float, float] = (0.0, 0.0)
    load_1min: float = 0.0


class LiveSession:
    """The node as a child process plus the bench's camera and recorder (see module docstring).

    Args:
        opts: SessionOptions.
        out: directory for ``params.yaml``, ``node.log``, ROS logs and camera logs.
    """

    def __init__(self, opts: SessionOptions, out: Path) -> None:
        self.opts, self.out = opts, Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.cameras = camera_names(opts.cameras)
        self.params = bench_params(opts.params, opts.sets, self.cameras)
        params_path = write_params(self.params, self.out / "params.yaml")
        self.node_name = NODE_NAMES[opts.node]
        self.cmd = node_command(opts.node, params_path, opts.node_cmd)
        self.domain = prepare_dds(opts.domain_id)
        self.qos_kind = str(self.params.get("input_qos", SPEC_BY_NAME["input_qos"].default))
        self.qos_depth = int(self.params.get("input_queue_depth", SPEC_BY_NAME["input_queue_depth"].default))
        self.diag_period_s = float(self.params.get("diagnostics_period_s",
                                                   SPEC_BY_NAME["diagnostics_period_s"].default))
        self.node: NodeRunner | None = None
        self.exit_code: int | None = None
        self.topics_without_publisher: list[str] = []
        sys.setswitchinterval(opts.switch_interval_s)  # the camera thread waits less for the GIL
        keep_large_allocations(respect_env=False)  # the recorder takes every output as bytes
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=self.domain)
        self.ros = rclpy.create_node("da3_live_bench", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.ros)
        self._spin = threading.Thread(target=self._spin_forever, name="bench_spin", daemon=True)
        self._spin.start()
        try:
            self.recorder = Recorder(self.ros, self.node_name, self.cameras)
            self.camera = None
            if opts.camera_mode == "thread":
                qos = input_qos(self.qos_kind, self.qos_depth)
                cam = SyntheticCamera(self.ros, self.cameras, opts.width, opts.height, qos, opts.textures)
                self.camera = CameraThread(cam)
            elif opts.camera_mode != "process":
                raise ValueError(f"--camera-mode must be thread or process, got {opts.camera_mode!r}")
            self._sends = 0
            self.started_s = time.monotonic()
            self.node = NodeRunner(self.cmd, self.domain, self.out, cwd=REPO,
                                   extra_env={"PYTHONPATH": _pythonpath()})
        except BaseException:
            self.close()
            raise

    def _spin_forever(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - the context was shut down while spinning
            pass

    # -- phases ----------------------------------------------------------------------------
    def wait_ready(self) -> float:
        """Seconds from process start until its cameras are subscribed and it reports ``active``."""
        deadline = self.started_s + self.opts.wait_ready_s
        probe = self.camera.camera if self.camera is not None else None
        while True:
            self.recorder.discover()
            _, diag = self.recorder.latest_diagnostics()
            subscribed = probe.subscribed() if probe is not None else self._any_subscriber()
            if subscribed and diag.get("state") == "active":
                ready = time.monotonic() - self.started_s
                break
            if not self.node.alive():
                raise RuntimeError(f"the node exited (code {self.node.proc.returncode}) before it was ready: "
                                   f"{self.node.tail(3)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the node was not ready after {self.opts.wait_ready_s:.0f} s "
                                   f"(subscribed: {subscribed}, state: {diag.get('state')}): "
                                   f"{self.node.tail()}")
            time.sleep(0.05)
        self.topics_without_publisher = self.recorder.discover()  # e.g. a stand-in's missing outputs
        return ready

    def _any_subscriber(self) -> bool:
        topics = {f"/{c}/image_raw" for c in self.cameras}
        return all(self.ros.count_subscribers(t) > 0 for t in topics)

    def mark(self) -> Mark:
        """Now (see :class:`Mark`)."""
        return Mark(time.time(), procstat.thread_times(self.node.pid), self.recorder.latest_diagnostics()[1],
                    procstat.thread_times(os.getpid(), exclude=(self.node.pid,)), procstat.machine_cpu_s(),
                    procstat.load_average())

    def send(self, rate_hz: float, duration_s: float, mark_after_s: tuple[float, ...] = (),
             on_mark: Callable[[int], None] | None = None) -> tuple[SendLog, list]:
        """Send for ``duration_s`` at ``rate_hz``; returns the log and a :class:`Mark` at the start,
        ``mark_after_s`` seconds after it, and at the end of sending (``on_mark(i)`` after mark i)."""
        self._sends += 1
        if self.camera is not None:
            self.camera.start(rate_hz, duration_s)
            start = time.monotonic()
        else:
            child, log_path, start = self._start_camera_process(rate_hz, duration_s)
        time.sleep(max(0.0, start - time.monotonic()))
        marks = []
        for after in (0.0, *sorted(mark_after_s)):
            time.sleep(max(0.0, start + after - time.monotonic()))
            marks.append(self.mark())
            if on_mark is not None:
                on_mark(len(marks) - 1)
        if self.camera is not None:
            log = self.camera.join()
        else:
            code = child.proc.wait()
            child.stop()
            if code != 0 or not log_path.exists():
                raise RuntimeError(f"camera process failed (exit {code}): {child.tail(3)}")
            log = SendLog(**json.loads(log_path.read_text()))
        marks.append(self.mark())
        return log, marks

    def _start_camera_process(self, rate_hz: float, duration_s: float):
        out = self.out / f"camera_{self._sends}"
        out.mkdir(parents=True, exist_ok=True)
        lead_s = 5.0  # start-up, textures and discovery of the child before its first frame
        start_wall = time.time() + lead_s
        cmd = [sys.executable, "-m", "bench.live.camera", "--names", ",".join(self.cameras),
               "--width", str(self.opts.width), "--height", str(self.opts.height), "--qos", self.qos_kind,
               "--qos-depth", str(self.qos_depth), "--rate", str(rate_hz), "--duration", str(duration_s),
               "--start-at", f"{start_wall:.6f}", "--out", str(out / "sends.json")]
        child = NodeRunner(cmd, self.domain, out, cwd=REPO, extra_env={"PYTHONPATH": _pythonpath()})
        return child, out / "sends.json", time.monotonic() + lead_s

    def settle(self, frames: set[tuple[str, int]]) -> float:
        """Wait until every frame in ``frames`` has its depth, or outputs stop for ``settle_s`` with the
        node's queue empty (capped at ``max_settle_s``); then for one diagnostics message received
        after that. Returns the wall time the outputs settled."""
        cap = time.monotonic() + self.opts.max_settle_s
        last_n, last_change = -1, time.monotonic()
        while time.monotonic() < cap:
            if frames <= self.recorder.published():
                break
            n = self.recorder.received_count()
            if n != last_n:
                last_n, last_change = n, time.monotonic()
            elif time.monotonic() - last_change > self.opts.settle_s:
                queue = self.recorder.latest_diagnostics()[1].get("queue_len", "0")
                if queue in ("0", "") or time.monotonic() - last_change > 4 * self.opts.settle_s:
                    break
            time.sleep(0.05)
        settled = time.time()
        deadline = time.monotonic() + 3 * self.diag_period_s + 2.0
        while self.recorder.latest_diagnostics()[0] < settled and time.monotonic() < deadline:
            time.sleep(0.05)
        return settled

    def close(self) -> int | None:
        """Stop the node (SIGINT, then SIGKILL after 30 s) and the bench's DDS side; the node's exit code."""
        if self.exit_code is None and self.node is not None:
            self.exit_code = self.node.stop()
        if self.context is not None:
            self.executor.shutdown(timeout_sec=2.0)
            self._spin.join(timeout=5.0)
            self.ros.destroy_node()
            self.context.try_shutdown()
            self.context = None
        return self.exit_code

    def command_line(self) -> str:
        """The node's command, shell-quoted."""
        return shlex.join(self.cmd)

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
