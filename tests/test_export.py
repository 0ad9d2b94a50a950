"""sparse-24-bitmask export: bit-exact round trips, atomic writes, damaged files."""

import json

import numpy as np
import pytest
import torch

from compress.config import PruneConfig
from compress.errors import UserError
from compress.export import compress_24, decompress_24, load_checkpoint, read_state_dict, save_checkpoint
from compress.pipeline import prune_model


def _random_24(rows=8, cols=32, seed=0, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g).to(dtype)
    groups = W.view(rows, cols // 4, 4)
    idx = torch.rand(rows, cols // 4, 4, generator=g).argsort(-1)[..., :2]
    groups.scatter_(-1, idx, 0)
    W[0, :4] = 0  # a group with four zeros
    W[1, 4:8] = torch.tensor([0, 3.0, 0, 0])  # a group with three zeros
    return W


def test_codec_roundtrip_is_bit_exact_and_matches_layout():
    W = _random_24()
    c = compress_24(W)
    assert c["compressed"].shape == (8, 16) and c["compressed"].dtype == W.dtype
    assert c["bitmask"].dtype == torch.uint8 and c["bitmask"].shape == (8, 4)
    assert c["shape"].flatten().tolist() == [8, 32]
    keep = np.unpackbits(c["bitmask"].numpy(), axis=-1, bitorder="little")[:, :32].astype(bool)
    assert (keep.reshape(8, 8, 4).sum(-1) == 2).all()  # exactly 2 per group, even with extra zeros
    assert np.array_equal(W.float().numpy()[keep].reshape(8, 16), c["compressed"].float().numpy())
    out = decompress_24(c["compressed"], c["bitmask"], c["shape"])
    assert torch.equal(out.view(torch.int16), W.view(torch.int16))


def test_compress_rejects_dense_weights():
    with pytest.raises(ValueError, match="not 2:4 sparse"):
        compress_24(torch.randn(4, 8))


def test_decompress_rejects_non_24_bitmask():
    c = compress_24(_random_24())
    c["bitmask"][0, 0] = 0b00000111
    with pytest.raises(ValueError, match="not a 2:4 pattern"):
        decompress_24(c["compressed"], c["bitmask"], c["shape"])


@pytest.fixture
def pruned_tiny(tiny):
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    result = prune_model(tiny, ids, PruneConfig("wanda", "2:4"), torch.device("cpu"), progress=False)
    return tiny, set(result.metrics)


def test_save_load_bit_exact(pruned_tiny, tmp_path):
    model, modules = pruned_tiny
    out = save_checkpoint(model, None, tmp_path / "ckpt", compress_24_modules=modules, ignore=["lm_head"])
    config = json.loads((out / "config.json").read_text())
    sc = config["quantization_config"]["sparsity_config"]
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    assert sc["format"] == "sparse-24-bitmask" and sc["sparsity_structure"] == "2:4"
    assert sc["targets"] == ["Linear"] and sc["ignore"] == ["lm_head"] and 0 < sc["global_sparsity"] < 0.5
    raw_keys = set(__import__("safetensors").safe_open(out / "model.safetensors", "pt").keys())
    assert "model.layers.0.mlp.up_proj.compressed" in raw_keys and "model.layers.0.mlp.up_proj.weight" not in raw_keys
    loaded, _ = load_checkpoint(out)
    ref = model.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ref[k]), k
    ids = torch.randint(0, 128, (2, 12))
    assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_existing_output_not_overwritten(pruned_tiny, tmp_path):
    model, modules = pruned_tiny
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        save_checkpoint(model, None, out, compress_24_modules=modules)
    assert (out / "keep.txt").read_text() == "precious"
    save_checkpoint(model, None, out, compress_24_modules=modules, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_interrupted_export_leaves_nothing(pruned_tiny, tmp_path, monkeypatch):
    model, modules = pruned_tiny

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("compress.export.save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, None, tmp_path / "ckpt", compress_24_modules=modules)
    assert list(tmp_path.iterdir()) == []


def test_truncated_file_gives_clear_error(pruned_tiny, tmp_path):
    model, modules = pruned_tiny
    out = save_checkpoint(model, None, tmp_path / "ckpt", compress_24_modules=modules)
    f = out / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(UserError, match="damaged or truncated"):
        read_state_dict(out)


def test_sharded_export_roundtrip(pruned_tiny, tmp_path, monkeypatch):
    model, modules = pruned_tiny
    monkeypatch.setattr("compress.export.SHARD_BYTES", 40_000)
    out = save_checkpoint(model, None, tmp_path / "ckpt", compress_24_modules=modules)
    assert (out / "model.safetensors.index.json").exists() and len(list(out.glob("model-*.safetensors"))) > 1
    loaded, _ = load_checkpoint(out)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="no model.safetensors"):
        read_state_dict(tmp_path)
