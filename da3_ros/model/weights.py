"""Checkpoint loading and saving: safetensors only, strict, official layout.

Accepted sources (see :func:`load_pretrained`):
  * a directory with ``config.json`` (``{"model_name": "<preset>", ...}``) and
    ``model.safetensors`` whose keys carry the ``model.`` prefix (nested:
    ``model.da3.*`` / ``model.da3_metric.*``): the layout of the official releases and of
    upstream ``DepthAnything3.save_pretrained``;
  * a bare ``.safetensors`` state dict, with or without the ``model.`` prefix (preset from
    the argument, the file's metadata, a ``config.json`` beside it, or the key shapes);
  * a Hugging Face hub id (``depth-anything/DA3-LARGE``), fetched with huggingface_hub.

Pickled checkpoints (``.pth``/``.bin``) are refused: nothing here ever unpickles.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_model

from da3_ros.model.net import DA3Net, NestedDA3Net, build_model
from da3_ros.model.presets import PRESETS, DA3Config, NestedConfig, get_preset

LOG = logging.getLogger(__name__)
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_PREFIXES = ("model.", "module.")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded (format, keys or shapes); the message says why."""


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Recognise a checkpoint's key format and return keys at the DA3Net level.

    Official files prefix every key with ``model.`` (the API wrapper's attribute); some
    exports use ``module.``. Bare DA3Net state dicts pass through unchanged. Pure function.

    Raises:
        CheckpointError: Keys mix prefixed and unprefixed names.
    """
    keys = list(state_dict)
    for prefix in _PREFIXES:
        hits = sum(k.startswith(prefix) for k in keys)
        if hits == len(keys) and keys:
            return {k[len(prefix):]: v for k, v in state_dict.items()}
        if hits:
            odd = [k for k in keys if not k.startswith(prefix)][:5]
            raise CheckpointError(f"checkpoint mixes '{prefix}'-prefixed and other keys, e.g. {odd}")
    return dict(state_dict)


def _alias_groups(net: nn.Module) -> list[list[str]]:
    """State-dict keys that name the same tensor (e.g. the shared aux LayerNorm)."""
    groups: dict[int, list[str]] = {}
    for key, tensor in net.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(key)
    return [g for g in groups.values() if len(g) > 1]


def load_state_dict_strict(net: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load DA3Net-level weights strictly, assigning the given tensors.

    A key missing from ``state_dict`` is accepted only when another alias of the same
    tensor is present (safetensors stores shared tensors once).

    Raises:
        CheckpointError: Naming missing, unexpected and shape-mismatched keys.
    """
    sd = dict(state_dict)
    for group in _alias_groups(net):
        present = [k for k in group if k in sd]
        if present:
            for k in group:
                sd.setdefault(k, sd[present[0]])
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = sorted(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {expected[k]}"
                   for k in expected if k in sd and tuple(sd[k].shape) != expected[k])
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"checkpoint does not match {getattr(net, 'preset', None) and net.preset.name}: "
            f"{len(missing)} missing {missing[:20]}, {len(unexpected)} unexpected {unexpected[:20]}, "
            f"{len(wrong)} shape mismatches {wrong[:20]}")
    net.load_state_dict(sd, strict=True, assign=True)


def infer_preset(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Name of the preset whose key set and shapes equal ``state_dict``'s (aliases aside).

    Raises:
        CheckpointError: No preset matches.
    """
    got = {k: tuple(v.shape) for k, v in state_dict.items()}
    matches = []
    for name in PRESETS:
        ref = build_model(name, device="meta")
        aliases = {k for g in _alias_groups(ref) for k in g}
        want = {k: tuple(v.shape) for k, v in ref.state_dict().items() if k not in aliases}
        if want == {k: v for k, v in got.items() if k not in aliases}:
            matches.append(name)
    if len(matches) != 1:
        what = f"several presets ({matches})" if matches else "no DA3 preset"
        raise CheckpointError(f"{what} match this state dict ({len(got)} keys) and it names none "
                              "(no config.json / metadata); pass preset=")
    return matches[0]


def _read_config(directory: Path) -> str | None:
    path = directory / CONFIG_NAME
    if not path.is_file():
        return None
    cfg = json.loads(path.read_text())
    name = cfg.get("model_name") or (cfg.get("config") or {}).get("model_name")
    if name is not None and name not in PRESETS:
        raise CheckpointError(f"{path}: model_name {name!r} is not a known preset {sorted(PRESETS)}")
    return name


def _download(hub_id: str) -> Path:
    """snapshot_download config.json + model.safetensors; clear error when offline."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]))
    except Exception as exc:  # noqa: BLE001 - offline, missing repo, network: all the same to the user
        raise CheckpointError(
            f"no local path {hub_id!r} exists and fetching it from the Hugging Face hub failed "
            f"({type(exc).__name__}: {exc}). "
            "Offline? Download the repository elsewhere (config.json + model.safetensors) and "
            "pass its local directory, or a .safetensors file, as the path.") from exc


def _resolve_files(source: str | Path) -> tuple[Path, Path | None]:
    """Return (weights file, directory holding config.json or None)."""
    path = Path(source).expanduser()
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            pickles = [p.name for p in path.glob("*") if p.suffix in (".bin", ".pth", ".pt", ".ckpt")]
            hint = f" (found {pickles}: pickled checkpoints are not loaded; convert to safetensors)" \
                if pickles else ""
            raise CheckpointError(f"{path} has no {WEIGHTS_NAME}{hint}")
        return weights, path
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path}: only .safetensors checkpoints are loaded (never pickle)")
        return path, path.parent
    text = str(source)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        directory = _download(text)
        return directory / WEIGHTS_NAME, directory
    raise FileNotFoundError(f"no checkpoint at {source!r} (expected a directory, a .safetensors "
                            "file or a hub id like 'depth-anything/DA3-SMALL')")


def load_pretrained(path_or_hub_id: str | Path, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32, *,
                    preset: str | DA3Config | NestedConfig | None = None,
                    attention_backend: str | None = None,
                    apply_metric_scaling: bool = False) -> DA3Net | NestedDA3Net:
    """Build the network and load a checkpoint into it, strictly.

    Args:
        path_or_hub_id: Checkpoint directory, ``.safetensors`` file, or hub id.
        device: Device for the weights.
        dtype: Weight/activation dtype (fp32, bf16, fp16); camera modules and final head
            convolutions stay fp32.
        preset: Override the preset (else config.json, file metadata, then key shapes).
        attention_backend: See :mod:`da3_ros.model.attention`.
        apply_metric_scaling: Metric variant's default for ``forward(metric_scaling=)``.

    Returns:
        The network in eval mode.

    Raises:
        CheckpointError: Unreadable source, unknown preset, or keys/shapes not matching.
        FileNotFoundError: A local path that does not exist.
    """
    weights, directory = _resolve_files(path_or_hub_id)
    state = checkpoint_filter_fn(load_file(str(weights), device=str(torch.device(device))))
    name = get_preset(preset).name if preset is not None else None
    if name is None and directory is not None and (directory / CONFIG_NAME).is_file():
        name = _read_config(directory)
    if name is None:
        with safe_open(str(weights), framework="pt") as f:
            name = (f.metadata() or {}).get("model_name")
    if name is None:
        name = infer_preset(state)
    net = build_model(preset if preset is not None else name, attention_backend=attention_backend,
                      apply_metric_scaling=apply_metric_scaling, device="meta")
    load_state_dict_strict(net, state)
    net.set_dtype(dtype)
    net.set_attention_backend(net.attention_backend)  # weights now live on `device`
    LOG.info("loaded DA3 %s from %s (%s, %s)", name, weights, device, dtype)
    return net.eval()


def save_pretrained(net: DA3Net | NestedDA3Net, directory: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` in the official layout (``model.`` keys).

    Shared tensors (the aux LayerNorm aliases) are stored once with safetensors' alias
    metadata, as upstream's ``save_pretrained`` does. Returns the directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    holder = nn.Module()
    holder.model = net
    save_model(holder, str(directory / WEIGHTS_NAME), metadata={"model_name": net.preset.name})
    (directory / CONFIG_NAME).write_text(json.dumps({"model_name": net.preset.name}, indent=2) + "\n")
    return directory
