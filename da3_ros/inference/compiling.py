"""The network compiled in the background: serve eagerly at once, switch to the fast path when ready.

``torch.compile`` of a whole DA3 network takes about a minute per window shape (bench/RESULTS.md:
54 s cold for da3-large, 8 s with inductor's cache warm), and the compiled network replayed as a
CUDA graph is 2-4x faster than eager. A node that compiled before serving would make its user
wait in silence; :class:`BackgroundCompiledNet` instead runs every window eagerly while a
daemon thread compiles the shape it saw, then captures the compiled network as a CUDA graph on
the caller's thread (no other thread uses the GPU during capture) and replays it from then on.

Inductor keeps what it compiled in a cache directory (``cache_dir``, e.g. under ``~/.cache``),
so a restart with the same model and shapes compiles in seconds. A compile that takes longer
than ``timeout_s`` is abandoned (the network stays eager; it is reported). Conditioned windows
(known intrinsics or poses) and CPU tensors always run eagerly.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from da3_ros.model.accel import GraphedDA3, compile_network


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/da3_ros/torch_compile`` (``~/.cache/...`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "da3_ros" / "torch_compile"


def use_cache_dir(path: str | os.PathLike) -> Path:
    """Point inductor's caches at ``path`` (created) unless the environment already chose one."""
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(path))
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


@dataclass
class CompileStatus:
    """What diagnostics say about the background compile (seconds, shapes as (S, H, W))."""

    state: str = "eager"  # eager | compiling | ready | failed | timed_out
    compiling: list[tuple[int, int, int]] = field(default_factory=list)
    ready: list[tuple[int, int, int]] = field(default_factory=list)
    compile_s: dict[tuple[int, int, int], float] = field(default_factory=dict)
    started: float = 0.0
    error: str = ""

    def describe(self) -> str:
        """One line: e.g. ``ready 1 shape (96 s)`` or ``compiling (S,H,W)=(8,378,504) 34 s``."""
        if self.state == "compiling":
            return f"compiling {self.compiling} for {time.monotonic() - self.started:.0f} s (eager meanwhile)"
        if self.state == "ready":
            times = ", ".join(f"{s}: {t:.0f} s" for s, t in self.compile_s.items())
            return f"compiled + CUDA graphs for {len(self.ready)} shape(s) ({times})"
        if self.state in ("failed", "timed_out"):
            return f"eager ({self.state}: {self.error})"
        return "eager (no window yet)"


class BackgroundCompiledNet:
    """Callable like the network; eager until a shape's compiled CUDA graph is ready.

    Args:
        net: the network, eval mode, on its CUDA device, weights in their dtype.
        logger: ``info`` / ``warning`` (start, end and failure of each compile are logged).
        timeout_s: abandon a compile that has not finished after this long.
        graphs: replay CUDA graphs of the compiled network (else run the compiled code).
        compiled: the compiled callable (default ``compile_network(net)``; tests pass their own).
    """

    #: Device types whose windows are compiled (the rest run eagerly).
    COMPILE_DEVICES = ("cuda",)

    def __init__(self, net: torch.nn.Module, logger, timeout_s: float = 600.0, graphs: bool = True,
                 compiled=None) -> None:
        self.module, self._logger, self.timeout_s = net, logger, float(timeout_s)
        self.preset = net.preset
        self.is_metric = bool(getattr(net, "is_metric", False))
        self._compiled = compiled if compiled is not None else compile_network(net)
        self.fast = GraphedDA3(self._compiled, module=net) if graphs else self._compiled
        self.status = CompileStatus()
        self._lock = threading.Lock()
        self._started: set[tuple] = set()  # call keys (shape, strategy) a compile was started for
        self._ready: set[tuple] = set()

    def __call__(self, images: torch.Tensor, *args, **kwargs):
        """Run ``images (B, S, 3, H, W)``: the fast path for a ready shape, else eagerly."""
        key = (tuple(images.shape), kwargs.get("ref_view_strategy"))
        conditioned = any(a is not None for a in args) or kwargs.get("extrinsics") is not None \
            or kwargs.get("intrinsics") is not None
        if images.device.type not in self.COMPILE_DEVICES or conditioned:
            return self.module(images, *args, **kwargs)
        with self._lock:
            ready = key in self._ready
            start = key not in self._started and self.status.state not in ("failed", "timed_out")
            if start:
                self._started.add(key)
        if ready:
            return self.fast(images, *args, **kwargs)
        if start:
            self._start(key, images, kwargs)
        self._check_timeout()
        return self.module(images, *args, **kwargs)

    def _start(self, key, images: torch.Tensor, kwargs: dict) -> None:
        shape = (int(images.shape[1]), int(images.shape[-2]), int(images.shape[-1]))
        with self._lock:
            self.status.state, self.status.started = "compiling", time.monotonic()
            self.status.compiling.append(shape)
        self._logger.info(f"accelerate: compiling the network for window shape (S, H, W)={shape} in the "
                          f"background (about a minute cold, seconds from the cache); running eagerly "
                          f"meanwhile")
        example = torch.zeros_like(images)
        threading.Thread(target=self._compile, args=(key, shape, example, dict(kwargs)), daemon=True,
                         name="da3_compile").start()

    def _compile(self, key, shape, example: torch.Tensor, kwargs: dict) -> None:
        t0 = time.monotonic()
        try:
            cuda = example.device.type == "cuda"
            side = torch.cuda.Stream(device=example.device) if cuda else None
            with torch.inference_mode(), (torch.cuda.stream(side) if cuda else contextlib.nullcontext()):
                for _ in range(2):  # twice: lazily filled caches guard the first trace
                    self._compiled(example, **kwargs)
            if cuda:
                side.synchronize()
        except Exception as exc:  # noqa: BLE001 - any failure leaves the network eager, reported
            with self._lock:
                self.status.state, self.status.error = "failed", f"{type(exc).__name__}: {exc}"
                self.status.compiling.remove(shape)
            self._logger.warning(f"accelerate: compiling {shape} failed, staying eager: {self.status.error}")
            return
        seconds = time.monotonic() - t0
        with self._lock:
            if self.status.state == "timed_out":
                return
            self.status.compiling.remove(shape)
            self.status.ready.append(shape)
            self.status.compile_s[shape] = seconds
            self._ready.add(key)
            self.status.state = "compiling" if self.status.compiling else "ready"
        self._logger.info(f"accelerate: window shape {shape} compiled in {seconds:.0f} s; the next window "
                          "captures it as a CUDA graph and replays it from then on")

    def _check_timeout(self) -> None:
        with self._lock:
            st = self.status
            if st.state == "compiling" and time.monotonic() - st.started > self.timeout_s:
                st.state, st.error = "timed_out", f"not done after {self.timeout_s:.0f} s"
                self._logger.warning(f"accelerate: compile of {st.compiling} {st.error}; staying eager")

    def reset(self) -> None:
        """Drop captured graphs (and their memory pool)."""
        if isinstance(self.fast, GraphedDA3):
            self.fast.reset()
