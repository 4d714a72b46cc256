"""Our network's performance levers, each one switch, and the lever sweep of ``da3-bench``.

A :class:`Levers` value says how our network runs: weight dtype, whether the final head
convolutions stay fp32, attention backend, channels-last head convolutions, CUDA graphs,
torch.compile, frame chunk. :func:`make_ours` builds that network from one fp32 state dict
(so every variant has the same weights as upstream). :func:`sweep` times each named variant
at a few window sizes and checks it against our fp32 output.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import torch

from bench.common import (
    DTYPES,
    compare,
    images_for,
    ours_runner,
    peak_gib,
    release,
    time_ms,
)
from da3_ros.core.memory import param_bytes
from da3_ros.model import build_model
from da3_ros.model.accel import GraphedDA3, compile_network, compile_regions


@dataclass(frozen=True)
class Levers:
    """How our network runs (defaults: the node's fast GPU settings)."""

    dtype: str = "bf16"
    head_fp32: bool = True
    backend: str | None = None
    channels_last: bool = False
    graphs: bool = False
    compile: str | None = None
    chunk: int | None = None
    autocast: bool = False

    def describe(self) -> str:
        """Short text of the non-default switches."""
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items())


def make_ours(preset: str, state: dict, device: torch.device, lv: Levers):
    """Our network with ``state`` loaded and the levers applied.

    ``lv.compile``: None (eager), a torch.compile mode for the whole network ("default",
    "max-autotune-no-cudagraphs", ...; static shapes), or "regions" / "regions-dynamic"
    (:func:`compile_regions`: per block and head chunk; static per shape / automatic dynamic).

    Returns:
        ``(fn, module, plain)``: ``fn`` has the network's forward signature (the module, a
        compiled wrapper or a :class:`GraphedDA3` around one); ``plain`` is ``fn`` without
        the CUDA graph (what a capture runs; used for peaks and for shapes not graphed).
    """
    net = build_model(preset, device=device, attention_backend=lv.backend)
    net.load_state_dict(state)
    if lv.dtype != "fp32" and not lv.autocast:
        net.set_dtype(DTYPES[lv.dtype])
        if not lv.head_fp32:
            keep = [getattr(net, "cam_enc", None), getattr(net, "cam_dec", None)]
            net.to(DTYPES[lv.dtype])
            for m in keep:
                if m is not None:
                    m.float()
    if lv.channels_last:
        net.head.to(memory_format=torch.channels_last)
    fn = net
    if lv.autocast:
        fn = _Autocast(net, DTYPES[lv.dtype])
    if lv.compile in ("regions", "regions-dynamic"):
        compile_regions(net, dynamic=None if lv.compile == "regions-dynamic" else False)
    elif lv.compile and lv.compile != "none":
        fn = compile_network(net, None if lv.compile == "default" else lv.compile)
    plain = fn
    if lv.graphs and device.type == "cuda":
        fn = GraphedDA3(fn, module=net)
    return fn, net, plain


class _Autocast:
    """Our fp32 network under autocast (how upstream runs), for comparison."""

    def __init__(self, net, dtype):
        self.net, self.dtype = net, dtype

    def __call__(self, images, *args, **kwargs):
        with torch.autocast(images.device.type, dtype=self.dtype):
            return self.net(images, *args, **kwargs)


VARIANTS: dict[str, tuple[str, Levers]] = {
    "fp32": ("fp32 weights, sdpa (TF32 matmuls)", Levers(dtype="fp32", backend="sdpa")),
    "autocast": ("fp32 weights + bf16 autocast, sdpa (upstream's way)",
                 Levers(autocast=True, backend="sdpa")),
    "bf16_sdpa": ("bf16 weights, sdpa (torch picks the kernel)", Levers(backend="sdpa")),
    "bf16_flash": ("bf16 weights, sdpa_flash", Levers(backend="sdpa_flash")),
    "base": ("bf16 weights, auto attention (cuDNN) [base]", Levers()),
    "head_bf16": ("base + final head convs in bf16", Levers(head_fp32=False)),
    "channels_last": ("base + channels-last head convs", Levers(channels_last=True)),
    "graph": ("base + CUDA graph", Levers(graphs=True)),
    "head_bf16_graph": ("base + final head convs bf16 + CUDA graph", Levers(head_fp32=False, graphs=True)),
    "compile": ("base + torch.compile (default mode)", Levers(compile="default")),
    "compile_graph": ("base + torch.compile + CUDA graph", Levers(compile="default", graphs=True)),
    "regions_graph": ("base + regional compile (blocks, head chunks) + CUDA graph",
                      Levers(compile="regions", graphs=True)),
    "regions_dyn_graph": ("base + regional compile, dynamic shapes + CUDA graph",
                          Levers(compile="regions-dynamic", graphs=True)),
    "autotune_graph": ("base + torch.compile max-autotune-no-cudagraphs + CUDA graph",
                       Levers(compile="max-autotune-no-cudagraphs", graphs=True)),
}


def sweep(preset: str, state: dict, device: torch.device, views: list[int], width: int, height: int,
          names: list[str], deadline: float, ref_views: int = 8) -> list[dict]:
    """Time each variant at each S; compare its S=``ref_views`` output with our fp32 output.

    Stops starting new variants once ``time.perf_counter()`` passes ``deadline``.
    """
    ref_net = build_model(preset, device=device, attention_backend="sdpa")
    ref_net.load_state_dict(state)
    ref_img = images_for(ref_views, width, height, device, seed=3)
    with torch.inference_mode():
        ref_out = ref_net(ref_img, ref_view_strategy="first")
    del ref_net
    release()
    rows = []
    for name in names:
        if time.perf_counter() > deadline:
            rows.append({"variant": name, "skipped": "time budget"})
            continue
        desc, lv = VARIANTS[name]
        t0 = time.perf_counter()
        try:
            fn, net, plain = make_ours(preset, state, device, lv)
            row = {"variant": name, "desc": desc, "levers": asdict(lv)}
            for s in views:
                run = ours_runner(fn, images_for(s, width, height, device), lv.chunk)
                t1 = time.perf_counter()
                run()  # first call: compile / capture
                row[f"first_call_s_S{s}"] = time.perf_counter() - t1
                row[f"ms_S{s}"] = time_ms(run, 2, 10 if s <= 8 else 4)
                # peak of the un-graphed call (a replay allocates nothing; its pool holds this)
                row[f"peak_gib_S{s}"] = peak_gib(ours_runner(plain, run.images, lv.chunk), param_bytes(net))
            with torch.inference_mode():
                out = fn(ref_img, ref_view_strategy="first")
            row["vs_fp32"] = compare(out, ref_out)
        except Exception as exc:  # noqa: BLE001 - a failing lever is a result, recorded
            row = {"variant": name, "desc": desc, "levers": asdict(lv),
                   "error": f"{type(exc).__name__}: {exc}"[:400]}
        row["total_s"] = time.perf_counter() - t0
        rows.append(row)
        print(_line(row, views), flush=True)
        fn = net = plain = None  # noqa: F841 - free before the next variant
        release()
    return rows


def _line(row: dict, views: list[int]) -> str:
    if "error" in row or "skipped" in row:
        return f"| {row['variant']} | {row.get('error') or row.get('skipped')} |"
    cells = " | ".join(f"{row[f'ms_S{s}']:.1f} ms ({row[f'peak_gib_S{s}']:.2f} GiB)" for s in views)
    err = row["vs_fp32"]["depth"]["mean_rel"]
    return f"| {row['variant']} | {cells} | depth mean rel {err:.2e} | {row['total_s']:.0f} s |"


def levers_from_args(args) -> Levers:
    """The ``Levers`` the command line asks for."""
    return replace(Levers(), dtype=args.dtype, head_fp32=not args.head_bf16, backend=args.backend,
                   channels_last=args.channels_last, graphs=args.graphs, compile=args.compile,
                   chunk=args.chunk)
