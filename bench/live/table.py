"""``python -m bench.live table DIR...``: markdown rows of run and saturation reports, for RESULTS.md.

Each DIR holds a ``report.json`` (``run``) or a ``saturation.json`` (``saturate``); rows show the
steady (post warm-up) numbers of a run and the rate found by a search, with the machine's other
load so a row measured on a busy machine says so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

RUN_HEADER = ("| run | node, model | views/stride, cams | rate Hz | published (steady) | drops (all) | "
              "window ms p50/p90/max | depth ms p50/p90/max | points Hz | node CPU % | other CPU % | "
              "GPU MiB peak | ready s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")
SAT_HEADER = ("| search | node, model | views/stride, cams | rate found Hz (frames/s) | steps: Hz pass/fail "
              "(lost %) | other CPU % |\n|---|---|---|---|---|---|")


def _f(v, fmt: str = ".1f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _setup(r: dict) -> tuple[str, str]:
    p = r["params"]
    if r["node"] == "sink":  # the stand-in runs no model and no windows
        return "sink", f"-, {len(p.get('cameras', [1]))}"
    model = p.get("model", "?") + (f" @{p['process_res']}" if p.get("process_res") else "")
    return (f"{r['node']}, {model}",
            f"{p.get('num_view', '?')}/{p.get('stride', '-')}, {len(p.get('cameras', [1]))}")


def run_row(name: str, r: dict) -> str:
    """One markdown row of a ``run`` report."""
    st, acc, cpu = r["steady"], r["accounting"], r["cpu"]
    drops = ", ".join(f"{k.removeprefix('dropped.')} {v}" for k, v in acc["buckets"].items()
                      if k != "published" and v)
    wl, dl = st["window_latency_ms"], st["depth_latency_ms"]
    pts = st["rates_hz"].get(f"/{r['node_name']}/points")
    who, views = _setup(r)
    lat = [f"{_f(x['p50'])}/{_f(x['p90'])}/{_f(x['max'])}" for x in (wl, dl)]
    return (f"| {name} | {who} | {views} | {r['camera']['rate_hz']:g} | {st['published']}/{st['sent']} "
            f"({_f(st['published_pct'])}%) | {drops or 0} | {lat[0]} | {lat[1]} | {_f(pts, '.2f')} | "
            f"{_f(cpu['steady']['total_pct'], '.0f')} | {_f(cpu['machine_steady']['other_pct'], '.0f')} | "
            f"{_f(r['gpu_mem_mb']['peak'], '.0f')} | {_f(r['time_to_ready_s'])} |")


def saturation_row(name: str, r: dict) -> str:
    """One markdown row of a ``saturate`` report."""
    who, views = _setup(r)
    steps = ", ".join(f"{s['rate_hz']:g} {'pass' if s['passed'] else 'fail'} ({100 * s['drop_fraction']:.0f})"
                      for s in r["steps"])
    other = [s["cpu"]["other_pct"] for s in r["steps"]]
    found = r["rate_found_hz"]
    return (f"| {name} | {who} | {views} | {_f(found, 'g')} ({_f(r['frames_per_s'], 'g')}) | {steps} | "
            f"{_f(min(other), '.0f')}-{_f(max(other), '.0f')} |" if other else "")


def tables(dirs: list[str]) -> str:
    """Markdown tables (runs, then searches) of the reports in ``dirs``."""
    runs, sats = [], []
    for d in map(Path, dirs):
        if (d / "report.json").exists():
            runs.append(run_row(d.name, json.loads((d / "report.json").read_text())))
        elif (d / "saturation.json").exists():
            sats.append(saturation_row(d.name, json.loads((d / "saturation.json").read_text())))
        else:
            raise FileNotFoundError(f"{d}: no report.json or saturation.json")
    parts = ([RUN_HEADER, *runs] if runs else []) + ([""] if runs and sats else []) + (
        [SAT_HEADER, *sats] if sats else [])
    return "\n".join(parts)
