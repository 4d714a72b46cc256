"""CPU time per thread of a process, from ``/proc/<pid>/task/<tid>/stat``; Python thread names via py-spy.

A sample is ``{tid: (name, cpu_s)}`` with ``cpu_s`` = utime + stime in seconds; two samples
``dt`` seconds apart give each thread's CPU % (100 = one core busy). Kernel thread names
(``/proc/.../comm``) are what the threads set: Fast DDS names its own (``dds.*``), the Python
threads of the node all carry the interpreter's name, so :func:`python_thread_names` asks
``py-spy dump`` once for the Python name of each thread id when py-spy is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def parse_stat(text: str) -> float:
    """utime + stime (s) from the text of a ``/proc/.../stat`` file (the name may hold spaces)."""
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def family(pid: int, exclude: tuple[int, ...] = ()) -> list[int]:
    """``pid`` and every process descended from it (the node's inference process), parents first;
    the processes in ``exclude`` and their descendants are left out."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        if p in exclude:
            continue
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def thread_times(pid: int, exclude: tuple[int, ...] = ()) -> dict[int, tuple[str, float]]:
    """``{tid: (comm name, cpu seconds)}`` of every thread of ``pid`` and its descendants now.

    Threads of a descendant process are named ``child:<comm>`` (empty when ``pid`` is gone);
    ``exclude``: processes left out with their descendants (the bench leaves out the node it
    started, counted on its own).
    """
    out = {}
    for p in family(pid, exclude):
        task = Path(f"/proc/{p}/task")
        try:
            tids = [int(t) for t in os.listdir(task)]
        except OSError:
            continue
        for tid in tids:
            try:
                name = (task / str(tid) / "comm").read_text().strip()
                cpu_s = parse_stat((task / str(tid) / "stat").read_text())
                out[tid] = (name if p == pid else f"child:{name}", cpu_s)
            except (OSError, IndexError, ValueError):
                continue  # the thread ended between listdir and read
    return out


def machine_cpu_s() -> tuple[float, float]:
    """``(busy, total)`` CPU seconds of the whole machine since boot, all cores (``/proc/stat``)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    total = sum(ticks)
    return (total - ticks[3] - ticks[4]) / CLK_TCK, total / CLK_TCK


def load_average() -> float:
    """The machine's 1-minute load average."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def cpu_percent(before: dict, after: dict, dt_s: float, names: dict[int, str] | None = None) -> dict:
    """Per-thread and total CPU % between two :func:`thread_times` samples ``dt_s`` apart.

    Threads that started after ``before`` count from zero; threads gone by ``after`` are left
    out (their time is lost, so ``total_pct`` is a lower bound when threads came and went).

    Returns:
        ``{"interval_s", "total_pct", "threads": [{"tid", "name", "py_name", "cpu_pct"}...]}``,
        busiest first (threads that used no CPU only counted, in ``idle_threads``), and
        ``"by_name"``: CPU % summed per (Python name or comm name).
    """
    names = names or {}
    rows = []
    for tid, (name, cpu) in after.items():
        pct = 100.0 * (cpu - before.get(tid, (name, 0.0))[1]) / dt_s if dt_s > 0 else 0.0
        rows.append({"tid": tid, "name": name, "py_name": names.get(tid, ""), "cpu_pct": round(pct, 2)})
    rows.sort(key=lambda r: -r["cpu_pct"])
    idle = sum(r["cpu_pct"] == 0 for r in rows)
    by_name: dict[str, float] = {}
    for r in rows:
        key = r["py_name"] or r["name"]
        by_name[key] = round(by_name.get(key, 0.0) + r["cpu_pct"], 2)
    return {"interval_s": dt_s, "total_pct": round(sum(r["cpu_pct"] for r in rows), 2),
            "threads": [r for r in rows if r["cpu_pct"] > 0], "idle_threads": idle,
            "by_name": {k: v for k, v in sorted(by_name.items(), key=lambda kv: -kv[1]) if v > 0}}


_PYSPY_THREAD = re.compile(r'^Thread (0x[0-9A-Fa-f]+|\d+) \((?:[^)]*)\): "([^"]*)"')


def parse_pyspy_dump(text: str) -> dict[int, str]:
    """``{native tid: Python thread name}`` from ``py-spy dump --native``-less output.

    py-spy prints ``Thread <os tid> (idle|active...): "<name>"`` per Python thread (the OS
    thread id in decimal; older versions print the pthread id in hex, which is not a tid and is
    skipped).
    """
    out = {}
    for line in text.splitlines():
        m = _PYSPY_THREAD.match(line.strip())
        if m and not m.group(1).startswith("0x"):
            out[int(m.group(1))] = m.group(2)
    return out


def pyspy_path() -> str | None:
    """The py-spy executable beside this Python, or on PATH; None when absent."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def python_thread_names(pid: int, timeout_s: float = 20.0) -> dict[int, str]:
    """Python thread names of ``pid`` and its descendants by OS thread id (one ``py-spy dump`` each;
    a descendant's names start with ``child:``; empty without py-spy)."""
    exe = pyspy_path()
    if exe is None:
        return {}
    names = {}
    for p in family(pid):
        try:
            res = subprocess.run([exe, "dump", "--pid", str(p)], capture_output=True, text=True,
                                 timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            continue
        prefix = "" if p == pid else "child:"
        names.update({tid: prefix + name for tid, name in parse_pyspy_dump(res.stdout).items()})
    return names
