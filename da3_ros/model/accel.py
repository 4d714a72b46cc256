"""Fixed-shape acceleration of a DA3 network: CUDA graphs and torch.compile, with warm-up.

A robot runs the same window shape (views S, process size H x W) message after message, so
the network's thousands of small kernel launches can be recorded once into a CUDA graph and
replayed with one launch. :class:`GraphedDA3` keeps one graph per shape key
``(device, weight dtype, B, S, H, W, ref_view_strategy, return_rays, frame_chunk)``,
captured on first use of that key (or ahead of time by :meth:`GraphedDA3.warm_up`, which the
node calls when it activates so the first message does not pay for the capture).

Graphs share one memory pool; outputs are copied out of the pool after each replay
(``clone_outputs=True``, the default) so a later replay of another shape cannot overwrite
them. Pose conditioning (``extrinsics`` / ``intrinsics``) is not graphed: such calls run
eagerly. On CPU every call runs eagerly.

:func:`compile_network` wraps ``torch.compile`` around the network's forward with static
shapes (one compilation per shape); it can be combined with graphs (``mode`` as torch).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields

import torch

GraphKey = tuple


def _weight_dtype(net: torch.nn.Module) -> torch.dtype:
    return next(net.parameters()).dtype


class GraphedDA3:
    """Callable like the network (``images (B, S, 3, H, W)`` -> ``DA3Output``), graph-replayed.

    Args:
        net: a ``DA3Net`` / ``NestedDA3Net`` in eval mode on its device, or a compiled
            callable with the same signature (pass the module as ``module`` then).
        clone_outputs: copy outputs out of the graph pool (safe); False returns the graph's
            static output tensors, valid until the next replay of any shape.
        warmup_iters: eager runs before capture (cuDNN / cuBLAS autotuning, lazy caches).
        module: the ``nn.Module`` when ``net`` is a compiled wrapper (for device/dtype).
    """

    def __init__(self, net, clone_outputs: bool = True, warmup_iters: int = 2,
                 module: torch.nn.Module | None = None) -> None:
        self.net = net
        self.module = module if module is not None else net
        self.clone_outputs = clone_outputs
        self.warmup_iters = warmup_iters
        self._graphs: dict[GraphKey, tuple[torch.cuda.CUDAGraph, torch.Tensor, object]] = {}
        self._pool = None

    @property
    def preset(self):
        """The wrapped network's preset (config dataclass)."""
        return self.module.preset

    @property
    def is_metric(self) -> bool:
        """Whether the wrapped network's outputs are metric."""
        return bool(getattr(self.module, "is_metric", False))

    def key(self, images: torch.Tensor, ref_view_strategy: str, return_rays: bool,
            frame_chunk: int | None) -> GraphKey:
        """Cache key of one call: device, dtype, shape and shape-changing options."""
        return (images.device, _weight_dtype(self.module), *images.shape[:2], *images.shape[-2:],
                ref_view_strategy, bool(return_rays), frame_chunk)

    def __call__(self, images: torch.Tensor, extrinsics: torch.Tensor | None = None,
                 intrinsics: torch.Tensor | None = None, ref_view_strategy: str = "saddle_balanced",
                 return_rays: bool = False, frame_chunk: int | None = None, **kwargs):
        """Run the network for ``images (B, S, 3, H, W)``; see ``DA3Net.forward``."""
        if images.device.type != "cuda" or extrinsics is not None or intrinsics is not None or kwargs:
            return self.net(images, extrinsics, intrinsics, ref_view_strategy=ref_view_strategy,
                            return_rays=return_rays, frame_chunk=frame_chunk, **kwargs)
        key = self.key(images, ref_view_strategy, return_rays, frame_chunk)
        if key not in self._graphs:
            self._graphs[key] = self._capture(images, ref_view_strategy, return_rays, frame_chunk)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(images, non_blocking=True)
        graph.replay()
        return _clone_output(static_out) if self.clone_outputs else static_out

    def _capture(self, images, ref_view_strategy, return_rays, frame_chunk):
        static_in = images.clone()

        def run():
            return self.net(static_in, ref_view_strategy=ref_view_strategy, return_rays=return_rays,
                            frame_chunk=frame_chunk)

        side = torch.cuda.Stream(device=images.device)
        side.wait_stream(torch.cuda.current_stream(images.device))
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(self.warmup_iters):  # fills lazy caches, autotunes kernels
                run()
        torch.cuda.current_stream(images.device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=self._pool):
            static_out = run()
        return graph, static_in, static_out

    def warm_up(self, shapes: Iterable[tuple[int, int, int]], device: torch.device | str,
                ref_view_strategy: str = "saddle_balanced", batch: int = 1) -> list[GraphKey]:
        """Capture graphs ahead of time for ``(S, H, W)`` shapes (call at node activation).

        Returns:
            The keys now cached (empty on CPU, where nothing is captured).
        """
        device = torch.device(device)
        keys = []
        if device.type != "cuda":
            return keys
        dtype = torch.float32
        for s, h, w in shapes:
            x = torch.zeros(batch, s, 3, h, w, device=device, dtype=dtype)
            self(x, ref_view_strategy=ref_view_strategy)
            keys.append(self.key(x, ref_view_strategy, False, None))
        torch.cuda.synchronize(device)
        return keys

    def cached_keys(self) -> list[GraphKey]:
        """Keys of the captured graphs."""
        return list(self._graphs)

    def reset(self) -> None:
        """Drop every graph and the pool (frees their memory; e.g. on node deactivation)."""
        self._graphs.clear()
        self._pool = None


def _clone_output(out):
    cls = type(out)
    values = {f.name: getattr(out, f.name) for f in fields(out)}
    return cls(**{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in values.items()})


def compile_network(net: torch.nn.Module, mode: str | None = None, fullgraph: bool = False):
    """``torch.compile`` the network's forward with static shapes (one compile per shape).

    Args:
        net: the network (eval, on its device).
        mode: torch.compile mode (None = default; "max-autotune-no-cudagraphs";
            "reduce-overhead" adds torch's own CUDA graphs).
        fullgraph: demand one graph (fails on graph breaks).

    Returns:
        A callable with the forward's signature (the module itself is not modified).
    """
    return torch.compile(net, mode=mode, dynamic=False, fullgraph=fullgraph)


def compile_regions(net: torch.nn.Module, mode: str | None = None, dynamic: bool | None = False,
                    cache_limit: int = 64) -> torch.nn.Module:
    """Regional ``torch.compile``: each transformer block and each head chunk, in place.

    Blocks of one kind (plain / qk-norm + RoPE, local / global) share one compiled graph (the
    parameters are graph inputs), so compiling costs a few block-sized graphs per window shape
    instead of one network-sized graph; the glue between blocks stays eager (CUDA graphs
    remove its launch cost). Works for ``DA3Net`` and, per branch, ``NestedDA3Net``.

    Args:
        net: the network (eval, on its device); modified in place and returned.
        mode: torch.compile mode (None = default).
        dynamic: False = one specialisation per shape (fastest kernels; raise ``cache_limit``
            for many window sizes); None = torch's automatic dynamic shapes.
        cache_limit: dynamo's per-function recompile limit (each window size and block kind
            is one entry when ``dynamic=False``).
    """
    import torch._dynamo

    cfg = torch._dynamo.config
    cfg.cache_size_limit = max(cfg.cache_size_limit, cache_limit)
    cfg.accumulated_cache_size_limit = max(cfg.accumulated_cache_size_limit, 4 * cache_limit)
    branches = [b for b in (getattr(net, "da3", None), getattr(net, "da3_metric", None)) if b is not None]
    for branch in branches or [net]:
        for blk in branch.backbone.pretrained.blocks:
            blk.compile(mode=mode, dynamic=dynamic)
        head = branch.head
        head.forward_frames = torch.compile(head.forward_frames, mode=mode, dynamic=dynamic)
    return net


def accelerate(net: torch.nn.Module, shapes: Iterable[tuple[int, int, int]] = (),
               compile_mode: str | None = "default", graphs: bool = True,
               ref_view_strategy: str = "saddle_balanced") -> GraphedDA3 | torch.nn.Module:
    """The node's fast GPU path for ``net``: whole-network compile + CUDA graphs, warmed up.

    Measured on an H200 for da3-large at 504x378 (bench/RESULTS.md): 3.7 ms for 1 view and
    23.3 ms for 8 (eager bf16: 15.2 / 44.8 ms); compiling and capturing costs about 54 s for the
    first shape and 30 s for the next, which is why the node should call this when it activates
    with the window shapes it will run (``(S, H, W)`` process sizes), not on the first message.
    A shape not warmed up is compiled and captured on first use.

    Args:
        net: the network in eval mode on its (CUDA) device, weights already in their dtype.
        shapes: ``(S, H, W)`` to compile and capture now.
        compile_mode: torch.compile mode ("default"), or None for no compile (graphs only).
        graphs: replay CUDA graphs (False: compiled code only).
        ref_view_strategy: the strategy the node will call with (part of the graph key).

    Returns:
        A callable with the network's forward signature (``.module`` is ``net``), or ``net``
        itself on a non-CUDA device (nothing to gain there).
    """
    param = next(net.parameters())
    if param.device.type != "cuda":
        return net
    fn = compile_network(net, None if compile_mode == "default" else compile_mode) if compile_mode else net
    if not graphs:
        with torch.inference_mode():
            for s, h, w in shapes:  # compile now, twice: lazily filled caches guard the first trace
                for _ in range(2):
                    fn(torch.zeros(1, s, 3, h, w, device=param.device), ref_view_strategy=ref_view_strategy)
        return fn
    fast = GraphedDA3(fn, module=net)
    fast.warm_up(shapes, param.device, ref_view_strategy)
    return fast
