"""The node as a child process on loopback-only DDS, and the memory of a process tree.

Used by ``da3-replay`` (``--spawn-node``), the multi-process tests and the live benchmark.
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import subprocess
from pathlib import Path

from da3_ros.dds_env import loopback_env
from da3_ros.ros.memtrace import rss_mb
from da3_ros.tools.bag.io import BagError


def node_tree_rss_mb(pid: int) -> float:
    """Resident memory (MiB) of process ``pid`` and all its descendants; NaN if it is gone."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            rss = rss_mb(p)
            total += 0.0 if math.isnan(rss) else rss  # kernel threads have no VmRSS
        except OSError:
            if p == pid:
                return float("nan")
        todo.extend(children.get(p, []))
    return total


class NodeRunner:
    """The node as a child process (``--spawn-node`` / ``--node-cmd``), logs in ``out/node.log``.

    DDS stays on loopback with ROS_DOMAIN_ID ``domain_id`` (:func:`loopback_env`; ROS logs in
    ``out/ros_logs``); ``extra_env`` adds variables, ``cwd`` sets the working directory.
    """

    def __init__(self, cmd: list[str], domain_id: int, out: Path, extra_env: dict[str, str] | None = None,
                 cwd: Path | None = None):
        log_dir = out / "ros_logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = loopback_env(domain_id, log_dir=str(log_dir))
        env.update(extra_env or {})
        self.log_path = out / "node.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                         cwd=None if cwd is None else str(cwd))
        except OSError as exc:
            self._log.close()
            raise BagError(f"cannot start the node ({shlex.join(cmd)}): {exc}") from exc
        self.pid = self.proc.pid

    def alive(self) -> bool:
        """True while the node runs."""
        return self.proc.poll() is None

    def tail(self, n: int = 1) -> str:
        """Last non-empty line(s) of the node's log."""
        self._log.flush()
        lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        return " | ".join(lines[-n:]) if lines else "(no output)"

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 30.0) -> int | None:
        """Send ``sig`` (SIGINT), SIGKILL after ``timeout_s``; returns the exit code (None if killed)."""
        code = self.proc.poll()
        if code is None:
            self.proc.send_signal(sig)
            try:
                code = self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                code = None
        self._log.close()
        return code
