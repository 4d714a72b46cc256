"""One window over several local devices: worker processes that stay alive across windows.

:class:`ShardedNet` is called like the network (``net(images, extrinsics=..., ...)`` returns a
whole-window :class:`~da3_ros.model.net.DA3Output`). This process is rank 0 of a
``torch.distributed`` process group and keeps the network it was given on ``devices[0]``. Every
other device gets a ``torch.multiprocessing`` (spawn) worker with a copy of the network. Its
weights are broadcast from rank 0, so random presets agree too. Per window:

1. rank 0 puts a small command (shapes, view split, options, autocast dtype; the (S, 4, 4) /
   (S, 3, 3) camera tensors) on each worker's queue;
2. the images are scattered from rank 0 (``dist.scatter``, padded to equal shards), so each
   rank receives only its own views;
3. every rank runs the context-parallel forward (:mod:`da3_ros.model.context_parallel`). It
   all-gathers K/V in each global block and the per-view outputs at the end;
4. each worker replies with its error, or with its device's free and cached memory (the
   memory planner's budget for that device: this process never touches the workers' GPUs).

Backend: NCCL for CUDA devices (one distinct GPU per rank), gloo for CPU (tests, no GPU). A
window with fewer views than ranks runs on rank 0 alone.

Failures: a worker that raises makes rank 0 raise too. The first error (or a reply that does
not come within ``timeout_s``) marks the group broken, because ranks may have stopped in
different collectives, and every later call raises: rebuild the engine. The memory planner
(:mod:`da3_ros.core.memory`, per-rank estimate) is what keeps a sharded window out of an OOM.
"""

from __future__ import annotations

import logging
import queue
import socket
from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from da3_ros.core import memory
from da3_ros.model import build_model
from da3_ros.model.context_parallel import ViewShard, split_views
from da3_ros.model.refview import check_strategy

LOG = logging.getLogger("da3_ros.core.sharded")
_HALF = (torch.float16, torch.bfloat16)


def check_devices(devices: Sequence[str]) -> list[str]:
    """Validate the devices of one sharded network: all CPU, or distinct CUDA devices.

    Raises:
        ValueError: fewer than 2 devices, mixed kinds, or a GPU named twice.
    """
    devs = [torch.device(d) for d in devices]
    if len(devs) < 2:
        raise ValueError(f"a sharded network needs at least 2 devices, got {list(devices)}")
    kinds = {d.type for d in devs}
    if kinds == {"cuda"}:
        devs = [torch.device("cuda", d.index or 0) for d in devs]
        if len(set(devs)) != len(devs):
            raise ValueError(f"each rank needs its own GPU, got {list(devices)}")
    elif kinds != {"cpu"}:
        raise ValueError(f"devices must be all 'cpu' or all CUDA devices, got {list(devices)}")
    return [str(d) for d in devs]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init_group(rank: int, devices: list[str], port: int, timeout_s: float) -> None:
    cuda = devices[rank].startswith("cuda")
    kwargs = {"device_id": torch.device(devices[rank])} if cuda else {}
    if cuda:
        torch.cuda.set_device(devices[rank])
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=len(devices), timeout=timedelta(seconds=timeout_s), **kwargs)


def _sync_weights(net: torch.nn.Module) -> None:
    """Broadcast every parameter and buffer from rank 0 (the same order on every rank)."""
    for t in list(net.parameters()) + list(net.buffers()):
        dist.broadcast(t.data, src=0)


def _scatter_views(images: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype,
                   counts: tuple[int, ...], rank: int, device: str) -> torch.Tensor:
    """Rank 0 sends each rank its views of ``images (B, S, 3, H, W)``; returns this rank's."""
    most = max(counts)
    local = torch.empty((shape[0], most) + tuple(shape[2:]), dtype=dtype, device=device)
    parts = None
    if rank == 0:
        starts = [sum(counts[:r]) for r in range(len(counts))]
        parts = [torch.zeros_like(local) for _ in counts]
        for part, start, count in zip(parts, starts, counts):
            part[:, :count] = images[:, start:start + count]
    dist.scatter(local, parts, src=0)
    return local[:, :counts[rank]]


def _forward(net, local: torch.Tensor, shard: ViewShard, kwargs: dict, autocast, device: str):
    with torch.autocast(device_type=torch.device(device).type, dtype=autocast or torch.float32,
                        enabled=autocast is not None):
        return net(local, shard=shard, **kwargs)


def _worker_main(rank: int, devices: list[str], port: int, spec: dict, commands, replies) -> None:
    """A worker's life: join the group, receive the weights, then serve windows until ``None``."""
    torch.set_num_threads(spec["threads"])
    device = devices[rank]
    try:
        _init_group(rank, devices, port, spec["timeout_s"])
        net = build_model(spec["preset"], attention_backend=spec["attention_backend"], device="meta",
                          **({"apply_metric_scaling": True} if spec["metric_scaling"] else {}))
        if spec["weight_dtype"] in _HALF:
            net.set_dtype(spec["weight_dtype"])
        net = net.to_empty(device=device).eval()
        with torch.no_grad():
            _sync_weights(net)
        replies.put((rank, None, memory.cuda_free_and_cached(device)))
    except Exception as exc:  # noqa: BLE001 - reported to rank 0, which raises it
        replies.put((rank, f"{type(exc).__name__}: {exc}", None))
        return
    with torch.inference_mode():
        while (cmd := commands.get()) is not None:
            try:
                local = _scatter_views(None, cmd["shape"], cmd["dtype"], cmd["counts"], rank, device)
                kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                          for k, v in cmd["kwargs"].items()}
                _forward(net, local, ViewShard(cmd["counts"], rank), kwargs, cmd["autocast"], device)
                replies.put((rank, None, memory.cuda_free_and_cached(device)))
            except Exception as exc:  # noqa: BLE001 - reported to rank 0, which raises it
                replies.put((rank, f"{type(exc).__name__}: {exc}", None))
    dist.destroy_process_group()


class ShardedNet:
    """A DA3 network run over ``devices`` with one process per device (module docstring).

    Args:
        net: the network (``DA3Net`` / ``NestedDA3Net``, eval mode) already on ``devices[0]``;
            it is rank 0's copy. Weights cast with ``set_dtype`` are reproduced on the workers.
        devices: two or more devices: distinct CUDA devices, or ``cpu`` repeated (gloo).
        timeout_s: collective and reply timeout (a rank lost for longer breaks the group).

    Attributes:
        module, preset, is_metric: the network's (as the engine expects of a model).
        world_size: number of ranks (``len(devices)``).
    """

    def __init__(self, net: torch.nn.Module, devices: Sequence[str], timeout_s: float = 300.0) -> None:
        self.devices = check_devices(devices)
        if dist.is_initialized():
            raise RuntimeError("torch.distributed is already initialised in this process: one sharded "
                               "network per process")
        self.module, self.preset = net, net.preset
        self.is_metric = bool(getattr(net, "is_metric", False))
        self.world_size, self.timeout_s = len(self.devices), float(timeout_s)
        self._broken: str | None = None
        self._memory: dict[int, tuple[int, int] | None] = {}  # rank -> (free, cached) last reported
        port = _free_port()
        spec = {"preset": net.preset, "attention_backend": net.attention_backend, "timeout_s": timeout_s,
                "weight_dtype": memory.weight_dtype(net), "threads": torch.get_num_threads(),
                "metric_scaling": bool(getattr(net, "apply_metric_scaling", False))}
        ctx = mp.get_context("spawn")
        self._commands = [ctx.Queue() for _ in self.devices[1:]]
        self._replies = ctx.Queue()
        self._procs = [ctx.Process(target=_worker_main, daemon=True, name=f"da3-rank{r}",
                                   args=(r, self.devices, port, spec, self._commands[r - 1], self._replies))
                       for r in range(1, self.world_size)]
        for p in self._procs:
            p.start()
        _init_group(0, self.devices, port, timeout_s)
        with torch.no_grad():
            _sync_weights(net)
        self._collect("start-up")
        LOG.info("sharded network %s over %s", getattr(self.preset, "name", "?"), ", ".join(self.devices))

    def __call__(self, images: torch.Tensor, extrinsics: torch.Tensor | None = None,
                 intrinsics: torch.Tensor | None = None, ref_view_strategy: str = "saddle_balanced",
                 return_rays: bool = False, frame_chunk: int | None = None,
                 metric_scaling: bool | None = None):
        """The network's forward over all ranks: ``images (B, S, 3, H, W)`` on ``devices[0]``.

        Arguments and result as ``DA3Net.forward`` (the whole window, input view order);
        autocast of the caller (if any) applies on every rank.
        """
        if self._broken:
            raise RuntimeError(f"sharded network unusable after an earlier failure ({self._broken}); "
                               "rebuild it")
        kwargs = {"extrinsics": extrinsics, "intrinsics": intrinsics, "ref_view_strategy": ref_view_strategy,
                  "return_rays": return_rays, "frame_chunk": frame_chunk, "metric_scaling": metric_scaling}
        if images.dim() != 5 or images.shape[1] < self.world_size:  # too few views to shard
            return self.module(images, **kwargs)
        check_strategy(ref_view_strategy)  # fail here, before any rank starts
        counts = split_views(images.shape[1], self.world_size)
        kind = images.device.type
        autocast = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
        cmd = {"shape": tuple(images.shape), "dtype": images.dtype, "counts": counts, "autocast": autocast,
               "kwargs": {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}}
        for q in self._commands:
            q.put(cmd)
        try:
            local = _scatter_views(images.contiguous(), cmd["shape"], images.dtype, counts, 0,
                                   self.devices[0])
            out = _forward(self.module, local, ViewShard(counts, 0), kwargs, autocast, self.devices[0])
        except Exception as exc:
            self._broken = f"rank 0: {type(exc).__name__}: {exc}"
            raise
        self._collect("window")
        return out

    def _collect(self, what: str) -> None:
        """Wait for every worker's reply; raise (and mark broken) on an error or a timeout."""
        errors = []
        for _ in self._procs:
            try:
                rank, error, free_and_cached = self._replies.get(timeout=self.timeout_s)
            except queue.Empty:
                errors.append(f"no reply within {self.timeout_s:.0f} s")
                break
            if error is not None:
                errors.append(f"rank {rank}: {error}")
            self._memory[rank] = free_and_cached
        if errors:
            self._broken = "; ".join(errors)
            raise RuntimeError(f"sharded network {what} failed: {self._broken}")

    def budget_bytes(self, fraction: float = 0.9) -> int | None:
        """The smallest per-device budget (:func:`memory.budget_from`) of all ranks; None on CPU.

        Rank 0's is measured now; a worker's comes from its last reply (its memory changes only
        while it runs a window, which ends with that reply).
        """
        budgets = [memory.cuda_budget_bytes(self.devices[0], fraction)]
        budgets += [memory.budget_from(self._memory.get(r), fraction) for r in range(1, self.world_size)]
        known = [b for b in budgets if b is not None]
        return min(known) if known else None

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the workers and leave the process group (idempotent)."""
        for q in self._commands:
            q.put(None)
        for p in self._procs:
            p.join(timeout_s)
            if p.is_alive():
                p.terminate()
        self._procs, self._commands = [], []
        self._broken = self._broken or "closed"
        if dist.is_initialized():
            dist.destroy_process_group()
