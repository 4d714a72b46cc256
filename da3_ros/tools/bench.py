"""``da3-bench``: our DA3 network against the upstream one, same weights, same GPU, same run.

For each window size S it times one forward pass (ms per window, views per second), reads
the peak GPU memory, counts the FLOPs of our forward (torch's FlopCounterMode) to report
achieved TFLOP/s, and prints the ratio ours / upstream. It also checks our bf16 outputs
against our fp32 outputs and against upstream's, and (``--backends``) times each attention
backend against the ``manual`` reference. Results go to stdout as a markdown table and,
with ``--json``, to a file that ``bench/RESULTS.md`` quotes.

Upstream is run the way its API runs it: fp32 weights under bf16 autocast, no_grad.
Ours runs with the levers given on the command line (``--dtype``, ``--backend``, ...).

Example (GPU machine)::

    da3-bench --preset da3-large --views 1,2,4,8,16,32,128,512 --res 504x378 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from da3_ros.model import build_model

GIB = 1024**3
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Row:
    """One measured configuration."""

    impl: str
    views: int
    ms: float
    views_per_s: float
    peak_gib: float
    tflops: float | None = None
    note: str = ""


@dataclass
class Report:
    """Everything one bench run measured."""

    preset: str
    res: str
    device: str
    torch: str
    argv: list[str]
    rows: list[Row] = field(default_factory=list)
    checks: dict = field(default_factory=dict)
    fits_16gib: dict = field(default_factory=dict)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], object], warmup: int, iters: int) -> float:
    """Median wall time of ``fn`` in ms, synchronising the GPU around each call."""
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def peak_gib(fn: Callable[[], object]) -> float:
    """Peak GPU memory (GiB, weights included) of one call of ``fn``; NaN on CPU."""
    if not torch.cuda.is_available():
        return float("nan")
    _sync()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    fn()
    _sync()
    return torch.cuda.max_memory_allocated() / GIB


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (matrix products and convolutions, as torch counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def build_upstream(preset: str, device: torch.device) -> torch.nn.Module | None:
    """The upstream DepthAnything3Net for ``preset`` (fp32, eval), or None if not installed."""
    try:
        from depth_anything_3.cfg import create_object, load_config
        from depth_anything_3.registry import MODEL_REGISTRY
    except ImportError:
        return None
    net = create_object(load_config(MODEL_REGISTRY[preset]))
    return net.to(device).eval()


def upstream_runner(net: torch.nn.Module, images: torch.Tensor) -> Callable[[], object]:
    """Call upstream as its API does: no_grad + bf16 autocast (fp16 where bf16 is missing)."""
    dtype = torch.bfloat16 if (images.is_cuda and torch.cuda.is_bf16_supported()) else torch.float32

    def run():
        with torch.no_grad(), torch.autocast(images.device.type, dtype=dtype,
                                              enabled=dtype != torch.float32):
            return net(images, None, None, [], False, False, "first")

    return run


def ours_runner(net: torch.nn.Module, images: torch.Tensor, chunk: int | None) -> Callable[[], object]:
    """Call our network under inference_mode with reference view ``first`` (as benchmarks do)."""

    def run():
        with torch.inference_mode():
            return net(images, ref_view_strategy="first", frame_chunk=chunk)

    return run


def _get(out, key: str) -> torch.Tensor:
    return out[key] if isinstance(out, dict) else getattr(out, key)


def compare(a, b) -> dict:
    """Relative errors of depth, confidence, extrinsics and intrinsics between two outputs."""
    res = {}
    for key in ("depth", "depth_conf", "extrinsics", "intrinsics"):
        x, y = _get(a, key).float(), _get(b, key).float()
        scale = y.abs().mean().clamp_min(1e-6)
        res[key] = {"mean_rel": float((x - y).abs().mean() / scale),
                    "max_rel": float((x - y).abs().max() / scale)}
    return res


def images_for(views: int, width: int, height: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """A deterministic normalised-looking batch ``(1, S, 3, H, W)`` fp32."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(1, views, 3, height, width, generator=gen).to(device)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(prog="da3-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="da3-large")
    p.add_argument("--views", default="1,2,4,8,16,32,128,512",
                   help="comma-separated window sizes S")
    p.add_argument("--res", default="504x378", help="WxH, multiples of 14")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    p.add_argument("--backend", default=None, help="attention backend for ours (default: auto/env)")
    p.add_argument("--chunk", type=int, default=None, help="frame chunk for per-frame parts")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-upstream", action="store_true")
    p.add_argument("--no-flops", action="store_true")
    p.add_argument("--fit-16gib", action="store_true",
                   help="find the largest S that fits in 16 GiB for both implementations")
    p.add_argument("--backends", action="store_true",
                   help="time and check every attention backend at S=4 against manual fp32")
    p.add_argument("--max-seconds", type=float, default=480.0,
                   help="skip remaining (larger) sizes once this much time has passed")
    p.add_argument("--json", default=None, help="write the report as JSON here")
    return p.parse_args(argv)


def bench_sizes(args, report: Report, ours, upstream, device, width, height, t_start) -> None:
    """Fill ``report.rows`` for every S of ``--views`` (stops early at ``--max-seconds``)."""
    for views in [int(v) for v in args.views.split(",")]:
        if time.perf_counter() - t_start > args.max_seconds:
            report.checks.setdefault("skipped_views", []).append(views)
            continue
        images = images_for(views, width, height, device)
        iters = args.iters if views <= 32 else max(2, args.iters // 2)
        run = ours_runner(ours, images, args.chunk)
        ms = time_ms(run, args.warmup, iters)
        flops = None if args.no_flops else count_flops(run)
        report.rows.append(Row("ours", views, ms, views / ms * 1e3, peak_gib(run),
                               None if flops is None else flops / ms / 1e9))
        if upstream is not None:
            up = upstream_runner(upstream, images)
            ms_up = time_ms(up, args.warmup, iters)
            report.rows.append(Row("upstream", views, ms_up, views / ms_up * 1e3, peak_gib(up),
                                   None if flops is None else flops / ms_up / 1e9))
        print(_row_line(report, views), flush=True)
        del images
        torch.cuda.empty_cache() if torch.cuda.is_available() else None


def _row_line(report: Report, views: int) -> str:
    rows = {r.impl: r for r in report.rows if r.views == views}
    ours, up = rows.get("ours"), rows.get("upstream")
    ratio = f"{ours.ms / up.ms:.3f}" if up else "-"
    tf = f"{ours.tflops:.0f}" if ours.tflops is not None else "-"
    up_txt = f"{up.ms:9.1f} {up.peak_gib:6.2f}" if up else "        -      -"
    ours_txt = f"{ours.ms:9.1f} {ours.peak_gib:6.2f} {ours.views_per_s:8.1f} {tf:>5}"
    return f"| {views:4d} | {ours_txt} | {up_txt} | {ratio} |"


def fit_16gib(make_run: Callable[[int], Callable[[], object]], hint: int, limit_gib: float = 16.0) -> int:
    """Largest S whose forward succeeds under a ``limit_gib`` cap (doubling then bisection)."""
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, limit_gib * GIB / total))

    def fits(views: int) -> bool:
        try:
            make_run(views)()
            _sync()
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            torch.cuda.empty_cache()

    lo, hi = 0, max(1, hint)
    while fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > max(1, lo // 32):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    torch.cuda.set_per_process_memory_fraction(1.0)
    return lo


def run_checks(args, report: Report, ours, upstream, device, width, height) -> None:
    """bf16 vs fp32 (ours) and ours vs upstream at S=8; per-backend agreement at S=4."""
    images = images_for(8, width, height, device, seed=1)
    ref = build_model(args.preset, device=device, attention_backend="manual" if not device.type == "cuda"
                      else "sdpa")
    ref.load_state_dict(ours.state_dict())
    ref.float()
    with torch.inference_mode():
        out_ref = ref(images, ref_view_strategy="first")
        out = ours(images, ref_view_strategy="first")
    report.checks["ours_vs_ours_fp32_S8"] = compare(out, out_ref)
    if upstream is not None:
        with torch.no_grad():
            out_up = upstream(images, None, None, [], False, False, "first")
        report.checks["ours_fp32_vs_upstream_fp32_S8"] = compare(out_ref, out_up)
        report.checks["ours_vs_upstream_bf16_autocast_S8"] = compare(out, upstream_runner(upstream, images)())
    del ref
    if args.backends:
        report.checks["backends_S4"] = check_backends(args, ours, device, width, height)


def check_backends(args, ours, device, width, height) -> dict:
    """Each attention backend at S=4: ms and error against the manual backend in fp32."""
    from da3_ros.model.attention import BACKENDS, AttentionBackendError

    images = images_for(4, width, height, device, seed=2)
    results = {}
    ours.set_attention_backend("manual")
    ref_net = build_model(args.preset, device=device, attention_backend="manual")
    ref_net.load_state_dict(ours.state_dict())
    ref_net.float()
    with torch.inference_mode():
        ref = ref_net(images, ref_view_strategy="first")
    del ref_net
    for name in BACKENDS:
        try:
            ours.set_attention_backend(name)
        except AttentionBackendError as exc:
            results[name] = {"error": str(exc).splitlines()[0]}
            continue
        run = ours_runner(ours, images, None)
        ms = time_ms(run, 1, 3)
        results[name] = {"ms": ms, "desc": getattr(ours, "attention_desc", name), **compare(run(), ref)}
    ours.set_attention_backend(args.backend)
    return results


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``da3-bench``."""
    args = parse_args(argv)
    width, height = (int(v) for v in args.res.lower().split("x"))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    t_start = time.perf_counter()
    report = Report(args.preset, f"{width}x{height}",
                    torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
                    torch.__version__, sys.argv if argv is None else argv)
    upstream = None if args.no_upstream else build_upstream(args.preset, device)
    ours = build_model(args.preset, device=device, attention_backend=args.backend)
    if upstream is not None:
        ours.load_state_dict(upstream.state_dict())  # same random weights on both sides
    ours.set_dtype(DTYPES[args.dtype]) if args.dtype != "fp32" else None
    print(f"# da3-bench {args.preset} {width}x{height} on {report.device}, torch {torch.__version__}, "
          f"ours: {args.dtype} attention={getattr(ours, 'attention_desc', '?')}", flush=True)
    print("|    S |   ours ms    GiB   view/s TFLOP/s | upstream ms  GiB | ours/upstream |", flush=True)
    bench_sizes(args, report, ours, upstream, device, width, height, t_start)
    run_checks(args, report, ours, upstream, device, width, height)
    if args.fit_16gib and device.type == "cuda":
        hint = 64
        report.fits_16gib["ours"] = fit_16gib(
            lambda s: ours_runner(ours, images_for(s, width, height, device), args.chunk), hint)
        if upstream is not None:
            report.fits_16gib["upstream"] = fit_16gib(
                lambda s: upstream_runner(upstream, images_for(s, width, height, device)), hint)
    print(json.dumps({"checks": report.checks, "fits_16gib": report.fits_16gib}, indent=1), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(asdict(report), fh, indent=1, default=lambda o: None if isinstance(o, float)
                      and math.isnan(o) else str(o))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
