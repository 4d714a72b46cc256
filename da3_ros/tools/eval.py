"""``da3-eval``: run the core pipeline over a bag's images offline and score it against ground truth.

The bag's camera images go, in bag order, through the same :class:`~da3_ros.core.pipeline.Pipeline`
the node runs (windowing, prediction, cross-window alignment) and the node's own message
building (:class:`~da3_ros.ros.publishers.OutputPublishers`), as fast as the predictor allows.

``--model`` takes what the node's ``model`` parameter takes (a preset name = RANDOM weights, a
weights directory, a hub id, ``default``) or ``truth``: the ground-truth stand-in fed from the
bag's ``depth_gt`` / ``pose_gt`` (``--scale-range``, ``--depth-noise``, ``--pose-noise``,
``--truth-metric`` inject the errors a real model would make).

With ground truth in the bag (``/<cam>/depth_gt``, ``/<cam>/pose_gt`` as ``da3-synth`` writes),
each view is scored once, in the window that publishes it first. Depth: abs_rel, rmse, delta1 after
per-window median scaling (relative models) or as is (metric). Trajectory: ATE after Sim(3)
(relative) or SE(3) (metric) alignment, RPE; see :mod:`da3_ros.evaluation.metrics`.

Writes into ``--out``: metrics.json, summary.md, per_frame.csv, samples.png, trajectory.png,
per_frame.png, predictions/ (rosbag2 with the node's topics ``/da3_node/...``),
trajectory_<camera>.tum (estimate, fixed frame) and truth_<camera>.tum, points.ply (fused cloud).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from da3_ros.core.config import PipelineConfig
from da3_ros.evaluation.consistency import percent
from da3_ros.evaluation.run import EvalRun
from da3_ros.inference.build import build_engine
from da3_ros.inference.settings import (
    ACCELERATE_SETTINGS,
    ATTENTION_BACKENDS,
    DEFAULT_PROCESS_RES,
    DEFAULT_REF_VIEW_STRATEGY,
    DTYPES,
    REF_VIEW_SETTINGS,
    InferenceSettings,
    devices_form_error,
)
from da3_ros.ros.publishers import OutputPublishers
from da3_ros.sim.standin import GroundTruthPredictor, truth_capacity
from da3_ros.tools.bag.check import check_bag
from da3_ros.tools.bag.frames import BagFrameStream, TruthCache
from da3_ros.tools.bag.io import BagError, BagReader, BagWriter, find_cameras
from da3_ros.tools.bag.node import BagNode
from da3_ros.tools.cli import run_main
from da3_ros.tools.outdir import RunOutput, size_line

LOG = logging.getLogger("da3_ros.tools.eval")


@dataclass
class EvalOptions:
    """What ``da3-eval`` runs (see ``--help`` for each)."""

    model: str = "truth"
    image_topics: list[str] = field(default_factory=list)
    num_view: int = PipelineConfig.num_view
    stride: int = PipelineConfig.stride
    dilations: tuple[int, ...] = PipelineConfig.dilations
    slop_s: float = PipelineConfig.slop_s
    process_res: int = InferenceSettings.process_res  # 0: the weights' recommendation, else 504
    device: str = InferenceSettings.device
    devices: list[str] = field(default_factory=list)
    dtype: str = InferenceSettings.dtype
    attention_backend: str = InferenceSettings.attention_backend
    accelerate: str = InferenceSettings.accelerate
    ref_view_strategy: str = InferenceSettings.ref_view_strategy
    max_frames: int = 0
    min_depth_m: float = 1e-3
    max_depth_m: float = math.inf
    scale_range: tuple[float, float] = (0.5, 2.0)
    depth_noise: float = 0.0
    pose_noise: float = 0.0
    truth_metric: bool = False
    seed: int = 0
    write_bag: bool = False
    plots: bool = True
    write_cloud: bool = True
    write_depth: bool = False
    save_stride: int = 10
    samples: int = 4
    max_cloud_points: int = 500_000
    voxel_size_m: float = 0.0
    progress: bool = True
    overwrite: bool = False
    check_bag: bool = True


def make_predictor(opts: EvalOptions, truth_fn):
    """The predictor ``opts.model`` names: the truth stand-in or a DA3Engine (as the node builds it)."""
    if opts.model == "truth":
        return GroundTruthPredictor(truth_fn, scale_range=opts.scale_range, depth_noise=opts.depth_noise,
                                    pose_noise=opts.pose_noise, seed=opts.seed, metric=opts.truth_metric)
    settings = InferenceSettings(model=opts.model, device=opts.device, devices=list(opts.devices),
                                 dtype=opts.dtype,
                                 process_res=opts.process_res, attention_backend=opts.attention_backend,
                                 ref_view_strategy=opts.ref_view_strategy, accelerate=opts.accelerate)
    engine, _ = build_engine(settings, LOG)
    return engine


def pipeline_config(opts: EvalOptions, cameras: list[str]) -> PipelineConfig:
    """PipelineConfig for these options (node defaults otherwise)."""
    return PipelineConfig(mode="multicam" if len(cameras) > 1 else "temporal", cameras=cameras,
                          num_view=opts.num_view, stride=opts.stride, dilations=opts.dilations,
                          slop_s=opts.slop_s, voxel_size_m=opts.voxel_size_m)


def open_output_bag(out: Path, cameras: list[str], opts: EvalOptions) -> tuple[BagWriter, OutputPublishers]:
    """``out/predictions`` (zstd mcap) and the node's publishers writing into it.

    Images and clouds are kept for every ``opts.save_stride``-th view (poses, camera_info, odometry
    all); ``~/path`` (the whole path so far in every message, O(frames^2) in a bag) goes out once
    at the start, then once at the end (the caller sets ``path_period_s`` to 0 and flushes).
    """
    writer = BagWriter(out / "predictions", fmt="mcap", compress=True, overwrite=True,
                       heavy_every=opts.save_stride)
    pubs = OutputPublishers(BagNode(writer), cameras, "da3_odom")
    pubs.path_period_s = math.inf
    return writer, pubs


def evaluate(bag: str | Path, out_dir: str | Path, opts: EvalOptions, predictor_factory=None,
             note: Callable[[str], None] | None = None) -> dict:
    """Run the evaluation; returns the metrics dict also written to ``out_dir/metrics.json``.

    ``predictor_factory(truth_fn) -> predictor`` replaces :func:`make_predictor` (tests inject
    predictors this way); ``truth_fn(frame)`` gives the bag's truth of a frame. ``note(line)`` hears,
    before the run, what the user should know at once (a bag without any ground truth).

    ``out_dir`` must be new or empty, unless ``opts.overwrite`` (see :class:`RunOutput`); a run that
    fails after writing output leaves it marked ``PARTIAL`` (and a ``partial`` metrics.json when the
    report could still be written).

    Raises:
        BagError: unreadable bag, missing topics, or ``truth`` without ground truth in the bag.
        ToolError: ``out_dir`` holds an older run and ``opts.overwrite`` is off.
        PartialOutputError: the run failed after writing output (its message names it).
    """
    output = RunOutput(out_dir, "da3-eval", opts.overwrite)
    out = output.path
    with BagReader(bag) as reader:
        cams = find_cameras(reader, opts.image_topics)
        if opts.model == "truth":
            missing = [c.name for c in cams if not (c.depth_gt and c.pose_gt and c.camera_info)]
            if missing:
                raise BagError(f"--model truth needs <ns>/depth_gt, <ns>/pose_gt and <ns>/camera_info "
                               f"in the bag; missing for camera(s) {', '.join(missing)}")
        names = [c.name for c in cams]
        any_truth = any(c.depth_gt or c.pose_gt for c in cams)
        if not any_truth and note is not None:
            note(f"no ground truth in {bag} (no <ns>/depth_gt or <ns>/pose_gt topic): depth and trajectory "
                 "are not scored; consistency between windows, trajectory length, rates and latency instead")
        checked = check_bag(reader, [c.image for c in cams]).line() if opts.check_bag else "skipped"
        if opts.progress:
            print(f"da3-eval: checked {bag}: {checked}", file=sys.stderr)
        # frames read ahead of a window: its stride, plus what a rig's sync may hold back
        ahead = opts.stride + 16
        truth = TruthCache(capacity=truth_capacity(opts.num_view, opts.dilations, ahead, len(cams)))
        stream = BagFrameStream(reader, cams, truth, max_frames=opts.max_frames)
        with output.running():
            predictor = (predictor_factory or (lambda fn: make_predictor(opts, fn)))(truth.lookup)
            writer, pubs = open_output_bag(out, names, opts) if opts.write_bag else (None, None)
            run = EvalRun(opts, names, predictor, pipeline_config(opts, names), truth,
                          pubs and pubs.publish_result,
                          have_truth=all(c.depth_gt and c.pose_gt for c in cams),
                          total=stream.total_frames(), depth_dir=out / "depth" if opts.write_depth else None,
                          any_truth=any_truth)
            run.info["bag_check"] = checked
            t0 = time.perf_counter()

            def report(partial: str = "") -> dict:
                return run.report(out, bag=str(bag), elapsed_s=time.perf_counter() - t0,
                                  frames_read=sum(stream.read_counts.values()), partial=partial)

            output.on_fail = report
            try:
                for frame in run.progress(stream):
                    run.push(frame)
                run.finish()
            finally:
                getattr(predictor, "close", lambda: None)()  # a sharded engine's worker processes
                run.close_progress()
                if writer is not None:
                    pubs.path_period_s = 0.0  # the whole path, once, at the end
                    pubs.publish_path_if_due()
                    writer.close()
            return report()


def build_parser() -> argparse.ArgumentParser:
    """Command-line arguments of ``da3-eval``."""
    p = argparse.ArgumentParser(prog="da3-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("bag", help="rosbag2 directory or .mcap / .db3 file")
    p.add_argument("--model", required=True,
                   help="preset (random weights), weights directory, hub id, 'default' or 'truth'")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--image-topics", default="", help="comma-separated image topics (default: all cameras)")
    d = EvalOptions()
    p.add_argument("--num-view", type=int, default=d.num_view)
    p.add_argument("--stride", type=int, default=d.stride)
    p.add_argument("--dilations", default=",".join(map(str, d.dilations)),
                   help="comma-separated frame gaps in a window")
    p.add_argument("--slop", type=float, default=d.slop_s, help="multi-camera sync tolerance, s")
    p.add_argument("--process-res", type=int, default=d.process_res,
                   help=f"long side of the network input; 0: the weights' recommendation, else "
                        f"{DEFAULT_PROCESS_RES}")
    p.add_argument("--device", default=d.device)
    p.add_argument("--gpus", type=int, default=0,
                   help="run each window over this many local GPUs (cuda:0 .. cuda:N-1), its views "
                        "sharded, global attention over all of them; 0 or 1: the single --device")
    p.add_argument("--devices", default="",
                   help="comma-separated devices for one window instead of --gpus (cuda:0,cuda:2; "
                        "cpu,cpu runs the same path on the CPU with gloo)")
    p.add_argument("--dtype", default=d.dtype, choices=DTYPES)
    p.add_argument("--attention-backend", default=d.attention_backend, choices=ATTENTION_BACKENDS)
    p.add_argument("--accelerate", default=d.accelerate, choices=ACCELERATE_SETTINGS,
                   help="GPU fast path as the node's accelerate parameter (auto: on CUDA, eager while "
                        "each window shape compiles in the background; compile_graphs: compile + CUDA "
                        "graphs before the first window of a shape)")
    p.add_argument("--ref-view-strategy", default=d.ref_view_strategy, choices=REF_VIEW_SETTINGS,
                   help="reference view of each window (the node's ref_view_strategy); auto: the "
                   f"weights' recommendation, else {DEFAULT_REF_VIEW_STRATEGY}")
    p.add_argument("--max-frames", type=int, default=0, help="frames per camera (0: all)")
    p.add_argument("--max-depth", type=float, default=math.inf, help="largest truth depth scored, m")
    p.add_argument("--scale-range", type=float, nargs=2, default=(0.5, 2.0), metavar=("LO", "HI"),
                   help="truth stand-in: per-window scale drawn from this range")
    p.add_argument("--depth-noise", type=float, default=0.0, help="truth stand-in: relative depth noise")
    p.add_argument("--pose-noise", type=float, default=0.0, help="truth stand-in: pose noise (m, rad)")
    p.add_argument("--truth-metric", action="store_true", help="truth stand-in acts as a metric model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--voxel-size", type=float, default=0.0, help="voxel size of the fused cloud")
    p.add_argument("--save", default="cloud,plots",
                   help="what to write besides metrics.json, summary.md, the CSV tables and TUM "
                        "trajectories: comma-separated of bag (predictions/: the node's topics), depth "
                        "(depth/<camera>/<stamp>.png, 16-bit), cloud (points.ply), plots; 'all' or 'none'")
    p.add_argument("--save-stride", type=int, default=10,
                   help="bag and depth PNGs keep the images / clouds of every N-th view of a camera (poses, "
                        "camera_info and odometry of every view); 1: all")
    p.add_argument("--no-bag", action="store_true", help="leave 'bag' out of --save")
    p.add_argument("--no-plots", action="store_true", help="leave 'plots' out of --save")
    p.add_argument("--no-check", action="store_true",
                   help="skip reading the whole bag once before the run (chunk CRCs, message counts)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the output of an earlier run in --out (else a non-empty --out is refused)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


SAVE_ITEMS = ("bag", "depth", "cloud", "plots")


def save_items(args: argparse.Namespace) -> set[str]:
    """The outputs ``--save`` (less ``--no-bag`` / ``--no-plots``) asks for (ValueError on an unknown one)."""
    words = {w.strip() for w in args.save.split(",") if w.strip()}
    items = set(SAVE_ITEMS) if "all" in words else set() if "none" in words else words
    unknown = items - set(SAVE_ITEMS)
    if unknown:
        raise ValueError(f"--save: unknown item(s) {', '.join(sorted(unknown))}; choose from "
                         f"{', '.join(SAVE_ITEMS)}, all, none")
    if args.save_stride < 1:
        raise ValueError("--save-stride must be >= 1")
    if args.no_bag:
        items.discard("bag")
    if args.no_plots:
        items.discard("plots")
    return items


def options_from_args(args: argparse.Namespace) -> EvalOptions:
    """EvalOptions from parsed arguments (ValueError on a bad value)."""
    save = save_items(args)
    try:
        dil = tuple(int(x) for x in args.dilations.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--dilations must be comma-separated integers, got {args.dilations!r}") from None
    return EvalOptions(model=args.model, image_topics=[t for t in args.image_topics.split(",") if t],
                       num_view=args.num_view, stride=args.stride, dilations=dil or (1,), slop_s=args.slop,
                       process_res=args.process_res, device=args.device, devices=devices_from_args(args),
                       dtype=args.dtype,
                       attention_backend=args.attention_backend, ref_view_strategy=args.ref_view_strategy,
                       accelerate=args.accelerate,
                       max_frames=args.max_frames,
                       max_depth_m=args.max_depth, scale_range=tuple(args.scale_range),
                       depth_noise=args.depth_noise, pose_noise=args.pose_noise,
                       truth_metric=args.truth_metric, seed=args.seed, voxel_size_m=args.voxel_size,
                       write_bag="bag" in save, plots="plots" in save, write_cloud="cloud" in save,
                       write_depth="depth" in save, save_stride=args.save_stride, progress=not args.quiet,
                       overwrite=args.overwrite, check_bag=not args.no_check)


def devices_from_args(args: argparse.Namespace) -> list[str]:
    """The devices of one window from ``--gpus`` / ``--devices`` (ValueError when both or invalid)."""
    listed = [d.strip() for d in args.devices.split(",") if d.strip()]
    if args.gpus < 0 or (args.gpus > 1 and listed):
        raise ValueError("give --gpus N (N >= 0) or --devices, not both")
    devices = [f"cuda:{i}" for i in range(args.gpus)] if args.gpus > 1 else listed
    problem = devices_form_error(devices)
    if problem:
        raise ValueError(problem)
    return devices


def result_line(m: dict, out: str) -> str:
    """The terminal's one-line result: scores against the truth, or (without any) consistency."""
    counts = (f"{m['frames_processed']}/{m['frames_read']} frames processed, {m['frames_dropped']} dropped")
    if m["ground_truth"] != "none":
        return (f"{m['model']}: abs_rel {m['abs_rel']:.4g} rmse {m['rmse']:.4g} delta1 {m['delta1']:.4g} "
                f"ate {m['ate']:.4g} rpe {m['rpe']:.4g} ({counts}) -> {out}")
    c = m["consistency"]
    length = " + ".join(f"{t['length']:.3g}" for t in c["trajectory"].values())
    scale = "" if m["is_metric"] else f", scale change {percent(c['scale_step']['median']):.2g} %/window"
    return (f"{m['model']}: depth consistency {percent(c['depth_residual']['median']):.2g} % (median over "
            f"{c['depth_residual']['n']} windows){scale}, trajectory {length} {c['trajectory_units']}, "
            f"{c['processing_fps']:.3g} frames/s, window {c['window_time_s']['median'] * 1e3:.4g} ms "
            f"({counts}) -> {out}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``da3-eval``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="da3-eval: %(message)s")

    def work() -> int:
        m = evaluate(args.bag, args.out, options_from_args(args),
                     note=lambda s: print(f"da3-eval: {s}", flush=True))
        print(result_line(m, args.out))
        print(f"wrote {size_line(RunOutput(args.out, 'da3-eval').sizes())} to {args.out}")
        return 0

    return run_main(work, "da3-eval", args.debug)


if __name__ == "__main__":
    sys.exit(main())
