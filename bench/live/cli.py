"""Command line of ``python -m bench.live`` (run from the repository root).

::

    python -m bench.live run --set model=default --set process_res=56 --set num_view=1 --set stride=1 \\
        --rate 15 --duration 20 --warmup 3 --out out/live/tiny15
    python -m bench.live run --params config/da3.yaml --cameras 2 --rate 10 --duration 20 --out out/live/rig
    python -m bench.live saturate --set num_view=8 --set stride=8 --start-rate 10 --max-rate 320 \\
        --step-duration 10 --out out/live/sat
    python -m bench.live run --node upstream --set model=da3-small --set process_res=56 --rate 2 ...
    python -m bench.live run --node sink --rate 150 --duration 10 --camera-mode process ...  # the bench alone
    python -m bench.live table out/live/*      # markdown rows for bench/RESULTS.md

Each writes ``DIR/report.json`` (``saturate``: ``DIR/saturation.json``), the node's log and
params, and prints one summary line. DDS stays on loopback (``config/fastdds_localhost.xml``)
in a ROS domain of its own (``--domain-id``, default derived from the process id).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from bench.live import procstat, profile
from bench.live.config import parse_sets
from bench.live.report import frames_of, run_report, summary_line
from bench.live.saturate import saturate
from bench.live.session import LiveSession, SessionOptions
from bench.live.table import tables
from da3_ros.evaluation.report import json_safe
from da3_ros.tools.cli import run_main


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node", default="da3", choices=("da3", "upstream", "sink"),
                   help="da3: da3_node; upstream: the upstream API wrapper; sink: a stand-in echoing stamps")
    p.add_argument("--params", default=None, help="ROS 2 params file (default config/da3.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="parameter override (repeat)")
    p.add_argument("--cameras", type=int, default=1, help="1: one camera; N: a rig with identical stamps")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--camera-mode", default="thread", choices=("thread", "process"),
                   help="synthetic camera on a thread of the bench or in a child process")
    p.add_argument("--node-cmd", default="", help="program that starts the node (default: da3_node script, "
                   "else python -c ...); the bench appends --ros-args --params-file FILE")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: env or derived)")
    p.add_argument("--wait-ready", type=float, default=600.0, help="seconds to wait for the node (active)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds without new outputs that end a send")
    p.add_argument("--no-thread-names", action="store_true", help="do not ask py-spy for Python thread names")
    p.add_argument("--switch-interval", type=float, default=0.001,
                   help="sys.setswitchinterval of the bench process (the camera thread's wait for the GIL)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    """Sub-commands ``run`` and ``saturate``."""
    p = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="one rate for a duration: accounting, latency, rates, CPU, GPU memory")
    _common(r)
    r.add_argument("--rate", type=float, required=True, help="camera rate, Hz (sets per second)")
    r.add_argument("--duration", type=float, required=True, help="scored seconds (after the warm-up)")
    r.add_argument("--warmup", type=float, default=0.0, help="seconds sent first and not scored (steady)")
    r.add_argument("--py-spy", choices=("idle", "active"), default=None,
                   help="profile the node with py-spy over the scored interval (profile.md, speedscope JSON):"
                   " idle keeps waiting threads' samples (--idle), active only running ones")
    s = sub.add_parser("saturate", help="highest rate with at most --max-drop of frames lost")
    _common(s)
    s.add_argument("--start-rate", type=float, default=5.0)
    s.add_argument("--max-rate", type=float, default=320.0)
    s.add_argument("--min-rate", type=float, default=0.5)
    s.add_argument("--step-duration", type=float, default=10.0)
    s.add_argument("--refine", type=int, default=3, help="bisection steps after the bracket")
    s.add_argument("--max-drop", type=float, default=0.01, help="largest lost share that passes")
    s.add_argument("--warmup", type=float, default=0.0, help="seconds at --start-rate before the search")
    t = sub.add_parser("table", help="markdown rows of report.json / saturation.json directories")
    t.add_argument("dirs", nargs="+", help="output directories of run / saturate")
    t.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def session_options(a: argparse.Namespace) -> SessionOptions:
    """SessionOptions from the common arguments."""
    if a.cameras < 1 or a.width < 1 or a.height < 1:
        raise ValueError("--cameras, --width and --height must be >= 1")
    return SessionOptions(node=a.node, params=a.params, sets=parse_sets(a.set), cameras=a.cameras,
                          width=a.width, height=a.height, camera_mode=a.camera_mode, node_cmd=a.node_cmd,
                          domain_id=a.domain_id, wait_ready_s=a.wait_ready, settle_s=a.settle,
                          switch_interval_s=a.switch_interval)


def _header(a: argparse.Namespace, s: LiveSession, ready_s: float) -> dict:
    return {"command": shlex.join([Path(sys.executable).name, "-m", "bench.live", *sys.argv[1:]])
            if a.argv is None else shlex.join(["python", "-m", "bench.live", *a.argv]),
            "node": a.node, "node_name": s.node_name, "node_cmd": s.command_line(), "params": s.params,
            "camera_mode": a.camera_mode, "domain_id": s.domain, "time_to_ready_s": ready_s,
            "topics_without_publisher": s.topics_without_publisher,
            "bench_switch_interval_s": s.opts.switch_interval_s,
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_command(a: argparse.Namespace) -> dict:
    """``run``: start, wait ready, send warm-up + duration, settle, final diagnostics, stop, report."""
    if a.rate <= 0 or a.duration <= 0 or a.warmup < 0:
        raise ValueError("--rate and --duration must be > 0, --warmup >= 0")
    out = Path(a.out)
    t = [time.monotonic()]
    with LiveSession(session_options(a), out) as s:
        ready = s.wait_ready()
        t.append(time.monotonic())
        spy = []

        def on_mark(i: int) -> None:  # profile the scored interval: from the end of the warm-up
            if a.py_spy and i == (1 if a.warmup > 0 else 0):
                spy.append(profile.start_record(s.node.pid, out / "profile.speedscope.json", a.duration,
                                                idle=a.py_spy == "idle"))

        log, marks = s.send(a.rate, a.warmup + a.duration, (a.warmup,) if a.warmup > 0 else (), on_mark)
        t.append(time.monotonic())
        if spy and spy[0] is not None:
            spy[0].wait(timeout=60)
        s.settle(frames_of(log))
        t.append(time.monotonic())
        names = {} if a.no_thread_names else procstat.python_thread_names(s.node.pid)
        final = s.recorder.latest_diagnostics()[1]
        report = _header(a, s, ready) | run_report(s.recorder, log, marks, a.warmup, final, names)
        report["warmup_s"], report["duration_s"] = a.warmup, a.duration
        report["node_exit_code"] = s.close()
        t.append(time.monotonic())
    phases = ("start_to_ready", "send", "settle", "report_and_stop")
    report["phases_s"] = dict(zip(phases, np.diff(t).tolist()))
    if (out / "profile.speedscope.json").exists():
        report["profile"] = profile.summarize(out / "profile.speedscope.json")
        (out / "profile.md").write_text(profile.markdown(report["profile"]))
    elif a.py_spy:
        report["profile"] = "py-spy record failed or is not installed"
    (out / "report.json").write_text(json.dumps(json_safe(report), indent=2) + "\n")
    line = summary_line(report)
    (out / "summary.txt").write_text(line + "\n")
    print(f"{line} -> {out / 'report.json'}")
    return report


def saturate_command(a: argparse.Namespace) -> dict:
    """``saturate``: one node process, rate steps, the highest passing rate."""
    out = Path(a.out)

    rows = []

    def progress(row: dict) -> None:  # each step also lands on disk at once (a run cut short keeps them)
        rows.append(row)
        (out / "saturation.partial.json").write_text(json.dumps(json_safe(rows), indent=2) + "\n")
        print(f"  {row['rate_hz']:g} Hz: {row['published']}/{row['sent']} published, "
              f"{row['pending']} pending, lost {100 * row['drop_fraction']:.2f}% -> "
              f"{'pass' if row['passed'] else 'fail'} {row['node_drops'] or ''}"
              f"{' not received ' + str(row['not_received_by_node']) if row['not_received_by_node'] else ''}",
              flush=True)

    with LiveSession(session_options(a), out) as s:
        ready = s.wait_ready()
        result = saturate(s, a.start_rate, a.max_rate, a.min_rate, a.step_duration, a.refine, a.max_drop,
                          a.warmup, progress)
        final = s.recorder.latest_diagnostics()[1]
        report = _header(a, s, ready) | result | {"node_diagnostics": final}
        report["node_exit_code"] = s.close()
    (out / "saturation.json").write_text(json.dumps(json_safe(report), indent=2) + "\n")
    found = report["rate_found_hz"]
    print(f"{a.node} saturation ({a.cameras} camera(s)): "
          + (f"{found:g} Hz = {report['frames_per_s']:g} frames/s" if found is not None else "none")
          + f" with <= {100 * a.max_drop:g}% lost, {len(report['steps'])} steps -> {out / 'saturation.json'}")
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.live``."""
    a = build_parser().parse_args(argv)
    a.argv = argv
    work = {"run": run_command, "saturate": saturate_command,
            "table": lambda a: print(tables(a.dirs))}[a.command]
    return run_main(lambda: (work(a), 0)[1], "bench.live", a.debug)
