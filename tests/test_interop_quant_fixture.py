"""A 2:4 + GPTQ W4A16 checkpoint written by llm-compressor itself (tests/fixtures/llmcompressor-2of4-w4a16, by
`bench/interop/make_llmc_fixture.py --variant 2of4-w4a16`: llm-compressor 0.10, compressed-tensors 0.14,
transformers 4.57; pack-quantized, symmetric int4 group 128, the 2:4 mask as sparsity_config metadata) is read by
our loader exactly as compressed-tensors 0.14 decompresses it, and the runtime packs its own codes and scales
into the int4 2:4 layout without re-rounding a single weight."""

import json

import pytest
import torch
from safetensors.torch import load_file

from compress.checkpoint_format import PACK_QUANTIZED
from compress.export import read_state_dict
from compress.loading import load
from tests.test_interop_fixture import FIXTURES, assert_bit_exact, bits

FIXTURE = FIXTURES / "llmcompressor-2of4-w4a16"
EXPECTED = FIXTURES / "llmcompressor-2of4-w4a16-expected.safetensors"
LINEARS = [
    f"model.layers.{i}.{p}"
    for i in range(2)
    for p in (
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    )
]
IDS = torch.tensor([[1, 5, 17, 42, 99, 127, 3, 64, 0, 88, 23, 23], [126, 2, 77, 31, 8, 60, 111, 4, 19, 50, 97, 13]])


@pytest.fixture(scope="module")
def loaded():
    return load(FIXTURE, None)


def test_the_fixture_is_llm_compressors_own_2of4_w4a16_checkpoint():
    provenance = json.loads((FIXTURE / "provenance.json").read_text())
    assert provenance["variant"] == "2of4-w4a16"
    assert provenance["versions"]["llmcompressor"].startswith("0.10.")
    assert provenance["versions"]["compressed-tensors"].startswith("0.14.")
    assert provenance["versions"]["transformers"].startswith("4.57.")
    assert "SparseGPTModifier" in provenance["recipe"] and "GPTQModifier" in provenance["recipe"]
    config = json.loads((FIXTURE / "config.json").read_text())
    assert config["hidden_size"] % 128 == 0 and config["intermediate_size"] % 128 == 0  # int4 groups fit every Linear
    qc = config["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
    assert qc["version"].startswith("0.14.") and qc["ignore"] == ["lm_head"]
    (group,) = qc["config_groups"].values()
    assert group["format"] == "pack-quantized" and group["targets"] == ["Linear"]
    assert group["input_activations"] is None and group["output_activations"] is None  # weight-only
    w = group["weights"]
    assert (w["type"], w["num_bits"], w["strategy"], w["group_size"], w["symmetric"]) == ("int", 4, "group", 128, True)
    sparsity = qc["sparsity_config"]
    assert sparsity["sparsity_structure"] == "2:4" and sparsity["format"] == "dense"  # the mask is metadata only
    stored = load_file(FIXTURE / "model.safetensors")
    assert sorted(k.removesuffix(".weight_packed") for k in stored if k.endswith(".weight_packed")) == sorted(LINEARS)
    assert not any(f"{m}.weight" in stored or f"{m}.weight_zero_point" in stored for m in LINEARS)  # symmetric
    assert all(stored[f"{m}.weight_scale"].dtype == torch.bfloat16 for m in LINEARS)
    assert "lm_head.weight" in stored and "lm_head.weight_packed" not in stored


def test_our_loader_reads_the_llm_compressor_w4a16_fixture_bit_exactly(loaded):
    """Every tensor equal, bit for bit and in its stored dtype, to what compressed-tensors 0.14 decompresses (our
    loader decodes with the main venv's compressed-tensors, 0.20)."""
    expected = load_file(EXPECTED)
    assert loaded.format == PACK_QUANTIZED
    assert_bit_exact(dict(loaded.model.state_dict()), expected)
    qc = json.loads((FIXTURE / "config.json").read_text())["quantization_config"]
    assert_bit_exact(read_state_dict(FIXTURE, qc), expected)  # the raw reader too


def test_every_decoder_linear_of_the_loaded_model_is_2of4(loaded):
    linears = {n: m for n, m in loaded.model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"}
    assert sorted(linears) == sorted(LINEARS)
    for name, m in linears.items():
        W = m.weight.detach()
        assert W.shape[1] % 128 == 0, name
        nonzeros = (W.reshape(W.shape[0], -1, 4) != 0).sum(-1)
        assert int(nonzeros.max()) <= 2, name  # at most 2 kept per group of 4 input columns
        assert float((W == 0).float().mean()) >= 0.5, name


def test_the_runtime_packs_the_checkpoints_own_int4_codes_exactly(loaded):
    """load_runtime_model(int4=True) turns all 14 decoder Linears into int4 Sparse24Linear from the checkpoint's
    codes and scales: each dequantised weight is the loaded weight bit for bit, and its logits are those of the
    bf16 2:4 runtime model exactly (the same CPU arithmetic on the same weights) and of the loaded dense model up
    to the summation order of the matmul (bit-equal on the machine the fixture was made on)."""
    from compress.runtime.convert import load_runtime_model
    from compress.runtime.linear import Sparse24Linear

    cpu = torch.device("cpu")
    runtime, _, names = load_runtime_model(FIXTURE, cpu, int4=True)
    assert sorted(names) == sorted(LINEARS)
    dense = dict(loaded.model.state_dict())
    for name in LINEARS:
        layer = runtime.get_submodule(name)
        assert isinstance(layer, Sparse24Linear) and layer.int4, name
        W = dense[f"{name}.weight"]
        got = layer.dense_weight()
        assert got.dtype == W.dtype == torch.bfloat16 and got.shape == W.shape, name
        assert torch.equal(bits(got), bits(W)), name
    assert not any(isinstance(m, Sparse24Linear) for n, m in runtime.named_modules() if n == "lm_head")

    bf16_runtime, _, bf16_names = load_runtime_model(FIXTURE, cpu)  # bf16 2:4 of the decoded weights
    assert sorted(bf16_names) == sorted(LINEARS) and not any(bf16_runtime.get_submodule(n).int4 for n in LINEARS)
    with torch.no_grad():
        ours = runtime(IDS).logits
        ref = loaded.model(IDS).logits
        same_arith = bf16_runtime(IDS).logits
    assert ours.dtype == ref.dtype == torch.bfloat16
    assert torch.equal(bits(ours), bits(same_arith))
    torch.testing.assert_close(ours.float(), ref.float(), rtol=0, atol=2**-6)  # a few bf16 ulps of |logit| < 1


def test_the_runtime_computes_the_checkpoints_int4_codes_in_fp32_too(loaded):
    """In fp32 (the CPU `generate` dtype) the codes are checked in the checkpoint's bf16, then computed exactly:
    every dequantised weight rounds to the loaded bf16 weight."""
    from compress.runtime.convert import load_runtime_model

    runtime, _, names = load_runtime_model(FIXTURE, torch.device("cpu"), dtype=torch.float32, int4=True)
    assert sorted(names) == sorted(LINEARS)
    dense = dict(loaded.model.state_dict())
    for name in LINEARS:
        got = runtime.get_submodule(name).dense_weight()
        assert got.dtype == torch.float32 and torch.equal(got.to(torch.bfloat16), dense[f"{name}.weight"]), name


def test_llm_compressors_folder_in_the_gpus_one_resident_form_computes_the_same(loaded):
    """llm-compressor's 2:4 W4A16 folder, loaded by load_runtime_model (bf16 2:4 and int4 2:4) and turned into the
    one form a GPU holds (to_resident, what prepare_gpu does after the library check): the logits are bit-equal to
    format24's, and the tensor-core kernel's loads (mma_layout.emulate) over that form give each layer's product."""
    from compress.runtime import cslt_layout, format24, mma_layout
    from compress.runtime.convert import load_runtime_model
    from compress.runtime.linear import Sparse24Linear

    for int4 in (False, True):
        runtime, _, names = load_runtime_model(FIXTURE, torch.device("cpu"), int4=int4)
        with torch.no_grad():
            before = runtime(IDS).logits
        for name in names:
            layer = runtime.get_submodule(name)
            assert isinstance(layer, Sparse24Linear) and layer.int4 == int4, name
            n, k = layer.out_features, layer.in_features
            W = format24.unpack_24(
                format24.dequantize_int4(layer.qweight, layer.scales.float()) if int4 else layer.values, layer.meta
            ).double()
            layer.to_resident()
            meta = layer.cslt if int4 else cslt_layout.meta_view(layer.cslt, n, k)
            w = layer.qweight if int4 else cslt_layout.values_view(layer.cslt, n, k)
            xk = torch.randn(3, k, generator=torch.Generator().manual_seed(k)).to(torch.bfloat16)
            y = mma_layout.emulate(xk, w, meta, layer.scales if int4 else None, n).double()
            torch.testing.assert_close(y, xk.double() @ W.t(), rtol=1e-5, atol=1e-4)
        with torch.no_grad():
            assert torch.equal(bits(runtime(IDS).logits), bits(before)), int4
