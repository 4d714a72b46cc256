"""Our implementation of the Depth Anything 3 network (loads the official checkpoints).

Public API: :func:`build_model`, :func:`load_pretrained`, :func:`save_pretrained`,
:class:`DA3Output`, :data:`PRESETS`.
"""

from da3_ros.model.net import DA3Net, DA3Output, NestedDA3Net, build_model
from da3_ros.model.presets import OFFICIAL_PRESETS, PRESETS, DA3Config, NestedConfig, get_preset

__all__ = [
    "DA3Config", "DA3Net", "DA3Output", "NestedConfig", "NestedDA3Net", "OFFICIAL_PRESETS", "PRESETS",
    "build_model", "get_preset",
]
