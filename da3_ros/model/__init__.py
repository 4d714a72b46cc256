"""Our implementation of the Depth Anything 3 network (loads the official checkpoints).

Public API: :func:`build_model`, :func:`load_pretrained`, :func:`save_pretrained`,
:class:`DA3Output`, :data:`PRESETS`.
"""

from da3_ros.model.net import DA3Net, DA3Output, NestedDA3Net, build_model
from da3_ros.model.presets import OFFICIAL_PRESETS, PRESETS, DA3Config, NestedConfig, get_preset
from da3_ros.model.weights import CheckpointError, checkpoint_filter_fn, load_pretrained, save_pretrained

__all__ = [
    "DA3Config", "DA3Net", "DA3Output", "NestedConfig", "NestedDA3Net", "OFFICIAL_PRESETS", "PRESETS",
    "CheckpointError", "build_model", "checkpoint_filter_fn", "get_preset", "load_pretrained",
    "save_pretrained",
]
