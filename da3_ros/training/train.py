"""Train a DA3 network (default ``da3-tiny``) on synthetic multi-view windows.

Usage::

    python -m da3_ros.training.train --out runs/tiny --minutes 7.5 --device cuda
    python -m da3_ros.training.train --out runs/tiny --minutes 5 --resume runs/tiny/checkpoint.pt
    python -m da3_ros.training.train --out runs/more --minutes 8 --init-weights data/models/da3-tiny-synth

The run stops itself after ``--minutes`` of wall time (or ``--max-steps``), then writes
``checkpoint.pt`` (model + optimizer + step + RNG states, for ``--resume``),
``model/`` (``config.json`` + fp16 ``model.safetensors`` in the official layout, loadable
with :func:`da3_ros.model.load_pretrained`) and ``train_log.json`` (losses over steps).
The learning-rate schedule (linear warmup, cosine decay to 5 %) runs over ``--max-steps``
when given, else over the wall-time budget (training seconds are checkpointed, so a resumed
run continues the same schedule). See docs/TRAINING.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from da3_ros.model import build_model
from da3_ros.model.weights import load_pretrained, save_pretrained
from da3_ros.sim.camera_effects import PRESETS as EFFECTS
from da3_ros.training.data import DataConfig, SyntheticWindows, worker_init
from da3_ros.training.losses import LossWeights, total_loss

CHECKPOINT_NAME = "checkpoint.pt"
_NO_DECAY = ("bias", "norm", "pos_embed", "cls_token", "camera_token", "ls1", "ls2", "gamma")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--minutes", type=float, default=7.5, help="wall-time budget of this run")
    p.add_argument("--max-steps", type=int, default=None, help="stop at this step (schedule horizon)")
    p.add_argument("--stop-step", type=int, default=None,
                   help="stop this run at this step without changing the schedule (as an interruption)")
    p.add_argument("--resume", type=Path, default=None, help="checkpoint.pt to continue from")
    p.add_argument("--init-weights", type=Path, default=None,
                   help="start from these weights (a model directory; fresh optimizer and schedule)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="da3-tiny")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-steps", type=int, default=300)
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clip")
    p.add_argument("--views-per-batch", type=int, default=48)
    p.add_argument("--min-views", type=int, default=2)
    p.add_argument("--max-views", type=int, default=8)
    p.add_argument("--size", type=int, nargs=2, default=(168, 224), metavar=("H", "W"),
                   help="base input size (multiples of 14); sizes vary around it")
    p.add_argument("--gap-s", type=float, nargs=2, default=(0.08, 0.8), metavar=("LO", "HI"),
                   help="range of time gaps between consecutive views, s")
    p.add_argument("--shuffle-prob", type=float, default=0.0, help="share of windows with shuffled views")
    p.add_argument("--scan-prob", type=float, default=0.0,
                   help="share of windows on the scan trajectory style (panning, depth changes fast)")
    p.add_argument("--pose-weight", type=float, default=1.0, help="x camera centre/rotation losses")
    p.add_argument("--view-scale-weight", type=float, default=0.0,
                   help="weight of the per-view scale loss (each view's mean depth relative to the window)")
    p.add_argument("--effects-prob", type=float, default=0.0,
                   help="share of windows with a robot camera's degradations (noise, blur, exposure)")
    p.add_argument("--effects", choices=("robot", "severe"), default="robot",
                   help="distribution of those degradations (da3_ros.sim.camera_effects.PRESETS)")
    p.add_argument("--echo", type=int, default=1,
                   help="steps served by one rendered group of windows (re-augmented each time)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (rendering)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--ckpt-minutes", type=float, default=5.0, help="checkpoint period")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on GPU")
    return p.parse_args(argv)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def init_model(preset: str, device: torch.device) -> torch.nn.Module:
    """Random network in train mode; the FOV output starts near 70 degrees (not dead ReLU)."""
    net = build_model(preset)
    if hasattr(net, "cam_dec"):
        with torch.no_grad():
            net.cam_dec.fc_fov[0].weight.mul_(0.1)
            net.cam_dec.fc_fov[0].bias.fill_(1.2)
    return net.to(device).train()


def make_optimizer(net: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with no decay on biases, norms, embeddings and layer scales."""
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or any(k in name for k in _NO_DECAY) else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


def lr_factor(step: int, progress: float, warmup_steps: int) -> float:
    """Linear warmup over ``warmup_steps``, then cosine from 1 to 0.05 over ``progress`` in [0, 1]."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    cos = 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))
    return warm * cos


def rng_state() -> dict:
    """All RNG states (python, numpy, torch CPU and CUDA)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # numpy's key array as a tensor, so the checkpoint loads with torch.load(weights_only=True)
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`'s output."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, net, opt, step: int, train_s: float, args: argparse.Namespace,
                    log: list[dict]) -> None:
    """Write model + optimizer + step + training seconds + RNG states + args + log (atomic)."""
    state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step, "train_s": train_s,
             "rng": rng_state(), "args": {k: str(v) for k, v in vars(args).items()}, "log": log,
             "preset": net.preset.name}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, net, opt) -> tuple[int, float, list[dict]]:
    """Restore a checkpoint into ``net`` and ``opt``; returns (step, train_s, log)."""
    # weights_only: tensors and plain containers only, nothing is unpickled as code
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    return int(state["step"]), float(state["train_s"]), list(state["log"])


def export_weights(net, directory: Path) -> Path:
    """Save the network in the official layout with fp16 weights (a few MB)."""
    half = copy.deepcopy(net).cpu().half().eval()
    return save_pretrained(half, directory)


def data_config(args: argparse.Namespace) -> DataConfig:
    """The synthetic data stream of a run."""
    return DataConfig(min_views=args.min_views, max_views=args.max_views,
                      views_per_batch=args.views_per_batch, base_hw=tuple(args.size), seed=args.seed,
                      gap_s=tuple(args.gap_s), shuffle_prob=args.shuffle_prob, scan_prob=args.scan_prob,
                      effects_prob=args.effects_prob, effects=EFFECTS[args.effects], echo=args.echo)


def train_step(net, opt, batch: dict, device: torch.device, amp: bool, clip: float,
               weights: LossWeights = LossWeights()) -> dict[str, float]:
    """One optimisation step; returns the logged loss terms plus ``grad_norm``."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
        out = net(batch["images"], ref_view_strategy="first")
    loss, logged = total_loss(out, batch, weights)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(net.parameters(), clip))
    logged["grad_norm"] = grad_norm
    logged["skipped"] = float(not math.isfinite(grad_norm))
    if math.isfinite(grad_norm):  # a non-finite batch (degenerate quaternion ...) is skipped
        opt.step()
    return logged


def _loader(cfg: DataConfig, start: int, workers: int) -> DataLoader:
    kw = {"num_workers": workers, "batch_size": None, "shuffle": False, "pin_memory": workers > 0}
    if workers > 0:
        kw.update(worker_init_fn=worker_init, prefetch_factor=4, persistent_workers=True)
    return DataLoader(SyntheticWindows(cfg, start_step=start), **kw)


def _batches(cfg: DataConfig, start: int, workers: int):
    """The batches from step ``start`` on, one at a time (each loader item is a group of them)."""
    for group in _loader(cfg, start, workers):
        yield from group


def train(args: argparse.Namespace) -> dict:
    """Run training as configured; returns a summary dict (also written to train_log.json)."""
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    seed_everything(args.seed)
    net = init_model(args.preset, device)
    if args.init_weights is not None:
        net.load_state_dict(load_pretrained(args.init_weights, preset=args.preset).state_dict())
    opt = make_optimizer(net, args.lr, args.weight_decay)
    step, train_s, log = 0, 0.0, []
    if args.resume is not None:
        step, train_s, log = load_checkpoint(args.resume, net, opt)
        print(f"resumed from {args.resume} at step {step} ({train_s:.0f} s trained)", flush=True)
    amp = device.type == "cuda" and not args.no_amp
    weights = LossWeights(cam_t=args.pose_weight, cam_rot=args.pose_weight, view_scale=args.view_scale_weight)
    budget_s = args.minutes * 60.0
    horizon_s = train_s + budget_s  # schedule horizon when no --max-steps
    ckpt_path, last_ckpt = args.out / CHECKPOINT_NAME, time.monotonic()
    start, views = time.monotonic(), 0
    for batch in _batches(data_config(args), step, args.workers):
        if any(n is not None and step >= n for n in (args.max_steps, args.stop_step)):
            break
        progress = step / args.max_steps if args.max_steps else train_s / horizon_s
        for g in opt.param_groups:
            g["lr"] = args.lr * lr_factor(step, progress, args.warmup_steps)
        t0 = time.monotonic()
        assert int(batch.pop("step")) == step, "data stream out of step"
        logged = train_step(net, opt, batch, device, amp, args.clip, weights)
        step += 1
        train_s += time.monotonic() - t0
        views += batch["images"].shape[0] * batch["images"].shape[1]
        if step % args.log_every == 0 or step == 1:
            elapsed = time.monotonic() - start
            rec = {"step": step, "elapsed_s": round(elapsed, 1), "lr": opt.param_groups[0]["lr"],
                   "views_per_s": round(views / max(elapsed, 1e-6), 1),
                   **{k: round(v, 5) for k, v in logged.items()}}
            log.append(rec)
            print(json.dumps(rec), flush=True)
        if time.monotonic() - last_ckpt > args.ckpt_minutes * 60:
            save_checkpoint(ckpt_path, net, opt, step, train_s, args, log)
            last_ckpt = time.monotonic()
        if time.monotonic() - start >= budget_s:
            break
    save_checkpoint(ckpt_path, net, opt, step, train_s, args, log)
    export_weights(net, args.out / "model")
    summary = {"preset": args.preset, "steps": step, "train_s": round(train_s, 1),
               "wall_s": round(time.monotonic() - start, 1), "views_seen": views,
               "data": asdict(data_config(args)), "args": {k: str(v) for k, v in vars(args).items()},
               "log": log}
    (args.out / "train_log.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m da3_ros.training.train``."""
    summary = train(parse_args(argv))
    print(f"done: {summary['steps']} steps, {summary['wall_s']} s; weights in {summary['args']['out']}/model")


if __name__ == "__main__":
    main()
