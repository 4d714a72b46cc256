"""Our implementation of the Depth Anything 3 network (loads the official checkpoints).

Public API: :func:`build_model`, :func:`load_pretrained`, :func:`save_pretrained`,
:class:`DA3Output`, :data:`PRESETS`. Attributes load on first use (PEP 562), so the torch-free
:mod:`da3_ros.model.options` imports without torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DA3Net": "net", "DA3Output": "net", "NestedDA3Net": "net", "build_model": "net",
    "OFFICIAL_PRESETS": "presets", "PRESETS": "presets", "DA3Config": "presets", "NestedConfig": "presets",
    "get_preset": "presets",
    "CheckpointError": "weights", "checkpoint_filter_fn": "weights", "load_pretrained": "weights",
    "save_pretrained": "weights",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Load ``name`` from its module on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
