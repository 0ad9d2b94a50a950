"""sparse-24-bitmask export: bit-exact round trips, atomic writes, damaged files."""

import json

import numpy as np
import pytest
import torch

from compress.errors import UserError
from compress.export import compress_24, decompress_24, read_state_dict, save_checkpoint
from compress.loading import load_checkpoint
from compress.pipeline import prune_model
from prune.stage import PruneConfig


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


def test_quantization_config_has_exactly_llm_compressors_keys(pruned_tiny, tmp_path):
    """compressed-tensors 0.14 parses any top-level key besides these as a QuantizationConfig: the stray
    `"format": "dense"` we used to write made it refuse the folder (`config_groups Field required`)."""
    import compressed_tensors

    model, modules = pruned_tiny
    out = save_checkpoint(model, None, tmp_path / "ckpt", compress_24_modules=modules, ignore=["lm_head"])
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert sorted(qc) == ["quant_method", "sparsity_config", "transform_config", "version"]
    assert qc["transform_config"] == {} and qc["version"] == compressed_tensors.__version__
    rest = {k: v for k, v in qc.items() if k not in ("sparsity_config", "transform_config", "quant_method", "version")}
    assert rest == {}  # compressed-tensors 0.14's parse_quantization_config: nothing left -> no quantization


LLAMA3_ROPE = {
    "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}  # fmt: skip
GEMMA3_ROPE = {
    "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
}
# name -> (config class, model class, config kwargs, the transformers 4.x keys config.json must carry)
ARCHS = {
    "llama3": (
        "LlamaConfig", "LlamaForCausalLM", {"rope_parameters": LLAMA3_ROPE},
        {"rope_theta": 500000.0, "rope_scaling": {k: v for k, v in LLAMA3_ROPE.items() if k != "rope_theta"}},
    ),
    "qwen3": (
        "Qwen3Config", "Qwen3ForCausalLM", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}},
        {"rope_theta": 1e6, "rope_scaling": None},
    ),
    "mistral": ("MistralConfig", "MistralForCausalLM", {}, {"rope_theta": 10000.0, "rope_scaling": None}),
    "gemma3": (
        "Gemma3TextConfig", "Gemma3ForCausalLM", {"rope_parameters": GEMMA3_ROPE, "sliding_window": 8},
        {"rope_theta": 1e6, "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0}},
    ),
}  # fmt: skip


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_config_is_the_same_model_for_transformers_4_and_5(arch, tmp_path):
    """transformers 4.x ignores `rope_parameters` (it fell back to rope_theta 10000: logits off by 4.2 on SmolLM2):
    config.json also carries the 4.x keys, transformers 5 still reads the same rope_parameters back, and the folder
    names its architecture, its dtype and no machine-local path."""
    import transformers

    from compress.export import read_config
    from tests.conftest import TINY_DIMS

    config_cls, model_cls, kwargs, legacy = ARCHS[arch]
    layers = 6 if arch == "gemma3" else 2  # Gemma-3: 5 sliding layers, then a global one
    config = getattr(transformers, config_cls)(**TINY_DIMS, num_hidden_layers=layers, **kwargs)
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config).eval()  # config.dtype None: the export names float32
    modules = set()
    for name, m in model.model.layers.named_modules():
        if isinstance(m, torch.nn.Linear):
            W = m.weight.data
            W.view(-1, 4)[:, :2] = 0  # 2:4: the first two of every group of four
            modules.add(f"model.layers.{name}")
    out = save_checkpoint(model, None, tmp_path / arch, compress_24_modules=modules)
    written = json.loads((out / "config.json").read_text())
    assert {k: written.get(k, "<absent>") for k in legacy} == legacy
    assert written["architectures"] == [model_cls] and written["dtype"] == "float32"
    assert "_name_or_path" not in written
    assert written["rope_parameters"] == json.loads(json.dumps(model.config.rope_parameters))
    reread, qc = read_config(out)
    assert reread.rope_parameters == model.config.rope_parameters and qc is not None
    loaded, _ = load_checkpoint(out)
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e5}}, {"rope_theta": 1e5, "rope_scaling": None}),
        (  # Phi-3 / StableLM: partial rotary goes back to the top level
            {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.25}},
            {"rope_theta": 1e4, "rope_scaling": None, "partial_rotary_factor": 0.25},
        ),
        (  # yarn: everything but the base is 4.x's rope_scaling
            {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}},
            {"rope_theta": 1e6, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}},
        ),
        (  # a key the config already has is left as it is
            {"rope_theta": 7.0, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}},
            {"rope_scaling": None},
        ),
        (  # per layer type without a known 4.x name for the local base: the global one only
            {"layer_types": ["sliding_attention", "full_attention"], "model_type": "olmo3", "rope_parameters": {
                "sliding_attention": {"rope_type": "default", "rope_theta": 5e5},
                "full_attention": {"rope_type": "default", "rope_theta": 5e5},
            }},
            {"rope_theta": 5e5, "rope_scaling": None},
        ),
        ({"model_type": "gpt2"}, {}),  # no RoPE, nothing added
    ],
)  # fmt: skip
def test_legacy_rope_keys(config, expected):
    from compress.export import legacy_rope_keys

    assert legacy_rope_keys(config) == expected


def test_4x_keys_that_transformers_5_would_read_differently_are_left_out(monkeypatch):
    """transformers 5 gives `rope_scaling` priority over `rope_parameters`: 4.x keys that would change what it reads
    back are dropped rather than written (transformers 5, our loader, comes first)."""
    from compress import export
    from tests.conftest import tiny_llama

    model = tiny_llama()
    assert {"rope_theta", "rope_scaling"} <= set(export.hf_config_dict(model))
    monkeypatch.setattr(export, "legacy_rope_keys", lambda d: {"rope_scaling": {"rope_type": "linear", "factor": 2.0}})
    written = export.hf_config_dict(model)
    assert "rope_scaling" not in written and written["rope_parameters"] == model.config.rope_parameters
