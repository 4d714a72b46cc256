"""``make demo``: the bundled bag through the live node with the bundled model, then its report.

Three steps, each on the path a user runs:

1. ``da3-replay``: starts ``da3_node`` (its own process, loopback-only DDS, a domain id of its
   own) with ``config/da3_replay.yaml`` and the chosen weights, plays the bundled bag into it
   in real time and records every output topic to a bag; reports latency, output rate and
   that every input was accounted for.
2. ``da3-eval``: runs the same core pipeline over the bag offline and scores depth and
   trajectory against the bag's ground truth (metrics.json, summary.md, depth grids,
   trajectory plot, PLY of the fused cloud, TUM trajectory, output bag).
3. Prints where everything is and the headline numbers.

``--weights`` takes what the node's ``model`` parameter takes: ``default`` (the bundled
``data/models/da3-tiny-synth``), a weights directory (official checkpoints included), a hub id,
or a preset name (random weights: plumbing only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from da3_ros.inference.settings import REF_VIEW_SETTINGS
from da3_ros.inference.sources import BUNDLED_MODEL, bundled_model_dir
from da3_ros.tools.cli import run_main

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BAG = REPO / "data" / "room"


def resolve_weights(weights: str) -> str:
    """The model the demo runs: ``default`` -> the bundled trained model directory."""
    if weights != "default":
        return weights
    bundled = bundled_model_dir()
    if bundled is not None and (bundled / "model.safetensors").is_file():
        return str(bundled)
    print(f"demo: warning: bundled model {BUNDLED_MODEL} not found; the node falls back to "
          "da3-tiny with random weights (plumbing only)", file=sys.stderr)
    return "default"


def write_node_params(out: Path, weights: str, args: argparse.Namespace) -> Path:
    """``config/da3_replay.yaml`` with the demo's model and inference settings; returns its path."""
    params = yaml.safe_load((REPO / "config" / "da3_replay.yaml").read_text())
    node = params["/**"]["ros__parameters"]
    node.update(model=weights, process_res=args.process_res, device=args.device, num_view=args.num_view,
                stride=args.stride, ref_view_strategy=args.ref_view_strategy)
    path = out / "node_params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def step(title: str) -> float:
    """Print a progress line; returns the start time."""
    print(f"\n=== {title}", flush=True)
    return time.perf_counter()


def run_demo(args: argparse.Namespace) -> int:
    """The three steps; returns the exit code."""
    from da3_ros.tools.eval import EvalOptions, evaluate
    from da3_ros.tools.replay.cli import ReplayOptions, replay

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    weights = resolve_weights(args.weights)
    params = write_node_params(out, weights, args)

    t0 = step(f"1/3 live node: replaying {args.bag} into da3_node (model {weights}) over loopback DDS")
    rep = replay(args.bag, out / "replay", ReplayOptions(spawn_node=True, params=str(params),
                                                         rate=args.rate, overwrite=True))
    lat = rep["latency_ms"]
    print(f"    {rep['inputs']} images played, {rep['outputs_matched']} with output, latency mean "
          f"{lat['mean']:.0f} ms, node drops {rep['node'].get('drops_total', 'n/a')}, all accounted: "
          f"{rep['all_accounted']} ({time.perf_counter() - t0:.0f} s)", flush=True)

    t0 = step("2/3 evaluation: the same pipeline offline against the bag's ground truth")
    metrics = evaluate(args.bag, out / "report", EvalOptions(
        model=weights, process_res=args.process_res, device=args.device, num_view=args.num_view,
        stride=args.stride, ref_view_strategy=args.ref_view_strategy, overwrite=True, write_bag=True))
    print(f"    done ({time.perf_counter() - t0:.0f} s)", flush=True)

    step("3/3 results")
    summary = {
        "model": weights,
        "abs_rel": metrics.get("abs_rel"), "delta1": metrics.get("delta1"), "ate": metrics.get("ate"),
        "replay_latency_mean_ms": lat["mean"], "replay_all_accounted": rep["all_accounted"],
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1))
    print(f"    depth   abs_rel {metrics.get('abs_rel', float('nan')):.3f}   "
          f"delta1 {metrics.get('delta1', float('nan')):.3f}")
    print(f"    poses   ATE {metrics.get('ate', float('nan')):.3f} m (Sim(3)-aligned)")
    print(f"    report  {out / 'report' / 'summary.md'}")
    print(f"    plots   {out / 'report' / 'samples.png'}, {out / 'report' / 'trajectory.png'}")
    print(f"    cloud   {out / 'report' / 'points.ply'}")
    print(f"    live    {out / 'replay' / 'summary.md'} (node outputs: {out / 'replay' / 'recorded'})")
    return 0 if rep["all_accounted"] else 3


def build_parser() -> argparse.ArgumentParser:
    """Command-line arguments of the demo."""
    p = argparse.ArgumentParser(prog="da3-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="default", help="default | weights dir | hub id | preset")
    p.add_argument("--bag", default=str(DEFAULT_BAG))
    p.add_argument("--out", default=str(REPO / "out" / "demo"))
    # 0 / auto: what the weights recommend in their config.json (the bundled model: 224 px,
    # first view as reference, as it was trained); official weights: 504, saddle_balanced.
    p.add_argument("--process-res", type=int, default=0, help="long side of the network input")
    p.add_argument("--ref-view-strategy", default="auto",
                   choices=REF_VIEW_SETTINGS)
    p.add_argument("--device", default="auto")
    p.add_argument("--num-view", type=int, default=4)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--rate", type=float, default=1.0, help="replay rate factor")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the demo (``make demo``)."""
    args = build_parser().parse_args(argv)
    return run_main(lambda: run_demo(args), "da3-demo", args.debug)


if __name__ == "__main__":
    sys.exit(main())
