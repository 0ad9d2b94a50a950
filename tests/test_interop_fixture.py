"""A checkpoint written by llm-compressor itself (tests/fixtures/llmcompressor-2of4, by
bench/interop/make_llmc_fixture.py: llm-compressor 0.10, compressed-tensors 0.14, transformers 4.57) is read by our
loader exactly as compressed-tensors decompresses it, and our export writes the config llm-compressor writes."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from compress.checkpoint_format import SPARSE_24
from compress.export import read_state_dict, save_checkpoint
from compress.loading import load

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE = FIXTURES / "llmcompressor-2of4"
EXPECTED = FIXTURES / "llmcompressor-2of4-expected.safetensors"


def bits(t: torch.Tensor) -> torch.Tensor:
    """Exact comparison (-0.0 vs 0.0 and NaN payloads included): the raw bits of a floating tensor."""
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]) if t.is_floating_point() else t


def assert_bit_exact(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)  # nothing missing, nothing extra
    for k, v in expected.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        assert torch.equal(bits(got[k]), bits(v)), k


def test_the_fixture_is_llm_compressors_own_sparse_24_checkpoint():
    provenance = json.loads((FIXTURE / "provenance.json").read_text())
    assert provenance["versions"]["llmcompressor"].startswith("0.10.")
    assert provenance["versions"]["compressed-tensors"].startswith("0.14.")
    assert provenance["versions"]["transformers"].startswith("4.57.")
    config = json.loads((FIXTURE / "config.json").read_text())
    assert config["quantization_config"]["sparsity_config"]["format"] == "sparse-24-bitmask"
    keys = set(load_file(FIXTURE / "model.safetensors"))
    assert "model.layers.0.mlp.up_proj.compressed" in keys and "model.layers.0.mlp.up_proj.weight" not in keys
    assert sum(k.endswith(".bitmask") for k in keys) == 14  # every decoder Linear of both layers


def test_our_loader_reads_the_llm_compressor_fixture_bit_exactly():
    """Every tensor equal, bit for bit and in its stored dtype, to what compressed-tensors 0.14 decompresses."""
    expected = load_file(EXPECTED)
    assert any((v == 0).float().mean() == 0.5 for v in expected.values())  # the expected weights are really 2:4
    loaded = load(FIXTURE, None)
    assert loaded.format == SPARSE_24
    assert_bit_exact(dict(loaded.model.state_dict()), expected)
    assert_bit_exact(read_state_dict(FIXTURE), expected)  # the raw reader too (untied: the same tensor names)


def test_our_export_writes_the_config_llm_compressor_writes(tmp_path):
    """Re-export llm-compressor's model with our export: the same quantization_config keys (no stray top-level
    `format`, which compressed-tensors 0.14 refuses), and every other key llm-compressor (transformers 4.57) writes
    with the same value (rope_theta, rope_scaling, architectures, dtype among them); the weights read back equal."""
    model = load(FIXTURE, None).model
    theirs = json.loads((FIXTURE / "config.json").read_text())
    modules = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"}
    out = save_checkpoint(model, None, tmp_path / "ours", compress_24_modules=modules, ignore=["lm_head"])
    ours = json.loads((out / "config.json").read_text())

    qc, their_qc = ours["quantization_config"], theirs["quantization_config"]
    assert sorted(qc) == sorted(their_qc) == ["quant_method", "sparsity_config", "transform_config", "version"]
    assert sorted(qc["sparsity_config"]) == sorted(their_qc["sparsity_config"])
    for key in ("format", "sparsity_structure", "targets", "ignore", "registry_requires_subclass"):
        assert qc["sparsity_config"][key] == their_qc["sparsity_config"][key], key
    assert qc["sparsity_config"]["global_sparsity"] == pytest.approx(their_qc["sparsity_config"]["global_sparsity"])
    assert qc["quant_method"] == their_qc["quant_method"] and qc["transform_config"] == their_qc["transform_config"]

    differ = {
        k: (theirs[k], ours.get(k, "<absent>"))
        for k in theirs
        if k not in ("quantization_config", "transformers_version") and ours.get(k, "<absent>") != theirs[k]
    }
    assert differ == {}
    assert "_name_or_path" not in ours
    assert_bit_exact(dict(load(out, None).model.state_dict()), load_file(EXPECTED))
