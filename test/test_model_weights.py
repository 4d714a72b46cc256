"""Checkpoint loading/saving: official layout, bare files, strictness, safetensors only."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from da3_ros.model import CheckpointError, build_model, checkpoint_filter_fn, load_pretrained, save_pretrained

X = torch.randn(1, 3, 3, 28, 42, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = build_model("da3-tiny")
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return net


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    return save_pretrained(tiny, tmp_path_factory.mktemp("ckpt") / "da3-tiny")


def _same_outputs(a, b):
    with torch.inference_mode():
        oa, ob = a(X), b(X)
    for k in ("depth", "depth_conf", "extrinsics", "intrinsics"):
        torch.testing.assert_close(getattr(oa, k), getattr(ob, k), rtol=0, atol=0)


def test_official_layout_roundtrip(tiny, saved):
    assert json.loads((saved / "config.json").read_text()) == {"model_name": "da3-tiny"}
    keys = load_file(str(saved / "model.safetensors")).keys()
    assert all(k.startswith("model.") for k in keys)
    assert "model.backbone.pretrained.pos_embed" in keys
    loaded = load_pretrained(saved)
    assert loaded.preset.name == "da3-tiny" and not loaded.training
    for k, v in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    _same_outputs(tiny, loaded)
    # the shared LayerNorm is still one module after loading
    aux = loaded.head.scratch.output_conv2_aux
    assert aux[0][2] is aux[3][2]


def test_bare_state_dict_with_and_without_prefix(tiny, tmp_path):
    # like safetensors' save_model: the shared LayerNorm stored under one alias only
    sd = {k: v for k, v in tiny.state_dict().items()
          if not re.match(r"head\.scratch\.output_conv2_aux\.[123]\.2\.", k)}
    bare = tmp_path / "bare" / "weights.safetensors"
    bare.parent.mkdir()
    save_file({k: v.clone() for k, v in sd.items()}, str(bare))
    _same_outputs(tiny, load_pretrained(bare))  # preset inferred from the key shapes
    prefixed = tmp_path / "prefixed.safetensors"
    save_file({f"model.{k}": v.clone() for k, v in sd.items()}, str(prefixed),
              metadata={"model_name": "da3-tiny"})
    _same_outputs(tiny, load_pretrained(prefixed))
    _same_outputs(tiny, load_pretrained(bare, preset="da3-tiny"))


def test_config_with_nested_config_block(tiny, saved, tmp_path):
    d = tmp_path / "hubstyle"
    d.mkdir()
    (d / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    (d / "config.json").write_text('{"config": {"model_name": "da3-tiny", "other": 1}}')
    assert load_pretrained(d).preset.name == "da3-tiny"
    (d / "config.json").write_text('{"model_name": "da3-huge"}')
    with pytest.raises(CheckpointError, match="not a known preset"):
        load_pretrained(d)


def test_checkpoint_filter_fn_formats():
    t = torch.zeros(1)
    assert checkpoint_filter_fn({"model.head.x": t, "model.cam_dec.y": t}).keys() == {"head.x", "cam_dec.y"}
    assert checkpoint_filter_fn({"module.head.x": t}).keys() == {"head.x"}
    assert checkpoint_filter_fn({"head.x": t}).keys() == {"head.x"}
    with pytest.raises(CheckpointError, match="mixes"):
        checkpoint_filter_fn({"model.head.x": t, "head.y": t})


def _write(tmp_path, sd):
    d = tmp_path / "broken"
    d.mkdir()
    save_file({f"model.{k}": v.contiguous().clone() for k, v in sd.items()}, str(d / "model.safetensors"))
    (d / "config.json").write_text('{"model_name": "da3-tiny"}')
    return d


def test_missing_key_is_named(tiny, tmp_path):
    sd = dict(tiny.state_dict())
    del sd["cam_dec.fc_t.bias"]
    with pytest.raises(CheckpointError, match=r"1 missing \['cam_dec.fc_t.bias'\]"):
        load_pretrained(_write(tmp_path, sd))


def test_unexpected_key_is_named(tiny, tmp_path):
    sd = dict(tiny.state_dict())
    sd["head.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"unexpected \['head.extra.weight'\]"):
        load_pretrained(_write(tmp_path, sd))


def test_shape_mismatch_is_named(tiny, tmp_path):
    sd = dict(tiny.state_dict())
    sd["cam_dec.fc_t.bias"] = torch.zeros(4)
    with pytest.raises(CheckpointError, match=r"cam_dec.fc_t.bias: checkpoint \(4,\) vs model \(3,\)"):
        load_pretrained(_write(tmp_path, sd))


def test_wrong_preset_in_config_fails_strictly(saved, tmp_path):
    d = tmp_path / "wrong"
    d.mkdir()
    (d / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    (d / "config.json").write_text('{"model_name": "da3-small"}')
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_pretrained(d)


def test_pickle_checkpoints_are_refused(tmp_path):
    pth = tmp_path / "model.pth"
    pth.write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="only .safetensors"):
        load_pretrained(pth)
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="pickled checkpoints are not loaded"):
        load_pretrained(tmp_path)


def test_missing_path_and_offline_hub(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError):
        load_pretrained(tmp_path / "nothing-here")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="local directory"):
        load_pretrained("da3-ros-test/does-not-exist")


def test_dtype_and_metadata_on_load(saved):
    net = load_pretrained(saved, dtype=torch.bfloat16)
    assert net.backbone.pretrained.pos_embed.dtype == torch.bfloat16
    assert net.cam_enc.pose_branch.fc1.weight.dtype == torch.float32
    with torch.inference_mode():
        out = net(X)
    assert out.depth.dtype == torch.float32 and torch.isfinite(out.depth).all()


def test_ambiguous_inference_asks_for_preset(tmp_path):
    net = build_model("da3mono-large", device="meta")
    from da3_ros.model.weights import infer_preset

    with pytest.raises(CheckpointError, match="several presets"):
        infer_preset(net.state_dict())
