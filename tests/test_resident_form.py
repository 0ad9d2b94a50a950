"""The one resident weight form of a prepared Sparse24Linear (issue 16): cuSPARSELt's compressed layout written
and read in pure torch, the tensor-core kernel's index arithmetic emulated against a dense matmul, the bytes a
prepared layer keeps, and (on a GPU) the library, the kernel and the hardware against the same references."""

import pytest
import torch

from compress.runtime import cslt_layout, format24, linear, mma_layout
from compress.runtime.linear import Sparse24Linear
from prune.config import NM
from prune.magnitude import magnitude_mask

SHAPES = [(16, 128), (48, 384), (64, 256), (1008, 640)]  # 1008 rows: a metadata tile only partly filled


def _sparse(rows, cols, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g)
    keep = magnitude_mask(W, NM(2, 4))
    return (W * keep).to(torch.bfloat16), keep


def _layer(n, k, int4=False, bias=False, seed=0):
    W, keep = _sparse(n, k, seed)
    lin = torch.nn.Linear(k, n, bias=bias)
    lin.weight.data = W.float()
    return Sparse24Linear.from_linear(lin.to(torch.bfloat16), keep, int4=int4)


@pytest.mark.parametrize("n,k", SHAPES + [(40, 96), (130, 32)])
def test_compressed_form_round_trips_format24_exactly(n, k):
    W, keep = _sparse(n, k, seed=n)
    values, meta = format24.pack_24(W, keep)
    buf = cslt_layout.to_cslt(values, meta)
    assert buf.dtype == torch.uint8 and buf.numel() == cslt_layout.compressed_bytes(n, k)
    assert cslt_layout.compressed_bytes(n, k) == n * k + -(-n // 64) * 64 * k // 8  # 1.125 bytes/weight at n % 64 == 0
    v2, m2 = cslt_layout.from_cslt(buf, n, k)
    assert torch.equal(v2, values) and torch.equal(m2, meta)
    assert torch.equal(cslt_layout.values_view(buf, n, k), values)  # the head is format24's values, row-major
    n_pad = -(-n // 64) * 64  # the rows past N hold positions (2, 3) in every group, as the library writes them
    padded = cslt_layout.from_meta(cslt_layout.meta_view(buf, n, k), n_pad, k)[n:]
    assert set(padded.reshape(-1).tolist()) <= {format24._to_int32(torch.tensor([0xEEEEEEEE])).item()}


def test_metadata_nibble_order_is_the_one_read_off_the_library():
    """Spot values of the layout (cslt_layout docstring): rows r and r + 8 of a 64 x 32 tile share 8 bytes, row r
    in the even nibbles, groups in the order (0, 4, 1, 5 | 2, 6, 3, 7) from the low byte up."""
    n, k = 64, 64
    fields = torch.full((n, k // 4), 0x4, dtype=torch.int64)  # positions (0, 1) everywhere ...
    fields[3, 5] = 0xD  # ... but row 3 group 5 (tile 0): positions (1, 3)
    fields[11, 8 + 2] = 0x9  # row 11 group 10 (tile 1, group 2 of its block): positions (1, 2)
    meta = format24._to_int32((fields.reshape(n, k // 32, 8) << (4 * torch.arange(8))).sum(-1))
    sec = cslt_layout.to_meta(meta)
    nib = torch.stack([sec & 15, sec >> 4], -1).reshape(-1)
    # row 3 -> r3 = 0, r & 7 = 3: nibble 16*3 + (j=5: j2=1, j0=1 -> 2 + 4) = 54
    assert nib[54] == 0xD and (nib[:256] == 0xD).sum() == 1
    # row 11 -> r3 = 1, r & 7 = 3, tile 1 (block 1) starts at nibble 512; j = 2: j1 = 1 -> 8
    assert nib[512 + 48 + 1 + 8] == 0x9 and (nib[512:] == 0x9).sum() == 1


@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("int4", [False, True])
def test_kernel_index_arithmetic_emulated_equals_the_dense_matmul(n, k, int4):
    """mma_layout.emulate performs the kernel's loads (values / nibbles + scales, the metadata word permute, x in
    the permuted slot order) and the mma.sp semantics: its product equals x @ W^T of the layer's dense weight."""
    layer = _layer(n, k, int4=int4, seed=k)
    W = (
        layer.dense_weight().double()
        if not int4
        else format24.unpack_24(format24.dequantize_int4(layer.qweight, layer.scales.float()), layer.meta).double()
    )  # int4: the kernel applies the scale in fp32 to q exactly
    w = layer.qweight if int4 else layer.values
    meta = cslt_layout.to_meta(layer.meta)
    for m in (1, 5, 8):
        x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(torch.bfloat16)
        y = mma_layout.emulate(x, w, meta, layer.scales if int4 else None, n).double()
        torch.testing.assert_close(y, x.double() @ W.t(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("int4", [False, True])
def test_resident_layer_keeps_one_form_and_still_saves_and_computes_format24(int4):
    """to_resident (what prepare_gpu does after the library check): bf16 keeps only the compressed form (1.125
    bytes per weight), int4 its nibbles, scales and that form's metadata (0.39); the state dict still holds
    format24 bit for bit, and the CPU path computes the same output."""
    n, k = 128, 256
    layer = _layer(n, k, int4=int4, bias=True)
    before = {name: t.clone() for name, t in layer.state_dict().items()}
    x = torch.randn(3, k).to(torch.bfloat16)
    y = layer(x)
    layer.to_resident()
    assert layer.prepared and layer.meta is None and layer.values is None and (layer.qweight is not None) == int4
    held = sum(b.numel() * b.element_size() for name, b in layer.named_buffers() if name != "bias")
    assert held == (n * k * 0.25 + n * k // 128 * 2 + n * k / 8 if int4 else n * k * 1.125)
    after = layer.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[name], before[name]) for name in before)
    torch.testing.assert_close(layer(x), y, rtol=0, atol=0)
    fresh = _layer(n, k, int4=int4, bias=True)  # a packed checkpoint loads into an unprepared layer ...
    fresh.load_state_dict(after)
    torch.testing.assert_close(fresh(x), y, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="load a state dict into an unprepared layer"):
        layer.load_state_dict(after)  # ... never silently into a converted one


def test_an_fp16_layer_keeps_its_dtype_in_the_resident_form(monkeypatch):
    """The compressed form's bytes do not say bf16 or fp16: a resident fp16 layer still computes, saves and traces
    as fp16 (the kernel, bf16 only, is not used for it: cuSPARSELt reads fp16)."""
    layer = _layer(64, 256)
    layer.values.data = layer.values.data.half()
    x = torch.randn(2, 256).half()
    y = layer(x)
    layer.to_resident()
    assert layer.value_dtype == torch.float16 and layer.format24()[0].dtype == torch.float16
    from compress.runtime import cuda_mma

    monkeypatch.setattr(cuda_mma, "unavailable", lambda: None)  # as on a GPU with the kernel built
    assert not linear._mma_usable(64, 256, layer.value_dtype) and linear._mma_usable(64, 256, torch.bfloat16)
    torch.testing.assert_close(layer(x), y, rtol=0, atol=0)
    torch.testing.assert_close(torch.compile(layer, backend="eager")(x), y, rtol=0, atol=0)


def test_path_follows_m_and_the_measured_table(monkeypatch):
    monkeypatch.setattr(linear, "_measured", {})
    top = linear.DEFAULT_MMA_MAX_M  # unmeasured: the kernel up to it, then cuSPARSELt
    paths = [linear.path_of(64, 256, False, m, True) for m in (1, top, top + 1, 2048)]
    assert paths == ["mma"] * 2 + ["cusparselt"] * 2
    assert linear.path_of(64, 256, False, 1, False) == "cusparselt"  # no kernel for this layer
    monkeypatch.setitem(linear._measured, (64, 256, False), ("mma",) * 32 + ("cusparselt",) * 32)
    assert [linear.path_of(64, 256, False, m, True) for m in (32, 33, 64)] == ["mma", "cusparselt", "cusparselt"]
    assert linear.path_of(64, 256, True, 33, True) == "cusparselt"  # another format: its own (absent) table


def test_custom_op_fake_kernel_gives_the_output_shape():
    """llm_compress::sparse24_mm (what a Sparse24Linear calls under torch.compile) has a fake kernel giving the
    (M, N) output the compiler plans with, without running any kernel."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(5, 256, dtype=torch.bfloat16)
        y = torch.ops.llm_compress.sparse24_mm(
            x, None, None, None, torch.empty(cslt_layout.compressed_bytes(24, 256), dtype=torch.uint8), 24, False,
            torch.bfloat16,
        )  # fmt: skip
    assert tuple(y.shape) == (5, 24) and y.dtype == torch.bfloat16


def test_kernel_operand_check_names_the_problem():
    from compress.runtime import cuda_mma

    layer = _layer(48, 256)
    layer.to_resident()
    w, e = cslt_layout.values_view(layer.cslt, 48, 256), cslt_layout.meta_view(layer.cslt, 48, 256)
    cuda_mma.check(w, e, None, 48, 256, False)  # fits
    with pytest.raises(ValueError, match="metadata must be contiguous"):
        cuda_mma.check(w, e[:-8], None, 48, 256, False)
    with pytest.raises(ValueError, match="scales must be"):
        cuda_mma.check(format24.quantize_int4(w)[0], e, None, 48, 256, True)
    with pytest.raises(ValueError, match="out-features % 16 == 0"):
        mma_layout.check_shape(40, 256)
    assert _layer(24, 256)(torch.randn(0, 256).to(torch.bfloat16)).shape == (0, 24)


# --- on a GPU ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,k", [(64, 128), (1008, 640), (4096, 4096), (11008, 4096), (4096, 11008)])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_library_writes_the_layout_we_write(n, k):
    from compress.runtime.cusparselt import backend

    W, keep = cslt_layout.probe_weight(n, k, torch.bfloat16, "cuda")
    values, meta = format24.pack_24(W, keep)
    assert torch.equal(backend().compress(W), cslt_layout.to_cslt(values, meta))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (and nvcc)")
def test_mma_sp_probe():
    """One `mma.sp.m16n8k32` on registers filled per the layout mma_layout documents computes A @ B."""
    from compress.runtime import cuda_mma

    W, keep = _sparse(16, 128, seed=3)
    values, meta = format24.pack_24(W, keep)
    lane = torch.arange(32)
    g, t, r = lane[:, None] // 4, lane[:, None] % 4, torch.arange(4)[None, :]
    rows, kept = (g + 8 * (r % 2)).expand(32, 4), 2 * t + 8 * (r // 2)  # A reg r: row, first kept value of the pair
    a = torch.stack([values[rows, kept], values[rows, kept + 1]], -1).contiguous().view(torch.int32)[..., 0]
    m0 = meta[:, 0].to(torch.int64) & 0xFFFFFFFF  # k-tile 0: kept values 0..15 of each row
    tt = (t[:, 0] % 2) * 16
    e = format24._to_int32(((m0[g[:, 0]] >> tt) & 0xFFFF) | (((m0[g[:, 0] + 8] >> tt) & 0xFFFF) << 16))
    B = torch.randn(32, 8, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)  # (k, token)
    kk = 2 * t + 8 * r
    b = torch.stack([B[kk, g.expand(32, 4)], B[kk + 1, g.expand(32, 4)]], -1).contiguous().view(torch.int32)[..., 0]
    d = cuda_mma.probe(a.cuda(), b.cuda(), e.cuda()).cpu()
    D = format24.unpack_24(values, meta)[:, :32].double() @ B.double()  # (16 rows, 8 tokens)
    torch.testing.assert_close(d.double(), D[g + 8 * (r // 2), 2 * t + r % 2], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n,k", [(48, 128), (1008, 640), (4096, 4096)])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (and nvcc)")
def test_every_path_of_a_prepared_layer_matches_the_reference(n, k):
    """The tensor-core kernel for M = 1..64 at every launch shape, and cuSPARSELt (bf16; int4 through the values
    kernel and the scratch form) at decode and prefill M, on the one resident form, against the dense matmul."""
    from compress.runtime import cuda_mma
    from compress.runtime.model import prepare

    for int4 in (False, True):
        layer = torch.nn.Sequential(_layer(n, k, int4=int4, seed=n)).cuda()
        W = layer[0].dense_weight().double().cpu()
        W32 = (
            W
            if not int4
            else format24.unpack_24(
                format24.dequantize_int4(layer[0].qweight.cpu(), layer[0].scales.float().cpu()), layer[0].meta.cpu()
            ).double()
        )
        prepare(layer)
        sp = layer[0]
        assert sp.prepared and sp.mma and sp.meta is None
        for m in (1, 5, 8, 9, 16, 33, 64, 100, 256):
            x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(torch.bfloat16)
            ref = x.double() @ W32.t()
            paths = ["cusparselt"] + (["mma"] if m <= 64 else [])
            for p in paths:
                for launch in cuda_mma.launches(m) if p == "mma" else [None]:
                    y = sp.run_path(x.cuda(), p, launch).double().cpu()
                    assert (y - ref).norm() / ref.norm() < 5e-3, (int4, m, p, launch)
            torch.testing.assert_close(sp(x.cuda()).double().cpu(), sp.run_path(x.cuda(), sp.path(m)).double().cpu())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("int4", [False, True])
@pytest.mark.parametrize("path", ["mma", "cusparselt"])
def test_compiled_layer_computes_what_the_eager_layer_computes(int4, path, monkeypatch):
    """torch.compile(fullgraph=True) traces a CUDA Sparse24Linear into one custom-op call (no graph break) and
    gives the eager output, for a decode (M = 1) and a prefill (M = 256) shape."""
    from compress.runtime.model import prepare

    sp = torch.nn.Sequential(_layer(384, 512, int4=int4, bias=True)).cuda()
    prepare(sp)
    monkeypatch.setitem(linear._measured, (384, 512, int4), (path,) * linear.DECODE_MAX_M)
    assert sp[0].path(1) == path
    compiled = torch.compile(sp, fullgraph=True, dynamic=False)
    for m in (1, 256):
        x = torch.randn(m, 512, device="cuda", dtype=torch.bfloat16)
        with torch.inference_mode():
            torch.testing.assert_close(compiled(x), sp(x), rtol=8e-3, atol=1e-3)  # at most bf16 rounding


def test_a_device_buffer_is_kept_while_big_enough_and_replaced_when_too_small():
    from compress.runtime.device_buffer import grown

    store: dict = {}
    cpu = torch.device("cpu")
    a = grown(store, cpu, 16, torch.uint8)
    assert a.numel() == 16 and grown(store, cpu, 8, torch.uint8) is a
    b = grown(store, cpu, 32, torch.uint8)
    assert b is not a and b.numel() == 32 and store[cpu.index] is b
