"""Where a model comes from: ``default`` | preset | weights directory | hub id.

``model`` accepts:

- ``default``: the bundled trained model ``data/models/da3-tiny-synth`` when it is present
  (source tree or installed share), else ``da3-tiny`` with random weights;
- a preset name (``da3-large``, ``da3-tiny``, ...): the network with RANDOM weights (plumbing
  checks only);
- a local weights directory (``config.json`` + ``model.safetensors``), or a Hugging Face hub id
  (``org/name``), loaded strictly.

Weights trained here record the resolution and reference-view strategy they were trained for
(``config.json``'s ``da3_ros`` block); :func:`resolve_process_settings` follows them when the
settings say ``0`` / ``auto``.
"""

from __future__ import annotations

import json
from pathlib import Path

from da3_ros.inference.settings import DEFAULT_PROCESS_RES, DEFAULT_REF_VIEW_STRATEGY, InferenceSettings
from da3_ros.model.presets import PRESETS

#: The bundled trained model, relative to the source checkout or the installed share directory.
BUNDLED_MODEL = Path("data") / "models" / "da3-tiny-synth"
#: What ``default`` means when the bundled model is absent.
FALLBACK_PRESET = "da3-tiny"
SOURCE_KINDS = ("preset", "path", "hub")


def bundled_model_dir() -> Path | None:
    """The bundled trained model directory (source checkout or installed share), or None."""
    candidates = [Path(__file__).resolve().parents[2] / BUNDLED_MODEL]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("da3_ros")) / BUNDLED_MODEL)
    except Exception:  # noqa: BLE001 - not installed as an ament package (or no ROS at all)
        pass
    return next((c for c in candidates if c.is_dir()), None)


def resolve_model_source(model: str) -> tuple[str, str]:
    """Classify a ``model`` value.

    Returns:
        ``(kind, value)`` with kind ``preset`` (random weights), ``path`` or ``hub``.

    Raises:
        ValueError: the value is neither a preset, an existing path, a hub id nor ``default``.
    """
    if model == "default":
        found = bundled_model_dir()
        return ("path", str(found)) if found else ("preset", FALLBACK_PRESET)
    if model in PRESETS:
        return "preset", model
    if Path(model).expanduser().exists():
        return "path", str(Path(model).expanduser())
    if model.count("/") == 1 and not model.startswith((".", "/")):
        return "hub", model
    raise ValueError(f"model {model!r} is not a preset ({', '.join(sorted(PRESETS))}), "
                     "an existing weights directory, a hub id (org/name) or 'default'")


def recommended_settings(kind: str, source: str) -> dict:
    """The inference settings a weights directory recommends (its config.json ``da3_ros`` block).

    Our trained weights record the resolution and reference-view strategy they were trained
    for; official checkpoints carry none (upstream defaults apply).
    """
    if kind != "path":
        return {}
    config = Path(source) / "config.json"
    try:
        block = json.loads(config.read_text()).get("da3_ros", {})
    except (OSError, ValueError):
        return {}
    return {k: block[k] for k in ("process_res", "ref_view_strategy") if k in block}


def resolve_process_settings(settings: InferenceSettings, kind: str, source: str) -> tuple[int, str]:
    """``(process_res, ref_view_strategy)``: the settings, where 0 / ``auto`` defer to the weights."""
    recommended = recommended_settings(kind, source)
    process_res = int(settings.process_res) or int(recommended.get("process_res", DEFAULT_PROCESS_RES))
    ref = settings.ref_view_strategy
    if ref == "auto":
        ref = str(recommended.get("ref_view_strategy", DEFAULT_REF_VIEW_STRATEGY))
    return process_res, ref
