"""The memory planner's estimate against every peak measured on the GPU (bench/raw/*.json).

Prints a markdown table: preset, S, measured peak GiB (ours, per implementation), estimate GiB
(``da3_ros.core.memory.estimate_peak_bytes`` with bf16 activations and the measured weight
bytes) and their ratio. Run here, no GPU needed:
    .venv/bin/python bench/planner_check.py
"""

import glob
import json
import os

from da3_ros.core import memory
from da3_ros.model import get_preset

GIB = 2**30
RAW = os.path.join(os.path.dirname(__file__), "raw")
# own-weight bytes (bf16 weights, fp32 camera modules and final head convs), as da3-bench counted
PARAM_GIB = {"da3-large": 0.8763113282620907, "da3-small": 0.07955982908606529}


def measured() -> list[tuple[str, int, float, str, int, int]]:
    """(preset, S, peak GiB, source file, W, H) for ours, from the calls with per-implementation peaks."""
    rows = {}
    for path in sorted(glob.glob(os.path.join(RAW, "call[23]_*.json"))):
        rep = json.load(open(path))
        w, h = (int(v) for v in rep["res"].split("x"))
        for r in rep["rows"]:
            if r["impl"] == "ours" and r["peak_gib"] is not None:
                rows[(rep["preset"], r["views"])] = (r["peak_gib"], os.path.basename(path), w, h)
    return [(p, s, v[0], v[1], v[2], v[3]) for (p, s), v in sorted(rows.items())]


def main() -> None:
    print("| preset | S | measured GiB | estimate GiB | estimate / measured | source |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for preset, views, peak, src, w, h in measured():
        est = memory.estimate_peak_bytes(get_preset(preset), views, h, w, int(PARAM_GIB[preset] * GIB),
                                         act_bytes=2) / GIB
        worst = max(worst, abs(est / peak - 1))
        print(f"| {preset} | {views} | {peak:.3f} | {est:.3f} | {est / peak:.3f} | {src} |")
    print(f"\nworst relative error: {worst:.1%}")


if __name__ == "__main__":
    main()
