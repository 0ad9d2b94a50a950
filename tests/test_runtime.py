"""2:4 runtime: packed layouts round-trip exactly, the reference matmuls equal dense ones, a converted model
generates the same tokens as the dense-decompressed model, the compiled op adds no graphs (the resident form and
its kernels: tests/test_resident_form.py)."""

import copy

import pytest
import torch

from compress.export import keep_mask_24
from compress.runtime import format24
from compress.runtime.linear import Sparse24Linear
from compress.runtime.model import sparsify
from prune.config import NM
from prune.magnitude import magnitude_mask
from tests.conftest import tiny_llama


def _tiny_24_model():
    """A tiny Llama whose decoder Linears are magnitude-2:4 and converted to Sparse24Linear."""
    model = tiny_llama(hidden=128)
    for m in model.model.layers.modules():
        if isinstance(m, torch.nn.Linear):
            m.weight.data *= magnitude_mask(m.weight.data, NM(2, 4))
    sparsify(model)
    return model


def _sparse(rows=24, cols=256, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g)
    keep = magnitude_mask(W, NM(2, 4))
    return (W * keep).to(dtype), keep


def test_pack_unpack_is_exact_and_positions_are_2_bit():
    W, keep = _sparse()
    values, meta = format24.pack_24(W, keep)
    assert values.shape == (24, 128) and meta.shape == (24, 8) and meta.dtype == torch.int32
    assert torch.equal(format24.unpack_24(values, meta), W)
    pos = format24.unpack_meta(meta)
    assert int(pos.min()) >= 0 and int(pos.max()) <= 3
    assert bool((pos.reshape(24, -1, 2)[..., 0] < pos.reshape(24, -1, 2)[..., 1]).all())  # column order


def test_groups_with_extra_zeros_keep_two_positions():
    W, keep = _sparse()
    W[0, :8] = 0  # whole groups of zeros: still exactly 2 positions each
    keep = keep_mask_24(W)
    values, meta = format24.pack_24(W, keep)
    assert torch.equal(format24.unpack_24(values, meta), W)


def test_not_2_of_4_is_refused():
    keep = torch.ones(4, 32, dtype=torch.bool)
    with pytest.raises(ValueError, match="not 2:4"):
        format24.positions_24(keep)


def test_int4_round_to_nearest_within_half_a_step():
    W, keep = _sparse(cols=512)
    values, _ = format24.pack_24(W, keep)
    q, s = format24.quantize_int4(values)
    assert q.shape == (24, 512 // 16) and s.shape == (24, 512 // 128)
    err = (format24.dequantize_int4(q, s) - values).abs().reshape(24, -1, 64)
    assert bool((err <= s[..., None] / 2 + 1e-6).all())
    with pytest.raises(ValueError, match="not divisible by the int4 group"):
        format24.quantize_int4(values[:, :96])


def test_reference_matmul_equals_dense():
    W, keep = _sparse(dtype=torch.float64)
    values, meta = format24.pack_24(W, keep)
    x = torch.randn(5, 256, dtype=torch.float64)
    torch.testing.assert_close(format24.matmul_24_reference(x, values, meta), (x.float() @ W.float().t()).double())


def test_linear_matches_dense_linear_with_bias():
    lin = torch.nn.Linear(256, 24)
    W, keep = _sparse()
    lin.weight.data = W
    sp = Sparse24Linear.from_linear(lin, keep)
    x = torch.randn(2, 3, 256)
    torch.testing.assert_close(sp(x), lin(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(sp.dense_weight(), W)


@pytest.mark.parametrize("int4", [False, True])
def test_converted_model_generates_the_dense_decompressed_tokens(int4):
    model = tiny_llama(hidden=128)
    for m in model.model.layers.modules():
        if isinstance(m, torch.nn.Linear):
            m.weight.data *= magnitude_mask(m.weight.data, NM(2, 4))
    sparse = tiny_llama(hidden=128)
    sparse.load_state_dict(model.state_dict())
    names = sparsify(sparse, int4=int4)
    assert len(names) == 2 * 7
    if int4:  # the dense reference computes with the same dequantised weights
        for name in names:
            model.get_submodule(name).weight.data = sparse.get_submodule(name).dense_weight()
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(0))
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(sparse.generate(ids, **kw), model.generate(ids, **kw))


def test_mma_launch_for_an_untuned_m_comes_from_the_nearest_tuned_m_above(monkeypatch):
    from compress.runtime import cuda_mma

    monkeypatch.setattr(cuda_mma, "_launch", {(64, 256, False, 1): (4, 4), (64, 256, False, 16): (4, 4)})
    monkeypatch.setattr(cuda_mma, "_resolved", {})
    assert cuda_mma.tuned_launch(64, 256, False, 1) == (4, 4)  # tuned
    assert cuda_mma.tuned_launch(64, 256, False, 9) == (4, 4)  # from M = 16
    assert cuda_mma.tuned_launch(64, 256, False, 17) == cuda_mma.default_launch(17)  # none tuned above
    assert cuda_mma.tuned_launch(64, 256, True, 1) == cuda_mma.default_launch(1)  # other format
    for m in range(1, 65):  # every default is a shape the kernel takes
        assert cuda_mma.default_launch(m) in cuda_mma.launches(m)
    assert cuda_mma.tuned_launch(64, 256, False, 9) == (4, 4) and (64, 256, False, 9) in cuda_mma._resolved
    pick = cuda_mma.launches(16)[0]  # a new tuning (timed here by a stand-in): no answer is kept from before it
    monkeypatch.setattr(cuda_mma, "fastest", lambda cands, run: (pick, {c: 1.0 for c in cands}))
    cuda_mma.tune((64, 256, False, 16), lambda launch: None)
    assert pick != (4, 4) and cuda_mma.tuned_launch(64, 256, False, 9) == pick


def test_the_tiled_variants_launches_are_searched_past_8_tokens_only(monkeypatch):
    """The tiled variant (x staged in shared memory, split-K) is a candidate for M > 8; a tiled launch tuned at
    M = 32 serves M = 20 but not M = 4, which keeps the small-M kernel."""
    from compress.runtime import cuda_mma

    assert all(len(s) == 2 for s in cuda_mma.launches(8))  # (warps, rows) of the small-M kernel alone
    assert [s for s in cuda_mma.launches(9) if s[0] == cuda_mma.TILED] == list(cuda_mma.TILED_SHAPES)
    tiled = cuda_mma.TILED_SHAPES[-1]
    monkeypatch.setattr(cuda_mma, "_launch", {(64, 256, False, 32): tiled})
    monkeypatch.setattr(cuda_mma, "_resolved", {})
    assert cuda_mma.tuned_launch(64, 256, False, 20) == tiled
    assert cuda_mma.tuned_launch(64, 256, False, 4) == cuda_mma.default_launch(4)


def _exported(tmp_path):
    from compress.export import save_checkpoint

    model = tiny_llama(hidden=128)
    names = set()
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and ".layers." in f".{name}":
            m.weight.data *= magnitude_mask(m.weight.data, NM(2, 4))
            names.add(name)
    return model, save_checkpoint(model, None, tmp_path / "ckpt", compress_24_modules=names)


@pytest.mark.parametrize("int4", [False, True])
def test_packed_checkpoint_loads_without_dense_weights_and_computes_the_same(tmp_path, int4):
    import json

    from compress.runtime.convert import load_runtime_model, pack
    from compress.runtime.pack import QUANT_METHOD

    _, folder = _exported(tmp_path)
    cpu = torch.device("cpu")
    converted, _, names = load_runtime_model(folder, cpu, int4=int4)
    packed = pack(folder, tmp_path / "packed", int4=int4)
    qc = json.loads((packed / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == QUANT_METHOD and qc["int4"]["group_size"] == 128 and "meta" in qc["layout"]["bf16"]
    assert sorted(qc["int4_modules" if int4 else "bf16_modules"]) == sorted(names) and len(names) == 14
    loaded, _, loaded_names = load_runtime_model(packed, cpu)
    assert sorted(loaded_names) == sorted(names)
    for name in names:
        a, b = converted.get_submodule(name), loaded.get_submodule(name)
        assert isinstance(b, Sparse24Linear) and b.int4 == int4
        assert torch.equal(a.dense_weight(), b.dense_weight())
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, loaded(ids).logits)


def test_pack_refuses_bad_input(tmp_path):
    from compress.errors import UserError
    from compress.export import save_checkpoint
    from compress.runtime.convert import pack

    _, folder = _exported(tmp_path)
    with pytest.raises(UserError, match="already exists"):
        pack(folder, folder)
    dense = save_checkpoint(tiny_llama(), None, tmp_path / "dense")
    with pytest.raises(UserError, match="holds no 2:4-compressed weights"):
        pack(dense, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _stack(int4: bool = False, dense: bool = False, resident: bool = False) -> torch.nn.Sequential:
    """Three 256-wide layers: Sparse24Linear (fp32 CPU; `resident`: in the GPU's one form) or plain Linear."""
    layers = []
    for i in range(3):
        W, keep = _sparse(rows=256, cols=256, seed=i)
        lin = torch.nn.Linear(256, 256, bias=i == 1)
        lin.weight.data = W
        if dense:
            layers.append(lin)
            continue
        sp = Sparse24Linear.from_linear(lin.to(torch.bfloat16) if resident else lin, keep, int4=int4)
        if resident:  # bf16, as on a GPU
            sp.to_resident()
        layers.append(sp)
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("int4,resident", [(False, False), (True, False), (False, True), (True, True)])
def test_compiled_sparse24_recompiles_no_more_than_dense_linear_over_many_lengths(int4, resident):
    """Under torch.compile the path choice must not guard on M: over calls of many lengths (prefill, decode, each
    side of the kernel's M <= 64) a Sparse24Linear stack — in format24 or in the GPU's one resident form —
    compiles exactly as many graphs as the same stack of nn.Linear, and computes what it computes eagerly (the op
    runs the reference on the CPU; aot_eager also runs the fake kernel on symbolic shapes)."""
    lengths = (2048, 1, 3, 16, 7, 100, 2000, 64, 65, 9)
    x = torch.randn(1, 2048, 256, dtype=torch.bfloat16 if resident else torch.float32)

    def graphs(model: torch.nn.Module) -> int:
        torch._dynamo.reset()
        n = 0

        def backend(gm, example_inputs):
            nonlocal n
            n += 1
            from functorch.compile import make_boxed_func
            from torch._dynamo.backends.common import aot_autograd

            return aot_autograd(fw_compiler=lambda g, _: make_boxed_func(g.forward))(gm, example_inputs)

        f = torch.compile(model, backend=backend)
        with torch.no_grad():
            for m in lengths:
                torch.testing.assert_close(f(x[:, :m]), model(x[:, :m]), rtol=0, atol=0)
        return n

    sparse, dense = graphs(_stack(int4, resident=resident)), graphs(_stack(dense=True).to(x.dtype))
    assert dense >= 1 and sparse == dense, (sparse, dense)


def test_static_decoder_gives_transformers_greedy_tokens_and_stops_at_eos():
    """The runtime's own loop (static KV cache; CUDA graphs only on a GPU) = transformers' greedy `generate`,
    including early stopping once every row has produced eos (finished rows padded with eos)."""
    from compress.runtime.decoder import StaticDecoder, greedy

    model = _tiny_24_model()
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(0))
    ref = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)[:, 7:]
    assert torch.equal(greedy(model, ids, 12), ref)
    eos = int(ref[0, 3])  # row 0 stops at its 4th token; row 1 runs on until it meets eos (or the limit)
    kw = dict(max_new_tokens=12, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    assert torch.equal(greedy(model, ids, 12, eos_token_id=eos), model.generate(ids, **kw)[:, 7:])
    dec = StaticDecoder(model, max_len=19)  # warm-up steps (run before graph capture on a GPU) change nothing
    toks = [dec.start(ids)]
    dec.warm_up(2)
    toks += [dec.next() for _ in range(11)]
    assert torch.equal(torch.cat(toks, 1), ref)
    dec = StaticDecoder(model, max_len=8)
    dec.start(ids)
    dec.next()  # the token at position 7 still fits a cache of 8
    with pytest.raises(ValueError, match="max_len 8 reached"):
        dec.next()
    with pytest.raises(ValueError, match="does not fit"):
        StaticDecoder(model, max_len=7).start(ids)


def test_compiled_forward_decodes_the_same_tokens():
    """`compile_forward` (torch.compile of the whole forward, as in the compiled benchmark) + StaticDecoder gives
    the eager tokens (on CPU the 2:4 layers take the reference path; ~30 s of compilation)."""
    from compress.runtime.decoder import greedy

    model = _tiny_24_model()
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(0))
    ref = greedy(model, ids, 8)
    assert torch.equal(greedy(model, ids, 8, compile=True), ref)


def _quantized_24(tmp_path, quant, dtype=torch.bfloat16):
    """A tiny Llama (in-features 128/256), Wanda 2:4 then `quant`, exported: (model as evaluated, folder)."""
    from compress.pipeline import prune_model
    from prune.stage import PruneConfig
    from tests.test_quant_checkpoint import _export_and_load
    from tests.test_quant_stage import _ids, _quantize

    model = tiny_llama(hidden=128).to(dtype)
    records = prune_model(model, _ids(), PruneConfig("wanda", "2:4"), torch.device("cpu"), progress=False).records
    _quantize(model, quant, records)
    folder, _ = _export_and_load(tmp_path, model, records, dtype)
    return model, folder


def test_int4_from_a_gptq_checkpoint_computes_with_its_codes_exactly(tmp_path):
    """GPTQ w4g128 symmetric codes fill the runtime's int4 2:4 layout one-to-one: each layer's dequantised weight
    is the GPTQ weight bit for bit (not re-rounded), and a packed folder says where its codes came from."""
    import json

    from compress.runtime.convert import load_runtime_model, pack
    from quant.stage import QuantConfig

    model, folder = _quantized_24(tmp_path, QuantConfig("gptq", 4, group_size=128))
    runtime, _, names = load_runtime_model(folder, torch.device("cpu"), int4=True)
    assert len(names) == 14
    differs_from_rtn = 0
    for name in names:
        layer = runtime.get_submodule(name)
        W = model.get_submodule(name).weight.detach()
        assert layer.int4 and torch.equal(layer.dense_weight(), W), name
        values, _ = format24.pack_24(W, keep_mask_24(W))
        differs_from_rtn += not torch.equal(format24.quantize_int4(values)[0], layer.qweight)
    assert differs_from_rtn  # RTN of the decoded values would re-round some codes: it is not what is used
    packed = pack(folder, tmp_path / "packed", int4=True)
    qc = json.loads((packed / "config.json").read_text())["quantization_config"]
    assert qc["int4"]["rounding"] == "the checkpoint's codes" and len(qc["int4_modules"]) == 14
    again, _, _ = load_runtime_model(packed, torch.device("cpu"))
    assert all(
        torch.equal(again.get_submodule(n).dense_weight(), runtime.get_submodule(n).dense_weight()) for n in names
    )


def test_int4_from_a_checkpoint_on_another_grid_is_refused(tmp_path):
    from compress.errors import UserError
    from compress.runtime.convert import load_runtime_model
    from quant.stage import QuantConfig

    _, folder = _quantized_24(tmp_path / "g64", QuantConfig("rtn", 4, group_size=64))
    with pytest.raises(UserError, match="4-bit group 64 codes; the runtime's int4 layout holds symmetric 4-bit codes"):
        load_runtime_model(folder, torch.device("cpu"), int4=True)
    bf16, _, names = load_runtime_model(folder, torch.device("cpu"))  # bf16 2:4 of the decoded weights
    assert names and not any(bf16.get_submodule(n).int4 for n in names)
    _, ours = _quantized_24(tmp_path / "w3", QuantConfig("gptq", 3, group_size=128))
    with pytest.raises(UserError, match="runtime's int4 layout cannot hold"):
        load_runtime_model(ours, torch.device("cpu"), int4=True)


def test_pack_int4_refuses_values_off_the_grid():
    W, keep = _sparse(8, 256, dtype=torch.bfloat16)
    values, _ = format24.pack_24(W, keep)
    q, s = format24.quantize_int4(values)
    on_grid = format24.dequantize_int4(q, s)
    assert torch.equal(format24.pack_int4(on_grid, s), q)
    with pytest.raises(ValueError, match="not code \\* scale|outside"):
        format24.pack_int4(values, s)  # the raw values are not on the grid


def test_int4_from_a_bf16_gptq_checkpoint_in_fp32_computes_the_exact_grid_values(tmp_path):
    """The CPU's fp32: codes are checked in the checkpoint's bf16 (as it was decoded), then computed exactly."""
    from compress.loading import load
    from compress.runtime.convert import load_runtime_model
    from quant.stage import QuantConfig

    _, folder = _quantized_24(tmp_path, QuantConfig("gptq", 4, group_size=128))
    loaded = load(folder, torch.float32).model
    runtime, _, names = load_runtime_model(folder, torch.device("cpu"), dtype=torch.float32, int4=True)
    assert len(names) == 14
    for name in names:
        layer, W = runtime.get_submodule(name), loaded.get_submodule(name).weight.detach()
        assert layer.int4 and layer.scales.dtype == torch.float32
        V = layer.dense_weight()
        assert torch.equal(V.to(torch.bfloat16), W.to(torch.bfloat16)), name  # the checkpoint's decode, rounded
        assert float((V - W).abs().max()) <= float(W.abs().max()) * 2**-8, name


@pytest.mark.parametrize("resident", [False, True])
@pytest.mark.parametrize("arch", ["qwen3", "mistral", "gemma3"])
def test_compiled_sparse24_model_of_other_architectures_matches_eager_without_extra_graphs(arch, resident):
    """The compiled op on whole models of other families (tiny random configs, every decoder Linear 2:4, in
    format24 or — bf16 — in the GPU's one resident form): logits equal the eager model's at three prompt lengths,
    and dynamo compiles as many graphs as for the same model with its dense Linears."""
    import transformers

    from compress.runtime.model import sparsify
    from tests.conftest import TINY_DIMS
    from tests.test_export import ARCHS

    config_cls, model_cls, kwargs, _ = ARCHS[arch]
    config = getattr(transformers, config_cls)(**TINY_DIMS, num_hidden_layers=2, **kwargs)
    torch.manual_seed(0)
    dense = getattr(transformers, model_cls)(config).eval()
    if resident:
        dense = dense.to(torch.bfloat16)
    for m in dense.model.layers.modules():
        if isinstance(m, torch.nn.Linear):
            m.weight.data *= magnitude_mask(m.weight.data, NM(2, 4))
    ours = copy.deepcopy(dense)
    assert sparsify(ours)
    if resident:
        for m in ours.modules():
            if isinstance(m, Sparse24Linear):
                m.to_resident()
        assert not any(b is not None and n.endswith(".meta") for n, b in ours.named_buffers())
    ids = torch.randint(0, config.vocab_size, (1, 40), generator=torch.Generator().manual_seed(1))

    def graphs(model) -> int:
        torch._dynamo.reset()
        n = 0

        def backend(gm, example_inputs):
            nonlocal n
            n += 1
            return gm.forward

        f = torch.compile(model, backend=backend)
        with torch.no_grad():
            for t in (40, 7, 23):
                want = model(ids[:, :t], use_cache=False).logits
                torch.testing.assert_close(f(ids[:, :t], use_cache=False).logits, want, rtol=0, atol=0)
        return n

    assert graphs(ours) == graphs(dense)
