"""flash-attn-4 against cuDNN SDPA inside our da3-large (issue 14): one device call on the H200.

    python3 bench/flash_check.py --out DIR          # GPU machine, ~5-7 minutes
    python3 bench/flash_check.py --out DIR --dry    # CPU, tiny preset and size: checks the script

Steps, each with a time guard (the whole run stays inside --budget seconds), results written
to DIR/flash_check.json after every step and a summary printed at the end:

1. env: versions, GPU, and whether ``flash_attn.cute`` imports (the exact error if not; the
   backends that do work still run every step).
2. parity: da3-large, random weights, S=4 at 504x378, each backend with bf16 weights against
   ``manual`` attention with fp32 weights, judged by the tolerance bench/RESULTS.md states in
   "Accuracy" (TF32 on for fp32 matmuls, as da3-bench runs).
3. kernel: the attention kernel alone on the global-attention shape (1, S*973, 16, 64) in the
   network's layout (strided views of one qkv projection), S = 8, 32, 128, 512.
4. network: the whole network, eager, bf16 weights, S = 8, 32, 128, 512, per backend (ms,
   views/s, peak GiB, TFLOP/s of the whole forward); in the largest-S run every
   global-attention call is timed with CUDA events through a wrapper on the attention
   function (FLOPs 4*B*H*N^2*D per call): attention TFLOP/s inside the network.
5. compiled: S <= 32 with regional torch.compile (dynamic shapes) + CUDA graphs
   (``da3_ros.model.accel`` through ``bench_levers.make_ours``), per backend.
6. fit16: the largest window that runs in 16 GiB, per backend (``da3-bench --fit-16gib``'s
   bracketing), eager, ``expandable_segments``, in a child process so that nothing else of
   this run counts against the cap.

Timing, peaks, FLOP counting, the builders and the 16 GiB bracket are da3-bench's own
(:mod:`bench.common`, :mod:`bench.levers`, :mod:`bench.network`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when run as a file

import torch  # noqa: E402

from bench.common import (  # noqa: E402
    FlopModel,
    compare,
    device_name,
    images_for,
    ours_runner,
    peak_gib,
    release,
    sync,
    time_ms,
    timed_peak,
)
from bench.levers import Levers, make_ours  # noqa: E402
from da3_ros.core.memory import param_bytes  # noqa: E402
from da3_ros.model import build_model, get_preset  # noqa: E402
from da3_ros.model.attention import AttentionBackendError, flash_attn_candidates, get_attention_fn  # noqa: E402

# bench/RESULTS.md, "Accuracy (stated tolerance)": bf16 against our fp32 output, relative to
# the mean magnitude of the reference.
TOLERANCE = {("depth", "mean_rel"): 5e-4, ("depth", "max_rel"): 1e-3, ("depth_conf", "mean_rel"): 1e-4,
             ("intrinsics", "max_rel"): 1e-4, ("extrinsics", "mean_rel"): 2e-2,
             ("extrinsics", "max_rel"): 0.10}
FULL = {"preset": "da3-large", "res": "504x378", "views": "8,32,128,512", "parity_views": 4,
        "compiled_views": "32,8", "backends": "flash_attn,sdpa_cudnn", "fit_guess": 388, "budget": 420}
# --dry: what runs on a CPU in a minute or two; sdpa stands in for cuDNN SDPA there.
DRY = {"preset": "da3-tiny", "res": "56x42", "views": "2,4,8", "parity_views": 2,
       "compiled_views": "4", "backends": "flash_attn,sdpa", "fit_guess": 8, "budget": 600}
STEPS = ("env", "parity", "kernel", "network", "compiled", "fit16")
STEP_MAX_S = {"env": 60, "parity": 90, "kernel": 75, "network": 150, "compiled": 200, "fit16": 110}


class StepTimeout(Exception):
    """A step ran past its time guard."""


@contextlib.contextmanager
def guard(seconds: float):
    """Raise :class:`StepTimeout` in the main thread once ``seconds`` have passed."""
    def fire(signum, frame):
        raise StepTimeout(f"time guard of {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(1.0, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def parse_args(argv=None) -> argparse.Namespace:
    """Command line; unset options take the full (H200) or --dry defaults."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for flash_check.json")
    p.add_argument("--dry", action="store_true", help="tiny preset and size, on the CPU if no GPU")
    p.add_argument("--preset")
    p.add_argument("--res", help="WxH, multiples of 14")
    p.add_argument("--views", help="window sizes of the kernel and network steps")
    p.add_argument("--parity-views", type=int)
    p.add_argument("--compiled-views", help="window sizes (<= 32) for compile + CUDA graphs")
    p.add_argument("--backends", help="attention backends to compare")
    p.add_argument("--fit-guess", type=int, help="first S the 16 GiB bracket probes")
    p.add_argument("--budget", type=float, help="seconds for the whole run")
    p.add_argument("--steps", default=",".join(STEPS), help="which steps to run")
    p.add_argument("--fit-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key, value in (DRY if args.dry else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.width, args.height = (int(v) for v in args.res.lower().split("x"))
    args.views = [int(v) for v in str(args.views).split(",") if v]
    args.compiled_views = [int(v) for v in str(args.compiled_views).split(",") if v]
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    return args


class Check:
    """One run: the weights, the report, the clock."""

    def __init__(self, args) -> None:
        self.args = args
        self.t0 = time.perf_counter()
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        cfg = get_preset(args.preset)
        self.heads, self.head_dim = cfg.num_heads, cfg.embed_dim // cfg.num_heads
        self.tokens = (args.width // cfg.patch_size) * (args.height // cfg.patch_size) + 1
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.report: dict = {"meta": {}, "steps": {}, "backends": list(args.backends)}
        self._state = None
        self._flops = None
        self.step_limit = 0.0

    def left(self) -> float:
        """Seconds left of the budget."""
        return self.args.budget - (time.perf_counter() - self.t0)

    def save(self) -> None:
        """Write the report so far (a run cut short keeps what it has)."""
        (self.out / "flash_check.json").write_text(json.dumps(self.report, indent=1, default=_json_default))

    @property
    def state(self) -> dict:
        """One set of random fp32 weights (CPU) for every network of the run."""
        if self._state is None:
            torch.manual_seed(0)
            self._state = build_model(self.args.preset).state_dict()
        return self._state

    def flops(self, views: int) -> int:
        """FLOPs of one forward at ``views`` (counted on a weightless meta copy, as da3-bench)."""
        if self._flops is None:
            meta = build_model(self.args.preset, device="meta")
            self._flops = FlopModel(lambda s: ours_runner(
                meta, torch.empty(1, s, 3, self.args.height, self.args.width, device="meta")))
        return self._flops(views)

    def images(self, views: int, seed: int = 0) -> torch.Tensor:
        """The input window ``(1, S, 3, H, W)``."""
        return images_for(views, self.args.width, self.args.height, self.device, seed)

    def run_step(self, name: str, fn) -> None:
        """Run one step under its guard; record ok / skipped / timeout / error and seconds."""
        left = self.left()
        if left < 15:
            self.report["steps"][name] = {"status": f"skipped: {left:.0f} s of the budget left"}
            print(f"## {name}: skipped ({left:.0f} s left)", flush=True)
            return
        limit = min(STEP_MAX_S[name] * (4 if self.args.dry else 1), left - 5)
        self.step_limit = limit
        print(f"## {name} (guard {limit:.0f} s, {left:.0f} s left)", flush=True)
        t = time.perf_counter()
        try:
            with guard(limit):
                fn()
            status = "ok"
        except StepTimeout as exc:
            status = f"timeout: {exc}"
        except Exception as exc:  # noqa: BLE001 - a failing step is a result; the next ones still run
            text = str(exc).splitlines()[0][:300] if str(exc) else ""
            if "StepTimeout" in text:  # the guard fired inside a library that wrapped it (inductor)
                status = f"timeout: {text}"
            else:
                status = f"error: {type(exc).__name__}: {text}"
                traceback.print_exc()
        self.report["steps"][name] = {"status": status, "seconds": round(time.perf_counter() - t, 1)}
        print(f"## {name}: {status} ({time.perf_counter() - t:.0f} s)", flush=True)
        release()
        self.save()

    # --- steps ------------------------------------------------------------------------

    def env(self) -> None:
        """Versions, GPU, and whether flash_attn.cute imports (the exact reason if not)."""
        meta = self.report["meta"]
        meta.update(argv=sys.argv, date_utc=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    device=device_name(self.device), torch=torch.__version__, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), python=sys.version.split()[0],
                    preset=self.args.preset, res=f"{self.args.width}x{self.args.height}",
                    tokens_per_view=self.tokens, heads=self.heads, head_dim=self.head_dim,
                    tf32=True, budget_s=self.args.budget, dry=self.args.dry)
        if self.device.type == "cuda":
            meta["capability"] = list(torch.cuda.get_device_capability())
        flash: dict = {}
        t = time.perf_counter()
        try:
            import flash_attn.cute as cute
            from flash_attn.cute import flash_attn_func  # noqa: F401

            flash["fa4_import"] = f"ok ({getattr(cute, '__version__', '?')}, {time.perf_counter() - t:.1f} s)"
        except Exception as exc:  # noqa: BLE001 - the reason is the result
            flash["fa4_import"] = f"{type(exc).__name__}: {exc}"
            flash["fa4_import_traceback"] = traceback.format_exc().splitlines()[-6:]
        flash["why_not"] = flash_attn_candidates(self.device)[1]
        try:
            flash["flash_attn_backend"] = get_attention_fn("flash_attn", self.device)[0]
        except AttentionBackendError as exc:
            flash["flash_attn_backend"] = f"unavailable: {exc}"
        try:
            flash["auto_backend"] = get_attention_fn("auto", self.device)[0]
        except AttentionBackendError as exc:
            flash["auto_backend"] = f"unavailable: {exc}"
        self.report["flash"] = flash
        usable = []
        for backend in self.args.backends:
            try:
                get_attention_fn(backend, self.device)
                usable.append(backend)
            except AttentionBackendError as exc:
                self.report.setdefault("dropped_backends", {})[backend] = str(exc)
        self.report["backends"] = usable
        for key, value in flash.items():
            print(f"# {key}: {value}", flush=True)
        print(f"# backends compared: {usable} (dropped: {self.report.get('dropped_backends', {})})",
              flush=True)

    def parity(self) -> None:
        """Each backend, bf16 weights, against manual attention with fp32 weights."""
        s = self.args.parity_views
        images = self.images(s, seed=2)
        ref_net = build_model(self.args.preset, device=self.device, attention_backend="manual")
        ref_net.load_state_dict(self.state)
        with torch.inference_mode():
            ref = ref_net(images, ref_view_strategy="first")
        del ref_net
        release()
        rows = {}
        self.report["parity"] = {"views": s, "tolerance": {f"{k}.{m}": v for (k, m), v in TOLERANCE.items()},
                                 "rows": rows}
        for backend in self.report["backends"]:
            fn, net, _ = make_ours(self.args.preset, self.state, self.device, Levers(backend=backend))
            with torch.inference_mode():
                got = fn(images, ref_view_strategy="first")
            errors = compare(got, ref)
            over = {f"{k}.{m}": errors[k][m] for (k, m), tol in TOLERANCE.items() if errors[k][m] > tol}
            rows[backend] = {"desc": net.attention_desc, "errors": errors, "within_tolerance": not over,
                             "over": over}
            d, x = errors["depth"], errors["extrinsics"]
            print(f"# parity {backend} ({net.attention_desc}): depth mean {d['mean_rel']:.2e} max "
                  f"{d['max_rel']:.2e}, extrinsics mean {x['mean_rel']:.2e} -> "
                  f"{'within' if not over else 'OVER: ' + json.dumps(over)}", flush=True)
            del fn, net, got
            release()

    def kernel(self) -> None:
        """The attention kernel alone on the global shape, in the network's q/k/v layout."""
        rows = self.report.setdefault("kernel", [])
        fns = {b: get_attention_fn(b, self.device) for b in self.report["backends"]}
        dtype = torch.bfloat16
        for s in self.args.views:
            n = s * self.tokens
            gen = torch.Generator(device="cpu").manual_seed(s)
            qkv = torch.randn(1, n, 3, self.heads, self.head_dim, generator=gen).to(self.device, dtype)
            q, k, v = qkv.unbind(2)
            outs = {}
            for backend, (desc, fn) in fns.items():
                iters = 10 if s <= 32 else (3 if s <= 128 else 1)
                ms = time_ms(lambda fn=fn, q=q, k=k, v=v: fn(q, k, v), 1, iters)
                flops = 4 * self.heads * n * n * self.head_dim
                rows.append({"views": s, "tokens": n, "backend": backend, "desc": desc, "ms": ms,
                             "tflops": flops / ms / 1e9})
                if s <= 32:
                    outs[backend] = fn(q, k, v).float()
                print(f"# kernel S={s} ({n} tokens) {backend}: {ms:.2f} ms, {rows[-1]['tflops']:.0f} TFLOP/s",
                      flush=True)
            if len(outs) == 2:
                a, b = outs.values()
                self.report.setdefault("kernel_max_abs_diff", {})[str(s)] = float((a - b).abs().max())
            del qkv, q, k, v, outs
            release()

    def network(self) -> None:
        """Whole network, eager, per backend and S; global-attention time in the largest S."""
        rows = self.report.setdefault("network_eager", [])
        attn = self.report.setdefault("attention_in_network", {})
        big = max(self.args.views)
        for backend in self.report["backends"]:
            _, net, _ = make_ours(self.args.preset, self.state, self.device, Levers(backend=backend))
            own = param_bytes(net)
            for s in self.args.views:
                run = ours_runner(net, self.images(s))
                timer = None
                if s <= 32:
                    ms = time_ms(run, 2, 5)
                    peak = peak_gib(run, own)
                    if s == big:  # one more run, for the global-attention calls alone
                        timer = GlobalAttentionTimer(net, s * self.tokens)
                        run()
                else:
                    if s != big:
                        run()  # warm-up; the largest S skips it (FA4's JIT ran at the check call,
                        # cuDNN's plan for this shape in the kernel step)
                    else:
                        timer = GlobalAttentionTimer(net, s * self.tokens)
                    ms, peak = timed_peak(run, own)
                flops = self.flops(s)
                rows.append({"views": s, "backend": backend, "desc": net.attention_desc, "ms": ms,
                             "views_per_s": s / ms * 1e3, "peak_gib": peak, "tflops": flops / ms / 1e9,
                             "flops": flops})
                print(f"# network S={s} {backend}: {ms:.1f} ms, {rows[-1]['views_per_s']:.1f} views/s, "
                      f"{peak:.2f} GiB, {rows[-1]['tflops']:.0f} TFLOP/s", flush=True)
                if timer is not None:
                    attn[backend] = {**timer.finish(), "views": s, "forward_ms": ms}
                    a = attn[backend]
                    a["share_of_forward"] = a["total_ms"] / ms
                    print(f"# global attention in the network S={s} {backend}: {a['calls']} calls, "
                          f"{a['total_ms']:.1f} ms ({a['share_of_forward']:.0%} of the forward), "
                          f"{a['tflops']:.0f} TFLOP/s", flush=True)
                self.save()
            del net
            release()

    def compiled(self) -> None:
        """S <= 32: regional torch.compile (dynamic shapes) + CUDA graphs, per backend.

        Window sizes outer, backends inner (both compiled networks stay resident), so a time
        guard that fires late still leaves the first S measured for every backend.
        """
        rows = self.report.setdefault("compiled_graphs", [])
        built = {}
        for s in [s for s in self.args.compiled_views if s <= 32]:
            for backend in self.report["backends"]:
                lv = Levers(backend=backend, compile="regions-dynamic", graphs=True)
                if backend not in built:
                    built[backend] = make_ours(self.args.preset, self.state, self.device, lv)[:2]
                fn, net = built[backend]
                run = ours_runner(fn, self.images(s))
                t = time.perf_counter()
                run()  # compile + capture
                first = time.perf_counter() - t
                ms = time_ms(run, 2, 10)
                rows.append({"views": s, "backend": backend, "desc": net.attention_desc, "ms": ms,
                             "views_per_s": s / ms * 1e3, "first_call_s": first,
                             "levers": lv.describe(), "graphs": self.device.type == "cuda"})
                print(f"# compiled+graphs S={s} {backend}: {ms:.2f} ms (first call {first:.0f} s)",
                      flush=True)
                self.save()
        built.clear()
        torch._dynamo.reset()

    def fit16(self) -> None:
        """Largest window in 16 GiB, per backend, in a child process (clean allocator, its own env)."""
        if self.device.type != "cuda":
            self.report["fit16"] = {"skipped": "needs CUDA (the cap is a CUDA memory fraction)"}
        env = dict(os.environ, PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--fit-child", "--out", str(self.out),
               "--preset", self.args.preset, "--res", self.args.res, "--fit-guess", str(self.args.fit_guess),
               "--backends", ",".join(self.report["backends"])]
        timeout = max(10.0, self.step_limit - 5)  # inside the step's own guard
        try:
            proc = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True)
            tail = (proc.stdout + proc.stderr).splitlines()[-8:]
        except subprocess.TimeoutExpired as exc:
            tail = [f"child killed after {timeout:.0f} s"] + str(exc.stdout or "").splitlines()[-4:]
        part = self.out / "fit16_child.json"
        if part.exists():
            self.report["fit16"] = {**self.report.get("fit16", {}), **json.loads(part.read_text())}
        self.report.setdefault("fit16", {})["child_output_tail"] = tail
        print("\n".join(f"# fit16 child: {line}" for line in tail), flush=True)


def fit_child(args) -> int:
    """The fit16 step's own process: bracket each backend's largest window under 16 GiB."""
    from bench.network import bracket_16gib

    out = Path(args.out) / "fit16_child.json"
    result: dict = {"alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""), "guess": args.fit_guess}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda":
        result["skipped"] = "needs CUDA (the cap is a CUDA memory fraction)"
        out.write_text(json.dumps(result, indent=1))
        print(json.dumps(result), flush=True)
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    state = build_model(args.preset).state_dict()
    for backend in args.backends:
        t = time.perf_counter()
        _, net, plain = make_ours(args.preset, state, device, Levers(backend=backend))
        make = lambda s, plain=plain: ours_runner(plain, images_for(s, args.width, args.height, device))  # noqa: E731
        result[backend] = {"desc": net.attention_desc, **bracket_16gib(make, args.fit_guess)}
        result[backend]["seconds"] = round(time.perf_counter() - t, 1)
        r = result[backend]
        print(f"fits 16 GiB, {backend}: {r['fits']} (fails {r['fails']})", flush=True)
        out.write_text(json.dumps(result, indent=1))
        del net, plain
        release()
    return 0


class GlobalAttentionTimer:
    """Wraps a network's attention function; times the global calls (sequence = every view).

    CUDA events around each call on the GPU (no sync inside the forward), wall time on the
    CPU. FLOPs of one call: 4 * B * H * N^2 * D (QK^T and PV).
    """

    def __init__(self, net, global_tokens: int) -> None:
        self.net, self.inner, self.global_tokens = net, net._attn_fn, global_tokens
        self.cuda = next(net.parameters()).is_cuda
        self.calls: list = []
        self.flops = 0
        net._attn_fn = self

    def __call__(self, q, k, v):
        if q.shape[1] != self.global_tokens:
            return self.inner(q, k, v)
        b, n, h, d = q.shape
        self.flops += 4 * b * h * n * n * d
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = self.inner(q, k, v)
            end.record()
            self.calls.append((start, end))
        else:
            t = time.perf_counter()
            out = self.inner(q, k, v)
            self.calls.append((time.perf_counter() - t) * 1e3)
        return out

    def finish(self) -> dict:
        """Restore the network's function; per-call and total ms, TFLOP/s."""
        self.net._attn_fn = self.inner
        sync()
        ms = [s.elapsed_time(e) for s, e in self.calls] if self.cuda else list(self.calls)
        total = sum(ms)
        return {"calls": len(ms), "per_call_ms": [round(x, 3) for x in ms], "total_ms": total,
                "flops": self.flops, "tflops": self.flops / total / 1e9 if total else float("nan")}


def _json_default(o):
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)


def summary(report: dict) -> str:
    """Markdown summary of the report."""
    lines = [f"# flash_check: {report['meta'].get('preset')} {report['meta'].get('res')} on "
             f"{report['meta'].get('device')}, torch {report['meta'].get('torch')}, "
             f"{report['meta'].get('date_utc')}"]
    flash = report.get("flash", {})
    lines.append(f"flash_attn.cute import: {flash.get('fa4_import')}")
    lines.append(f"flash_attn backend: {flash.get('flash_attn_backend')}; auto: {flash.get('auto_backend')}")
    for name, st in report["steps"].items():
        lines.append(f"step {name}: {st['status']}" + (f" ({st['seconds']} s)" if "seconds" in st else ""))
    par = report.get("parity", {})
    for backend, row in par.get("rows", {}).items():
        e = row["errors"]
        lines.append(f"parity S={par['views']} {backend} ({row['desc']}): depth mean/max "
                     f"{e['depth']['mean_rel']:.1e}/{e['depth']['max_rel']:.1e}, conf mean "
                     f"{e['depth_conf']['mean_rel']:.1e}, intr max {e['intrinsics']['max_rel']:.1e}, extr "
                     f"mean/max {e['extrinsics']['mean_rel']:.1e}/{e['extrinsics']['max_rel']:.1e}: "
                     + ("within tolerance" if row["within_tolerance"] else f"OVER {row['over']}"))
    lines += _table("kernel alone", report.get("kernel", []), "ms", "tflops")
    if report.get("kernel_max_abs_diff"):
        lines.append(f"kernel max |first - second| output by S: {report['kernel_max_abs_diff']}")
    lines += _table("network, eager", report.get("network_eager", []), "ms", "views_per_s")
    for backend, a in report.get("attention_in_network", {}).items():
        lines.append(f"global attention in the network, S={a['views']}, {backend}: {a['calls']} calls, "
                     f"{a['total_ms']:.1f} ms of {a['forward_ms']:.1f} ms, {a['tflops']:.0f} TFLOP/s")
    lines += _table("compile + CUDA graphs", report.get("compiled_graphs", []), "ms", "views_per_s")
    fit = report.get("fit16", {})
    for backend in report.get("backends", []):
        if isinstance(fit.get(backend), dict):
            f = fit[backend]
            lines.append(f"fits 16 GiB, {backend}: {f['fits']} views (fails at {f['fails']})")
    if "skipped" in fit:
        lines.append(f"fit16: skipped, {fit['skipped']}")
    return "\n".join(lines)


def _table(title: str, rows: list, key: str, extra: str) -> list:
    if not rows:
        return []
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    ratio = f" | {key} {backends[0]} / {backends[1]}" if len(backends) == 2 else ""
    out = [f"\n{title}: {key} ({extra}) | " + " | ".join(backends) + ratio]
    for s in sorted({r["views"] for r in rows}):
        cells = {r["backend"]: r for r in rows if r["views"] == s}
        row = f"S={s}: " + " | ".join(f"{cells[b][key]:.2f} ({cells[b][extra]:.0f})" if b in cells else "-"
                                      for b in backends)
        if len(backends) == 2 and all(b in cells for b in backends):
            row += f" | {cells[backends[0]][key] / cells[backends[1]][key]:.3f}"
        out.append(row)
    return out


def main(argv=None) -> int:
    """Run the steps; write DIR/flash_check.json; print the summary."""
    args = parse_args(argv)
    if args.fit_child:
        return fit_child(args)
    torch.backends.cuda.matmul.allow_tf32 = True  # as da3-bench: TF32 for fp32 matmuls
    torch.backends.cudnn.allow_tf32 = True
    check = Check(args)
    order = [s for s in STEPS if s in args.steps]
    if "env" not in order:
        order.insert(0, "env")  # the backends that can run are decided there
    for name in order:
        check.run_step(name, getattr(check, name))
    check.report["meta"]["total_s"] = round(time.perf_counter() - check.t0, 1)
    check.save()
    print(summary(check.report), flush=True)
    print(f"# wrote {check.out / 'flash_check.json'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
