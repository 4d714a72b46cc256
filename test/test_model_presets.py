"""Presets: every official variant's state dict matches the official key/shape lists."""

from pathlib import Path

import pytest
import torch

from da3_ros.model import OFFICIAL_PRESETS, PRESETS, build_model

KEYS_DIR = Path(__file__).parent / "data" / "da3_checkpoint_keys"


def _official_keys(name: str) -> dict[str, tuple[int, ...]]:
    path = KEYS_DIR / f"{name}_keys.txt"
    out = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        out[key] = tuple(int(v) for v in shape.strip("[]").split(",") if v.strip())
    return out


@pytest.mark.parametrize("name", OFFICIAL_PRESETS)
def test_state_dict_matches_official_keys(name):
    expected = _official_keys(name)
    net = build_model(name, device="meta")
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    wrong = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert wrong == {}
    assert all(v.device.type == "meta" for v in net.state_dict().values())


def test_shared_aux_layernorm_has_four_aliases():
    net = build_model("da3-small", device="meta")
    sd = net.state_dict()
    names = [f"head.scratch.output_conv2_aux.{i}.2.weight" for i in range(4)]
    assert all(n in sd for n in names)
    modules = {id(net.head.scratch.output_conv2_aux[i][2]) for i in range(4)}
    assert len(modules) == 1


def test_tiny_preset_is_small_and_same_family():
    net = build_model("da3-tiny")
    params = sum(p.numel() for p in net.parameters())
    assert 1e6 < params < 1e7
    small_keys = {k.split(".")[0] for k in build_model("da3-small", device="meta").state_dict()}
    assert {k.split(".")[0] for k in net.state_dict()} == small_keys
    assert PRESETS["da3-tiny"].has_camera and PRESETS["da3-tiny"].head == "dualdpt"


def test_param_counts_match_reference_doc():
    expected = {"da3-small": 34_299_463, "da3-base": 135_366_599, "da3-large": 410_941_767,
                "da3metric-large": 334_171_394, "da3nested-giant-large": 1_689_845_519}
    for name, count in expected.items():
        net = build_model(name, device="meta")
        assert sum(p.numel() for p in net.parameters()) == count, name


def test_unknown_preset_lists_known():
    with pytest.raises(KeyError, match="da3-small"):
        build_model("da3-nope", device="meta")


def test_meta_build_does_not_allocate():
    net = build_model("da3-giant", device="meta")
    assert next(net.parameters()).device == torch.device("meta")
