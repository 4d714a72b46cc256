"""``da3-bench``: our DA3 network against the upstream one, same weights, same GPU, same run.

For each window size S it times one forward pass (ms per window, views per second), reads
the peak GPU memory, counts FLOPs (torch's FlopCounterMode, each implementation its own) to
report achieved TFLOP/s, and prints the ratio ours / upstream. Optional parts:
``--checks`` (our bf16 against our fp32 and upstream), ``--backends`` (each attention
backend against ``manual``), ``--fit-16gib`` (largest window in 16 GiB, both),
``--levers`` (each performance lever alone, see :mod:`bench.levers`),
``--node-path`` (the node's whole path, see :mod:`bench.node_path`). Results go to
stdout as markdown and, with ``--json``, to a file that ``bench/RESULTS.md`` quotes.

Example (GPU machine)::

    da3-bench --preset da3-large --views 1,2,4,8,16,32,128,512 --graphs --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import torch

from bench.common import (
    DTYPES,
    GIB,
    FlopModel,
    build_upstream,
    compare,
    device_name,
    images_for,
    ours_runner,
    peak_gib,
    release,
    sync,
    time_ms,
    timed_peak,
    upstream_runner,
)
from bench.levers import VARIANTS, levers_from_args, make_ours, sweep
from da3_ros.core.memory import param_bytes
from da3_ros.model import build_model


@dataclass
class Row:
    """One measured configuration."""

    impl: str
    views: int
    ms: float
    views_per_s: float
    peak_gib: float
    tflops: float | None = None
    flops: int | None = None


@dataclass
class Report:
    """Everything one bench run measured."""

    preset: str
    res: str
    device: str
    torch: str
    argv: list[str]
    levers: str = ""
    date_utc: str = ""
    rows: list[Row] = field(default_factory=list)
    checks: dict = field(default_factory=dict)
    fits_16gib: dict = field(default_factory=dict)
    lever_sweep: list = field(default_factory=list)
    node_path: list = field(default_factory=list)
    planner: list = field(default_factory=list)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(prog="da3-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="da3-large")
    p.add_argument("--views", default="1,2,4,8,16,32,128,512", help="comma-separated window sizes S")
    p.add_argument("--res", default="504x378", help="WxH, multiples of 14")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES), help="our weight dtype")
    p.add_argument("--head-bf16", action="store_true", help="final head convs in bf16 too")
    p.add_argument("--backend", default=None, help="attention backend for ours (default: auto/env)")
    p.add_argument("--channels-last", action="store_true", help="channels-last head convolutions")
    p.add_argument("--graphs", action="store_true", help="CUDA-graph replay for S <= --graph-max-views")
    p.add_argument("--graph-max-views", type=int, default=32)
    p.add_argument("--compile", default=None, help="torch.compile mode for ours ('default', ...)")
    p.add_argument("--chunk", type=int, default=None, help="frame chunk for per-frame parts")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-upstream", action="store_true")
    p.add_argument("--no-flops", action="store_true")
    p.add_argument("--checks", action="store_true", help="bf16 vs fp32 and ours vs upstream at S=8")
    p.add_argument("--backends", action="store_true", help="every attention backend vs manual at S=4")
    p.add_argument("--fit-16gib", action="store_true", help="largest S in 16 GiB, ours and upstream")
    p.add_argument("--fit-guess", default=None,
                   help="first S to probe, 'OURS,UPSTREAM' (default: from this run's peaks at S >= 16)")
    p.add_argument("--levers", default=None, help="comma-separated keys of bench_levers.VARIANTS, or 'all'")
    p.add_argument("--lever-views", default="1,8")
    p.add_argument("--node-path", default=None, help="comma-separated S for the node's whole path")
    p.add_argument("--node-gpu-steps", action="store_true",
                   help="node path: also time preprocessing and point cloud on the GPU")
    p.add_argument("--max-seconds", type=float, default=480.0,
                   help="skip remaining work once this much time has passed")
    p.add_argument("--json", default=None, help="write the report as JSON here")
    return p.parse_args(argv)


class Bench:
    """One run: both networks built once with the same weights."""

    def __init__(self, args, device: torch.device) -> None:
        self.args, self.device = args, device
        self.width, self.height = (int(v) for v in args.res.lower().split("x"))
        self.t_start = time.perf_counter()
        self.upstream = None if args.no_upstream else build_upstream(args.preset, device)
        if self.upstream is not None:
            self.state = self.upstream.state_dict()
        else:
            self.state = build_model(args.preset).state_dict()
        self.levers = levers_from_args(args)
        self.ours, self.module, self.plain = make_ours(args.preset, self.state, device, self.levers)
        self.own = {"ours": param_bytes(self.module),
                    "upstream": param_bytes(self.upstream) if self.upstream is not None else 0}
        self.report = Report(args.preset, f"{self.width}x{self.height}", device_name(device),
                             torch.__version__, sys.argv if args.argv is None else args.argv,
                             self.levers.describe(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        # Our FLOPs are counted on a weightless meta copy (same ops; compiled code and CUDA
        # graphs would hide them from the counter).
        meta = build_model(args.preset, device="meta")
        self.flops_ours = FlopModel(lambda s: ours_runner(
            meta, torch.empty(1, s, 3, self.height, self.width, device="meta"), args.chunk))
        self.flops_up = (FlopModel(lambda s: upstream_runner(self.upstream, self._img(s)))
                         if self.upstream is not None else None)

    def _img(self, views: int, seed: int = 0) -> torch.Tensor:
        return images_for(views, self.width, self.height, self.device, seed)

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.t_start

    def _ours_fn(self, views: int):
        if self.levers.graphs and views > self.args.graph_max_views:
            return self.plain  # graphs buy nothing at large S and would pin a big pool
        return self.ours

    def grid(self) -> None:
        """Fill ``report.rows`` for every S of ``--views`` (stops at ``--max-seconds``).

        Up to S = 32: warm-up, median of ``--iters`` runs, then one more run for the peak.
        Above: one warm-up run, then a single run timed and peak-measured at once.
        """
        a = self.args
        for views in [int(v) for v in a.views.split(",")]:
            if self.elapsed() > a.max_seconds:
                self.report.checks.setdefault("skipped_views", []).append(views)
                continue
            images = self._img(views)
            impls = [("ours", ours_runner(self._ours_fn(views), images, a.chunk),
                      ours_runner(self.plain, images, a.chunk), self.flops_ours)]
            if self.upstream is not None:
                up = upstream_runner(self.upstream, images)
                impls.append(("upstream", up, up, self.flops_up))
            for impl, run, plain, flops in impls:
                if views <= 32:
                    ms = time_ms(run, a.warmup, a.iters)
                    peak = peak_gib(plain, self.own[impl])  # a graph replay allocates nothing
                else:
                    run()
                    ms, peak = timed_peak(run, self.own[impl])
                self._add(impl, views, ms, peak, None if a.no_flops else flops(views))
            print(_row_line(self.report, views), flush=True)
            del images, impls
            release()

    def _add(self, impl: str, views: int, ms: float, peak: float, flops: int | None) -> None:
        self.report.rows.append(Row(impl, views, ms, views / ms * 1e3, peak,
                                    None if flops is None else flops / ms / 1e9, flops))

    def checks(self) -> None:
        """Our levers vs our fp32 (sdpa) and ours vs upstream (fp32 and bf16 autocast), S=8."""
        images = self._img(8, seed=1)
        ref = build_model(self.args.preset, device=self.device, attention_backend="sdpa")
        ref.load_state_dict(self.state)
        with torch.inference_mode():
            out_ref = ref(images, ref_view_strategy="first")
            out = self.ours(images, ref_view_strategy="first")
        c = self.report.checks
        c["ours_levers_vs_ours_fp32_S8"] = compare(out, out_ref)
        if self.upstream is not None:
            with torch.no_grad():
                out_up = self.upstream(images, None, None, [], False, False, "first")
            out_up_bf16 = upstream_runner(self.upstream, images)()
            c["ours_fp32_vs_upstream_fp32_S8"] = compare(out_ref, out_up)
            c["upstream_bf16_autocast_vs_ours_fp32_S8"] = compare(out_up_bf16, out_ref)
            c["ours_levers_vs_upstream_bf16_autocast_S8"] = compare(out, out_up_bf16)
        del ref
        release()

    def backends(self) -> None:
        """Each attention backend at S=4, bf16 weights: ms and error against manual fp32."""
        from da3_ros.model.attention import BACKENDS, AttentionBackendError

        images = self._img(4, seed=2)
        ref_net = build_model(self.args.preset, device=self.device, attention_backend="manual")
        ref_net.load_state_dict(self.state)
        with torch.inference_mode():
            ref = ref_net(images, ref_view_strategy="first")
        del ref_net
        net = build_model(self.args.preset, device=self.device, attention_backend="manual")
        net.load_state_dict(self.state)
        net.set_dtype(torch.bfloat16)
        results = {}
        for name in BACKENDS:
            try:
                net.set_attention_backend(name)
                run = ours_runner(net, images)
                results[name] = {"desc": net.attention_desc, "ms": time_ms(run, 2, 5), **compare(run(), ref)}
            except (AttentionBackendError, RuntimeError) as exc:
                results[name] = {"error": str(exc).splitlines()[0][:300]}
        self.report.checks["backends_bf16_vs_manual_fp32_S4"] = results
        del net
        release()

    def fit_16gib(self) -> None:
        """Largest S under a 16 GiB cap, bracketed from a linear fit of the measured peaks.

        Only the implementation under test is on the GPU while it is probed (the other one is
        moved to the CPU). Ours runs without CUDA graphs (a graph per probed size is waste).
        The weights are kept as a host copy: ``--levers`` builds its variants from them next.
        """
        # The state dict references upstream's GPU tensors (moving upstream to the CPU would not
        # free them): keep a host copy instead, so the fit is not charged for them.
        self.state = {k: v.to("cpu") for k, v in self.state.items()}
        if hasattr(self.ours, "reset"):
            self.ours.reset()
        guesses = dict(zip(("ours", "upstream"), (int(v) for v in self.args.fit_guess.split(",")))) \
            if self.args.fit_guess else {}
        for impl in ("ours", "upstream"):
            if impl == "upstream" and self.upstream is None:
                continue
            rows = sorted((r for r in self.report.rows if r.impl == impl and r.views >= 16),
                          key=lambda r: r.views)
            if impl in guesses:
                guess = guesses[impl]
            elif len(rows) >= 2:
                r0, r1 = rows[-2], rows[-1]
                slope = (r1.peak_gib - r0.peak_gib) / (r1.views - r0.views)
                guess = max(1, int(r1.views + (16.0 - r1.peak_gib) / slope))
            else:
                continue
            if impl == "ours":
                if self.upstream is not None:
                    self.upstream.to("cpu")
                make = lambda s: ours_runner(self.plain, self._img(s), self.args.chunk)  # noqa: E731
            else:
                self.module.to("cpu")
                self.upstream.to(self.device)
                make = lambda s: upstream_runner(self.upstream, self._img(s))  # noqa: E731
            release()
            self.report.fits_16gib[impl] = bracket_16gib(make, guess)
            print(f"# fits 16 GiB, {impl}: {self.report.fits_16gib[impl]}", flush=True)


def bracket_16gib(make_run, guess: int, limit_gib: float = 16.0, step: float = 0.05,
                  max_tries: int = 5) -> dict:
    """Largest tried S that runs under a ``limit_gib`` cap and the smallest that fails.

    Probes ``guess``, then steps down by ``2 * step`` until one fits, then up by ``step``
    until one fails (or ``max_tries``). Failures keep the first line of their error.
    """
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, limit_gib * GIB / total))
    fits, fails, tried = 0, None, []

    def probe(views: int) -> str:
        try:
            out = make_run(views)()
            sync()
            del out
            return ""
        except torch.OutOfMemoryError as exc:
            return "OOM: " + str(exc).splitlines()[0][:160]
        except RuntimeError as exc:  # cuDNN / cuBLAS report a failed allocation their own way
            if "memory" in str(exc).lower() or "CUDNN_STATUS" in str(exc):
                return "RuntimeError: " + str(exc).splitlines()[0][:160]
            raise
        finally:
            release()

    s = guess
    for _ in range(max_tries):
        err = probe(s)
        tried.append((s, err or "ok", round(torch.cuda.max_memory_reserved() / GIB, 2)))
        torch.cuda.reset_peak_memory_stats()
        if not err:
            fits = max(fits, s)
        else:
            fails = s if fails is None else min(fails, s)
        if fails is not None and fits and fails <= math.ceil(fits * (1 + step)):
            break
        s = int(s * (1 + step)) + 1 if not err else max(1, int(s * (1 - 2 * step)))
    torch.cuda.set_per_process_memory_fraction(1.0)
    return {"fits": fits, "fails": fails, "tried": tried, "limit_gib": limit_gib,
            "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")}


def _row_line(report: Report, views: int) -> str:
    rows = {r.impl: r for r in report.rows if r.views == views}
    ours, up = rows.get("ours"), rows.get("upstream")
    ratio = f"{ours.ms / up.ms:.3f}" if up else "-"
    tf = f"{ours.tflops:.0f}" if ours.tflops is not None else "-"
    tf_up = f"{up.tflops:.0f}" if up and up.tflops is not None else "-"
    up_txt = f"{up.ms:9.1f} {up.peak_gib:6.2f} {tf_up:>5}" if up else "        -      -     -"
    ours_txt = f"{ours.ms:9.1f} {ours.peak_gib:6.2f} {ours.views_per_s:8.1f} {tf:>5}"
    return f"| {views:4d} | {ours_txt} | {up_txt} | {ratio} |"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``da3-bench``."""
    args = parse_args(argv)
    args.argv = argv
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True  # both sides get TF32 for their fp32 matmuls
    torch.backends.cudnn.allow_tf32 = True
    b = Bench(args, device)
    attn = getattr(b.module, "attention_desc", "?")
    print(f"# da3-bench {args.preset} {b.width}x{b.height} on {b.report.device}, torch {torch.__version__},"
          f" {b.report.date_utc}; ours: {b.report.levers}, attention={attn}", flush=True)
    print("|    S |   ours ms    GiB   view/s TFLOP/s | upstream ms  GiB TFLOP/s | ours/upstream ms |",
          flush=True)

    def save() -> None:  # after every phase, so a run cut off at its time limit keeps what it has
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(asdict(b.report), fh, indent=1,
                          default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o))

    if args.views:
        b.grid()
        save()
    for flag, step in (("checks", b.checks), ("backends", b.backends)):
        if getattr(args, flag):  # --max-seconds bounds the grid; the step's own timeout bounds these
            step()
            save()
    if args.node_path:
        from bench.node_path import node_path

        for s in [int(v) for v in args.node_path.split(",")]:
            # the network already has bf16 weights: the engine needs no autocast on top
            for gpu_steps in (False, True) if args.node_gpu_steps else (False,):
                b.report.node_path.append(node_path(b.ours, device, s, dtype=torch.float32,
                                                    gpu_steps=gpu_steps))
                print(f"# node path S={s}: {json.dumps(b.report.node_path[-1])}", flush=True)
        save()
    if args.fit_16gib and device.type == "cuda":
        b.fit_16gib()
    if b.report.rows:
        try:
            from bench.node_path import planner_vs_measured

            b.report.planner = planner_vs_measured(args.preset, b.module, b.report.rows, b.width,
                                                   b.height, DTYPES[args.dtype])
        except Exception as exc:  # noqa: BLE001 - the grid above is still worth writing out
            b.report.planner = [{"error": f"{type(exc).__name__}: {exc}"}]
    if args.levers and b.elapsed() < args.max_seconds:
        names = list(VARIANTS) if args.levers == "all" else [n.strip() for n in args.levers.split(",")]
        b.ours = b.module = b.upstream = None
        release()
        lever_views = [int(v) for v in args.lever_views.split(",")]
        b.report.lever_sweep = sweep(args.preset, b.state, device, lever_views, b.width, b.height, names,
                                     b.t_start + args.max_seconds)
    print(json.dumps({"checks": b.report.checks, "fits_16gib": b.report.fits_16gib,
                      "planner": b.report.planner}, indent=1), flush=True)
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
