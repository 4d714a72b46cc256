"""py-spy profile of the node during a run's steady interval, and where each thread's samples go.

``py-spy record --pid PID --threads --idle --format speedscope`` samples every Python thread of
the node (idle ones included, so a thread waiting shows as waiting; ``--py-spy active`` leaves
``--idle`` out, so only running threads are sampled: where the CPU goes); :func:`summarize` reads the
speedscope JSON and gives, per thread, the share of its samples whose innermost frame is a
function (``self``) and the share that pass through it anywhere on the stack (``total``), top
``n`` each, in percent of that thread's samples. Functions are ``name (file)``: line numbers are
merged.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

from bench.live.procstat import pyspy_path


def start_record(pid: int, out: Path, duration_s: float, idle: bool = True,
                 rate_hz: int = 100) -> subprocess.Popen | None:
    """Start ``py-spy record`` on ``pid`` for ``duration_s`` into ``out`` (None without py-spy).

    ``idle``: keep the samples of threads that are waiting (``--idle``: where each thread's time
    goes); without it only running threads are sampled (where the CPU goes).
    """
    exe = pyspy_path()
    if exe is None:
        return None
    cmd = [exe, "record", "--pid", str(pid), "--threads", "--subprocesses",  # the inference process too
           *(["--idle"] if idle else []), "--format",
           "speedscope", "--rate", str(rate_hz), "--duration", str(max(1, round(duration_s))),
           "--output", str(out), "--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _label(frame: dict) -> str:
    file = Path(frame.get("file") or "?").name
    return f"{frame.get('name', '?')} ({file})"


def summarize(path: Path, n: int = 15) -> dict:
    """``{thread: {"samples", "weight", "unit", "self": [[function, self %, total %]...],
    "total": [[function, total %]...]}}``, percentages of the thread's weight; threads with the
    most samples first.

    speedscope "sampled" profiles: ``samples`` are lists of frame indices, outermost first,
    with one ``weights`` entry each (py-spy: seconds); py-spy names each profile after its thread.
    """
    doc = json.loads(Path(path).read_text())
    frames = [_label(f) for f in doc["shared"]["frames"]]
    out = {}
    for prof in doc["profiles"]:
        weights = prof.get("weights") or [1] * len(prof["samples"])
        self_c, total_c, count = Counter(), Counter(), 0.0
        for stack, w in zip(prof["samples"], weights):
            count += w
            if stack:
                self_c[frames[stack[-1]]] += w
            for name in {frames[i] for i in stack}:
                total_c[name] += w
        if count:
            def pct(c: float, count: int = count) -> float:
                return round(100.0 * c / count, 1)

            out[prof["name"]] = {
                "samples": len(prof["samples"]), "weight": count, "unit": prof.get("unit", ""),
                "self": [[f, pct(c), pct(total_c[f])] for f, c in self_c.most_common(n)],
                "total": [[f, pct(c)] for f, c in total_c.most_common(n)]}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["samples"]))


def markdown(summary: dict, n: int = 15) -> str:
    """One table per thread: the top ``n`` functions by self % with their total %."""
    lines = []
    for thread, s in summary.items():
        lines += [f"### {thread} ({s['samples']} samples)", "", "| function | self % | total % |",
                  "|---|---|---|"]
        lines += [f"| `{f}` | {own} | {total} |" for f, own, total in s["self"][:n]]
        lines.append("")
    return "\n".join(lines)
