"""Held-out evaluation of a DA3 network on synthetic scenes, through the core pipeline.

Frames are rendered straight from :mod:`da3_ros.sim.scene` (the content ``da3-synth`` writes,
with exact depth), fed to the same :class:`~da3_ros.core.pipeline.Pipeline` +
:class:`~da3_ros.core.engine.DA3Engine` the node and ``da3-eval`` use, and scored with
:mod:`da3_ros.evaluation.metrics` exactly as ``da3-eval`` scores them: depth after one median scale
per window (relative model), each frame scored the first time it is published; ATE / RPE after
one Sim(3) alignment of the whole trajectory.

One view at a time (``--num-view 1``) gives every frame its own window: its depth gets its own
median scale and no pose can be estimated (each view is its own world), so the trajectory is a
constant; its ATE is that of a constant trajectory after the best alignment (the RMS spread
of the true camera centres), reported as ``ate``, with ``ate_note`` saying so.

``--camera-effects robot`` degrades the rendered frames as a robot's camera would
(:mod:`da3_ros.sim.camera_effects`: sensor noise on every frame, and about one frame in three
motion-blurred, under- or over-exposed), deterministically per scene and frame, so every model
and mode sees the same degraded frames. Depth is still scored against the exact rendered depth.

Usage::

    python -m da3_ros.training.evaluate --model data/models/da3-tiny-synth --num-view 6 --stride 3
    python -m da3_ros.training.evaluate --model da3-tiny ...          # random weights
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from da3_ros.core.config import PipelineConfig
from da3_ros.core.engine import DA3Engine
from da3_ros.core.frames import Frame
from da3_ros.core.pipeline import Pipeline
from da3_ros.evaluation import metrics as M
from da3_ros.inference.build import load_network
from da3_ros.sim.camera_effects import PRESETS as EFFECTS
from da3_ros.sim.camera_effects import degrade_frame
from da3_ros.sim.scene import TRAJECTORY_STYLES, default_intrinsics, make_scene, make_trajectory

HELD_OUT = (("room", 501), ("corridor", 502), ("outdoor", 503), ("boxes", 504))


def load_model(model: str, seed: int = 0) -> torch.nn.Module:
    """A weights directory / hub id (strict load), or a preset with random weights seeded by ``seed``."""
    net, _, _ = load_network(model, seed=seed)
    return net


class PerViewPredictor:
    """Runs a predictor on each view of a window alone and returns them as one window.

    Depth is each view's own single-view prediction (so its scale is free per view); every pose
    is the identity, since one view carries no relative pose. Scoring this with one median
    scale per window shows what the network's cross-view attention adds to depth consistency.
    """

    def __init__(self, predictor) -> None:
        self.predictor = predictor
        self.is_metric = predictor.is_metric
        self.name = f"{predictor.name} (one view at a time)"

    def predict(self, frames):
        """Predict each frame alone; stitch into one WindowPrediction."""
        preds = [self.predictor.predict([f]) for f in frames]
        first = preds[0]
        first.frames = list(frames)
        first.depth = [p.depth[0] for p in preds]
        first.confidence = [p.confidence[0] for p in preds]
        first.intrinsics = [p.intrinsics[0] for p in preds]
        first.world_from_cam = np.tile(np.eye(4), (len(frames), 1, 1))
        return first


def render_sequence(kind: str, seed: int, frames: int, width: int, height: int, rate_hz: float,
                    camera_effects: str = "none", trajectory: str = "survey"):
    """A held-out scene: (list of Frame, depth (N, H, W) metres, world_from_cam (N, 4, 4), labels).

    ``camera_effects`` names a :data:`da3_ros.sim.camera_effects.PRESETS` entry applied to each
    frame's image (drawn from ``(seed, frame index)``); the depth stays exact. ``labels`` (N,)
    says what each frame got: "clean", "noise" (sensor noise only) or a ``BAD_KINDS`` name.
    ``trajectory`` is a :data:`~da3_ros.sim.scene.TRAJECTORY_STYLES` entry.
    """
    scene = make_scene(kind, seed)
    stamps, poses = make_trajectory(kind, frames, rate_hz, seed, trajectory)
    intr = default_intrinsics(width, height)
    fx = EFFECTS[camera_effects]
    out, depths, labels = [], [], []
    for i, (s, pose) in enumerate(zip(stamps, poses)):
        rgb, depth = scene.render(pose, intr.K, width, height)
        label = "clean"
        if fx is not None:
            rgb, effect = degrade_frame(rgb, fx, seed, i)
            label = effect.kind or "noise"
        out.append(Frame(image=rgb, stamp_ns=int(s), camera="camera", intrinsics=intr))
        depths.append(np.where(np.isfinite(depth), depth, np.nan))
        labels.append(label)
    return out, np.stack(depths), poses, labels


def _static_ate(truth: np.ndarray) -> float:
    """ATE of a constant trajectory after the best Sim(3) alignment: RMS spread of the centres."""
    c = truth[:, :3, 3]
    return float(np.sqrt(np.mean(np.sum((c - c.mean(0)) ** 2, axis=1))))


def evaluate_sequence(engine, config: PipelineConfig, frames, depth_gt, poses_gt,
                      labels: list[str] | None = None) -> dict:
    """Run one sequence through a fresh Pipeline; returns depth errors and trajectory errors.

    With per-frame ``labels`` the result also has ``frame_errors``: label -> list of
    (abs_rel, delta1) of the frames so labelled.
    """
    pipe = Pipeline(config, engine)
    index = {f.stamp_ns: i for i, f in enumerate(frames)}
    errors, est, by_label = [], {}, {}
    results = [r for f in frames for r in pipe.push(f)] + pipe.flush()
    for r in results:
        idx = [index[f.stamp_ns] for f in r.prediction.frames]
        scale = M.median_scale(r.prediction.depth, [depth_gt[i] for i in idx])
        for j in np.flatnonzero(np.asarray(r.is_new, dtype=bool)):
            errors.append(M.depth_errors(r.prediction.depth[j], depth_gt[idx[j]], scale))
            est[idx[j]] = np.asarray(r.world_from_cam[j], dtype=np.float64)
            if labels is not None and errors[-1].n_valid > 0:
                by_label.setdefault(labels[idx[j]], []).append((errors[-1].abs_rel, errors[-1].delta1))
    out = M.mean_depth_errors(errors)
    if labels is not None:
        out["frame_errors"] = by_label
    order = sorted(est)
    stamps = np.array([frames[i].stamp_ns for i in order], np.int64)
    e_poses, t_poses = np.stack([est[i] for i in order]), poses_gt[order]
    centres = e_poses[:, :3, 3]
    if np.ptp(centres, axis=0).max() < 1e-9:  # one view per window: no trajectory at all
        out.update(ate=_static_ate(t_poses), rpe=math.nan, rpe_rot_deg=math.nan,
                   ate_note="constant trajectory (no pose from one view)")
    else:
        traj = M.trajectory_errors({"camera": (stamps, e_poses)}, {"camera": (stamps, t_poses)},
                                   correct_scale=True)
        out.update(ate=traj.ate, rpe=traj.rpe, rpe_rot_deg=traj.rpe_rot_deg)
    out["frames_scored"] = len(order)
    return out


def evaluate(args: argparse.Namespace) -> dict:
    """Evaluate ``args.model`` on every held-out scene; returns per-scene and mean metrics."""
    torch.set_num_threads(args.threads)
    net = load_model(args.model, args.seed)
    engine = DA3Engine(net, process_res=args.process_res, device="cpu",
                       ref_view_strategy=args.ref_view_strategy)
    if args.per_view:
        engine = PerViewPredictor(engine)
    config = PipelineConfig(mode="temporal", cameras=["camera"], num_view=args.num_view,
                            stride=args.stride if args.num_view > 1 else 1,
                            dilations=tuple(args.dilations), min_views=1)
    per_scene, by_label = {}, {}
    for kind, seed in HELD_OUT[: args.scenes]:
        frames, depth, poses, labels = render_sequence(kind, seed, args.frames, args.width, args.height,
                                                       args.rate, args.camera_effects, args.trajectory)
        res = evaluate_sequence(engine, config, frames, depth, poses, labels)
        for label, errs in res.pop("frame_errors").items():
            by_label.setdefault(label, []).extend(errs)
        per_scene[f"{kind}_{seed}"] = res
        print(kind, seed, json.dumps({k: v for k, v in per_scene[f"{kind}_{seed}"].items()
                                      if k in ("abs_rel", "delta1", "ate")}), flush=True)
    keys = ("abs_rel", "rmse", "delta1", "ate", "rpe", "rpe_rot_deg")
    mean = {k: float(np.mean([m[k] for m in per_scene.values()])) for k in keys}
    # Depth by what the camera did to the frame, over all scenes (frame-averaged).
    by_frame_kind = {label: {"abs_rel": float(np.mean([e[0] for e in errs])),
                             "delta1": float(np.mean([e[1] for e in errs])), "frames": len(errs)}
                     for label, errs in sorted(by_label.items())}
    return {"model": args.model, "per_view": args.per_view, "num_view": args.num_view,
            "stride": config.stride, "dilations": list(config.dilations), "process_res": args.process_res,
            "ref_view_strategy": args.ref_view_strategy, "camera_effects": args.camera_effects,
            "trajectory": args.trajectory,
            "mean": mean, "by_frame_kind": by_frame_kind, "per_scene": per_scene}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="weights dir / hub id, or a preset (random weights)")
    p.add_argument("--num-view", type=int, default=6)
    p.add_argument("--per-view", action="store_true",
                   help="feed the network one view at a time inside each window (see PerViewPredictor)")
    p.add_argument("--stride", type=int, default=3)
    p.add_argument("--dilations", type=int, nargs="+", default=[1])
    p.add_argument("--process-res", type=int, default=224)
    p.add_argument("--ref-view-strategy", default="first")
    p.add_argument("--camera-effects", choices=sorted(EFFECTS), default="none",
                   help="degrade the frames as a robot camera would (see module docstring)")
    p.add_argument("--trajectory", choices=TRAJECTORY_STYLES, default="survey",
                   help="camera path style: survey (looking along the path) or scan (panning far "
                        "left and right, so a window's views see near and far surfaces)")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--scenes", type=int, default=len(HELD_OUT), help="first N held-out scenes")
    p.add_argument("--seed", type=int, default=0, help="torch seed of random weights")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="write the result here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m da3_ros.training.evaluate``."""
    args = parse_args(argv)
    result = evaluate(args)
    print(json.dumps(result["mean"]))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
