"""Inference settings: the one home of their defaults and choice lists (torch-free).

The node's parameters, ``da3-eval`` and the docs read these; :func:`da3_ros.inference.build.build_engine`
takes an :class:`InferenceSettings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from da3_ros.model.options import ACCELERATE_MODES, ATTENTION_BACKENDS, DTYPES, REF_VIEW_STRATEGIES

#: ``accelerate`` values: ``auto`` or one of the network's fast paths.
ACCELERATE_SETTINGS: tuple[str, ...] = ("auto",) + ACCELERATE_MODES
#: ``ref_view_strategy`` values: ``auto`` (what the weights recommend) or a strategy.
REF_VIEW_SETTINGS: tuple[str, ...] = ("auto",) + REF_VIEW_STRATEGIES
#: The forms a ``device`` setting takes (``cuda:N``: the N-th CUDA device).
DEVICE_FORMS: tuple[str, ...] = ("auto", "cpu", "cuda", "cuda:N")
#: ``process_res`` when neither the parameter nor the weights name one (upstream's default).
DEFAULT_PROCESS_RES = 504
#: ``ref_view_strategy`` when neither the parameter nor the weights name one (upstream's default).
DEFAULT_REF_VIEW_STRATEGY = "saddle_balanced"

__all__ = ["ACCELERATE_SETTINGS", "ATTENTION_BACKENDS", "DEFAULT_PROCESS_RES", "DEFAULT_REF_VIEW_STRATEGY",
           "DEVICE_FORMS", "DTYPES", "InferenceSettings", "PredictorInfo", "REF_VIEW_SETTINGS",
           "device_form_error", "devices_form_error"]


def devices_form_error(names) -> str | None:
    """Why ``names`` is not a ``devices`` setting (each a :data:`DEVICE_FORMS` other than auto), or None."""
    for name in names or []:
        problem = device_form_error(name) or ("'auto' cannot be one of several devices" if name == "auto"
                                              else None)
        if problem:
            return f"devices: {problem}"
    return None


def device_form_error(name: str) -> str | None:
    """Why ``name`` is not a ``device`` setting (:data:`DEVICE_FORMS`), or None; no torch needed."""
    if name in ("auto", "cpu", "cuda"):
        return None
    prefix, sep, index = name.partition(":")
    if prefix == "cuda" and sep and index.isdigit():
        return None
    hint = f" (cuda:{name}?)" if name.isdigit() else " (cuda?)" if name.lower() in ("gpu", "nvidia") else ""
    return f"device {name!r} is not one of {', '.join(DEVICE_FORMS)}{hint}"


@dataclass
class InferenceSettings:
    """What to run and how (the node's model parameters; ``da3-eval`` options).

    Attributes:
        model: ``default`` (bundled trained model, else da3-tiny random), a preset (random
            weights), a weights directory or a hub id (see :mod:`da3_ros.inference.sources`).
        device: ``auto`` (cuda when available), ``cpu``, ``cuda``, ``cuda:N``.
        devices: several devices for one window (``[cuda:0, cuda:1]``; ``cpu`` repeated runs the
            same path with gloo): each window's views are sharded over them, one process each,
            with global attention over every view (:mod:`da3_ros.core.sharded`); the network
            then runs eagerly (no ``accelerate``). Empty: the single ``device``; one entry:
            that device alone.
        dtype: one of :data:`DTYPES`.
        attention_backend: one of :data:`ATTENTION_BACKENDS`.
        accelerate: one of :data:`ACCELERATE_SETTINGS` (see :func:`build.resolve_accelerate`).
        process_res: long side of the network input in pixels; 0: the weights' recommendation.
        ref_view_strategy: one of :data:`REF_VIEW_SETTINGS`.
        condition_on_intrinsics: use CameraInfo intrinsics when a frame has them (the default):
            they are published instead of the network's estimate, the cloud follows them, and
            the network gets them where it can use them (see :mod:`da3_ros.core.engine`).
        condition_on_poses: feed known poses (with known intrinsics) to the network.
        warmup: run one dummy window when the predictor is built.
        compile_cache_dir: inductor's cache (compiled kernels survive restarts); "": the user
            cache (``$XDG_CACHE_HOME`` or ``~/.cache``, then ``da3_ros/torch_compile``).
        compile_timeout_s: a background compile not done after this long is abandoned.
        cpu_threads: torch's CPU threads; 0: 2 when the predictor runs on CUDA (the GPU does the
            work), else all cores but two (left to the node's ROS threads), at least 1.
        output_resolution: size of the outputs: ``source``, ``network`` or a long side in pixels
            (:func:`da3_ros.core.config.output_size`).
    """

    model: str = "default"
    device: str = "auto"
    devices: list[str] = field(default_factory=list)
    dtype: str = "auto"
    attention_backend: str = "auto"
    accelerate: str = "auto"
    process_res: int = 0
    ref_view_strategy: str = "auto"
    condition_on_intrinsics: bool = True
    condition_on_poses: bool = False
    warmup: bool = True
    compile_cache_dir: str = ""
    compile_timeout_s: float = 600.0
    cpu_threads: int = 0
    output_resolution: str = "source"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> InferenceSettings:
        """The settings named in ``values`` (e.g. the node's parameters); others keep defaults."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


@dataclass
class PredictorInfo:
    """What diagnostics report about the predictor."""

    name: str
    device: str = "cpu"
    dtype: str = "float32"
    attention_backend: str = "n/a"
    accelerate: str = "off"
    is_metric: bool = False
    warnings: list[str] = field(default_factory=list)
