"""2:4 runtime: packed layouts round-trip exactly, the reference matmuls equal dense ones, a converted model
generates the same tokens as the dense-decompressed model; the Triton kernels match on a GPU (or in Triton's
CPU interpreter when TRITON_INTERPRET=1)."""

import copy
import os

import pytest
import torch

from compress.export import keep_mask_24
from compress.runtime import format24, mma_layout
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


def test_path_choice_follows_the_measured_table():
    lin = torch.nn.Linear(256, 24)
    W, keep = _sparse()
    lin.weight.data = W
    sp = Sparse24Linear.from_linear(lin, keep)
    assert sp.path(1) == "triton"  # no cuSPARSELt form yet
    sp.cslt = torch.zeros(1, dtype=torch.uint8)
    assert sp.path(1) == "cusparselt" and sp.path(4096) == "cusparselt"  # bf16 default, prefill
    sp.paths = {1: "triton", 16: "cusparselt"}
    assert [sp.path(m) for m in (1, 2, 16, 17, 65)] == [
        "triton",
        "cusparselt",
        "cusparselt",
        "cusparselt",
        "cusparselt",
    ]
    sp.paths = {16: "triton"}
    assert sp.path(8) == "triton" and sp.path(32) == "cusparselt"
    sp.paths, sp.cuda_gemv = {}, True  # the CUDA GEMV built: it takes M <= 8 until a search says otherwise
    assert [sp.path(m) for m in (1, 8, 9, 65)] == ["cuda", "cuda", "cusparselt", "cusparselt"]
    sp.mma_e = torch.zeros(1)  # the tensor-core kernel's copy made: it takes 9 <= M <= 64 by default
    assert [sp.path(m) for m in (1, 8, 9, 64, 65)] == ["cuda", "cuda", "mma", "mma", "cusparselt"]
    sp.paths = {1: "mma", 16: "cuda"}  # a measured choice the layer cannot run at that M is not taken
    assert [sp.path(m) for m in (1, 9, 16)] == ["mma", "mma", "mma"]


@pytest.mark.parametrize("n,k", [(16, 128), (37, 256), (1003, 640)])
def test_mma_fragments_read_back_as_the_packed_weight(n, k):
    """The tensor-core kernel's fragment-ordered copies (rows padded to 16) hold exactly the packed weight:
    bf16 bit for bit, int4 as its fp32 dequantisation (q - 8) * scale; padding rows are zero."""
    W, keep = _sparse(rows=n, cols=k, seed=k)
    values, meta = format24.pack_24(W.to(torch.bfloat16), keep)
    a, e = mma_layout.a_fragments(values), mma_layout.e_fragments(meta)
    nt = -(-n // 16)
    assert a.shape == (nt, k // 128, 4, 32, 4) and e.shape == (nt, k // 128, 16, 4)
    assert torch.equal(mma_layout.dense_from_fragments(a, e, n), W.to(torch.bfloat16))
    assert not mma_layout.dense_from_fragments(a, e, nt * 16)[n:].any()
    q, s = format24.quantize_int4(values)
    nib = ((q.to(torch.int64)[..., None] >> (4 * torch.arange(8))) & 15) - 8
    kept = (nib.reshape(n, -1, 64).float() * s.float()[..., None]).reshape(n, -1)
    got = mma_layout.dense_from_fragments(mma_layout.q_fragments(q), e, n, mma_layout.s_fragments(s))
    assert torch.equal(got, format24.unpack_24(kept, meta))


def test_mma_kernel_refuses_operands_it_cannot_read():
    from compress.runtime import cuda_mma

    W, keep = _sparse(rows=24, cols=256)
    values, meta = format24.pack_24(W.to(torch.bfloat16), keep)
    a, e, _ = cuda_mma.fragments(meta, values, None, None)
    x = torch.randn(1, 256).to(torch.bfloat16)
    cuda_mma.check(x, a, e, None, 24, False)  # fits
    with pytest.raises(ValueError, match="M = 65 tokens"):
        cuda_mma.check(x.expand(65, 256).contiguous(), a, e, None, 24, False)
    with pytest.raises(ValueError, match="afrag must be contiguous"):
        cuda_mma.check(x, a, e, None, 40, False)  # fragments of another row count
    with pytest.raises(ValueError, match="sfrag must be"):
        cuda_mma.check(x, mma_layout.q_fragments(format24.quantize_int4(values)[0]), e, None, 24, True)
    with pytest.raises(ValueError, match="not divisible by 128"):
        mma_layout.a_fragments(values[:, :96])
    with pytest.raises(ValueError, match="reads bf16 kept values, got torch.float16"):
        mma_layout.a_fragments(values.half())


def _prepared_on_cpu(int4: bool, paths: dict, cuda_gemv: bool = True) -> Sparse24Linear:
    """A layer as prepare_gpu + choose_paths leave it, built on the CPU (fake cuSPARSELt form)."""
    from compress.runtime import cuda_mma

    lin = torch.nn.Linear(256, 40, bias=False)
    W, keep = _sparse(rows=40, cols=256, seed=5)
    lin.weight.data = W.to(torch.bfloat16)
    sp = Sparse24Linear.from_linear(lin, keep, int4=int4)
    sp.cslt, sp.cuda_gemv = torch.zeros(8, dtype=torch.uint8), cuda_gemv
    sp.mma_a, sp.mma_e, sp.mma_s = cuda_mma.fragments(sp.meta, sp.values, sp.qweight, sp.scales)
    sp.paths = paths
    return sp


def test_release_unused_frees_only_forms_no_call_can_reach():
    from compress.runtime.model import release_unused

    sp = _prepared_on_cpu(int4=True, paths={1: "mma", 16: "mma"})  # int4: the tensor-core kernel everywhere
    W = sp.dense_weight()
    packed = sum(t.numel() * t.element_size() for t in (sp.qweight, sp.scales, sp.meta))
    assert release_unused(torch.nn.Sequential(sp)) == packed
    assert sp.packed is None and sp.meta is None and sp.int4 and sp.value_dtype == torch.bfloat16
    assert torch.equal(sp.dense_weight(), W)  # recovered from the fragment copy, bit for bit
    assert {sp.path(m) for m in range(1, 65)} == {"mma"} and sp.path(65) == "cusparselt"
    assert sp.path(1, torch.float16) == "cusparselt"  # outside the kernel's dtype: cuSPARSELt, not a freed form
    sp = _prepared_on_cpu(int4=False, paths={1: "cuda", 16: "mma"})  # bf16: GEMV and tensor cores both in use
    assert sp.release_unused() == 0 and sp.packed is not None and sp.mma_e is not None
    sp = _prepared_on_cpu(int4=False, paths={64: "cusparselt"}, cuda_gemv=False)  # cuSPARSELt at every M
    W = sp.dense_weight()
    frag = sum(t.numel() * t.element_size() for t in (sp.mma_a, sp.mma_e))
    assert sp.release_unused() == frag and sp.mma_e is None and torch.equal(sp.dense_weight(), W)
    assert _prepared_on_cpu(int4=True, paths={}).release_unused() == 0  # before a search: keep everything


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


def _triton_available():
    """A GPU, or Triton's CPU interpreter (the `interp` extra; conftest sets TRITON_INTERPRET=1 without a GPU)."""
    if torch.cuda.is_available():
        return True
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return os.environ.get("TRITON_INTERPRET") == "1"


@pytest.mark.skipif(not _triton_available(), reason="needs a GPU or triton (interpreter)")
@pytest.mark.parametrize("m,k", [(1, 256), (1, 576), (5, 576), (20, 512)])
def test_triton_kernels_match_the_reference(m, k):
    from compress.runtime import triton_decode

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float16
    W, keep = _sparse(rows=40, cols=k, seed=k)
    values, meta = format24.pack_24(W.to(dtype), keep)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(dtype)
    ref = format24.matmul_24_reference(x.double(), values.double(), meta)
    y = triton_decode.sparse24_matmul(x.to(device), values.to(device), meta.to(device)).double().cpu()
    assert ((y - ref).norm() / ref.norm()) < 1e-2
    if k % 128 == 0:
        q, s = format24.quantize_int4(values)
        ref = format24.matmul_24_int4_reference(x.double(), q, s.double(), meta)
        y = triton_decode.sparse24_int4_matmul(x.to(device), q.to(device), s.to(device), meta.to(device))
        assert ((y.double().cpu() - ref).norm() / ref.norm()) < 1e-2


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (and nvcc)")
@pytest.mark.parametrize("n,k", [(37, 128), (1003, 640), (256, 4096), (9000, 4224)])
def test_cuda_gemv_matches_the_reference_for_every_launch(n, k):
    """Row counts that are not a multiple of rows-per-block, every launch shape, M = 1..8, bf16 and int4;
    (9000, 4224): more row tiles than resident blocks (the persistent grid loops) and K steps that end part-way
    through a second unrolled iteration (bf16 264 steps, int4 66)."""
    from compress.runtime import cuda_decode

    W, keep = _sparse(rows=n, cols=k, seed=n)
    values, meta = format24.pack_24(W.to(torch.bfloat16), keep)
    q, s = format24.quantize_int4(values)
    for m in (1, 3, 8):
        x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(torch.bfloat16)
        ref = format24.matmul_24_reference(x.double(), values.double(), meta)
        ref4 = format24.matmul_24_int4_reference(x.double(), q, s.double(), meta)
        for launch in cuda_decode.LAUNCHES:
            y = cuda_decode.gemv(x.cuda(), values.cuda(), None, meta.cuda(), False, launch).double().cpu()
            assert (y - ref).norm() / ref.norm() < 5e-3, (m, launch)
            y4 = cuda_decode.gemv(x.cuda(), q.cuda(), s.cuda(), meta.cuda(), True, launch).double().cpu()
            assert (y4 - ref4).norm() / ref4.norm() < 5e-3, (m, launch, "int4")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (and nvcc)")
def test_mma_sp_probe():
    """One `mma.sp.m16n8k32` on registers filled by mma_layout's fragment functions computes A @ B: the register
    layout (A, B, D and the metadata) that the layout module documents is the hardware's."""
    from compress.runtime import cuda_mma

    W, keep = _sparse(rows=16, cols=128, seed=3)
    values, meta = format24.pack_24(W.to(torch.bfloat16), keep)
    lane = torch.arange(32)
    g, t, r = lane[:, None] // 4, lane[:, None] % 4, torch.arange(4)[None, :]
    a = mma_layout.a_fragments(values)[0, 0, 0]  # k-tile 0: (32 lanes, 4 regs)
    e = mma_layout.e_fragments(meta)[0, 0, :, 0][2 * g[:, 0] + t[:, 0] % 2]  # lanes t = 2, 3: unused copies
    B = torch.randn(32, 8, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)  # (k, token)
    kk = 2 * t + 8 * r
    b = torch.stack([B[kk, g.expand(32, 4)], B[kk + 1, g.expand(32, 4)]], -1).contiguous().view(torch.int32)[..., 0]
    d = cuda_mma.probe(a.cuda(), b.cuda(), e.cuda()).cpu()
    D = format24.unpack_24(values, meta)[:, :32].double() @ B.double()  # (16 rows, 8 tokens)
    torch.testing.assert_close(d.double(), D[g + 8 * (r // 2), 2 * t + r % 2], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (and nvcc)")
@pytest.mark.parametrize("n,k", [(37, 128), (1003, 640), (4096, 4096)])
def test_mma_kernel_matches_the_reference(n, k):
    """The tensor-core kernel for M = 1..64 (1, 2, 4 and 8 n-tiles, partly filled), every launch shape (warps,
    row tiles per block), bf16 and int4, rows not a multiple of 16 or of the block's rows, K of 1 to 32 units."""
    from compress.runtime import cuda_mma

    W, keep = _sparse(rows=n, cols=k, seed=n)
    values, meta = format24.pack_24(W.to(torch.bfloat16), keep)
    q, s = format24.quantize_int4(values)
    a, e, _ = cuda_mma.fragments(meta.cuda(), values.cuda(), None, None)
    qa, _, sa = cuda_mma.fragments(meta.cuda(), None, q.cuda(), s.cuda())
    Wd = format24.unpack_24(values, meta).double()
    W4 = mma_layout.dense_from_fragments(qa.cpu(), e.cpu(), n, sa.cpu()).double()
    for m in (1, 5, 8, 9, 16, 33, 64):
        x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(torch.bfloat16)
        ref, ref4 = x.double() @ Wd.t(), x.double() @ W4.t()
        for launch in cuda_mma.launches(m):
            y = cuda_mma.mm(x.cuda(), a, e, None, n, False, launch).double().cpu()
            assert (y - ref).norm() / ref.norm() < 5e-3, (m, launch)
            y4 = cuda_mma.mm(x.cuda(), qa, e, sa, n, True, launch).double().cpu()
            assert (y4 - ref4).norm() / ref4.norm() < 5e-3, (m, launch, "int4")


def test_custom_op_fake_kernel_gives_the_output_shape():
    """llm_compress::sparse24_mm (what a Sparse24Linear calls under torch.compile) has a fake kernel giving the
    (M, N) output the compiler plans with, without running any kernel."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    import compress.runtime.linear  # noqa: F401 - registers the op

    with FakeTensorMode():
        x = torch.empty(5, 256, dtype=torch.bfloat16)
        y = torch.ops.llm_compress.sparse24_mm(
            x, torch.empty(24, 128, dtype=torch.bfloat16), None, torch.empty(24, 8, dtype=torch.int32), None, None,
            None, None, 24, False, [0],
        )  # fmt: skip
    assert tuple(y.shape) == (5, 24) and y.dtype == torch.bfloat16


def _stack(int4: bool = False, dense: bool = False) -> torch.nn.Sequential:
    """Three 256-wide layers: Sparse24Linear (fp32 CPU, with a measured-looking path table) or plain Linear."""
    layers = []
    for i in range(3):
        W, keep = _sparse(rows=256, cols=256, seed=i)
        lin = torch.nn.Linear(256, 256, bias=i == 1)
        lin.weight.data = W
        if dense:
            layers.append(lin)
            continue
        sp = Sparse24Linear.from_linear(lin, keep, int4=int4)
        sp.paths = {1: "triton", 8: "triton", 16: "triton", 64: "triton"}  # its M comparisons would be guards
        layers.append(sp)
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("int4", [False, True])
def test_compiled_sparse24_recompiles_no_more_than_dense_linear_over_many_lengths(int4):
    """Under torch.compile the path choice must not guard on M: over calls of many lengths (prefill, decode, the
    M buckets 1 / 2-8 / 9-16 / 17-64 / >64 of the path table) a Sparse24Linear stack compiles exactly as many
    graphs as the same stack of nn.Linear, and computes what it computes eagerly (the op runs the reference on
    the CPU; aot_eager also runs the fake kernel on symbolic shapes)."""
    lengths = (2048, 1, 3, 16, 7, 100, 2000, 64, 65, 9)
    x = torch.randn(1, 2048, 256)

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

    sparse, dense = graphs(_stack(int4)), graphs(_stack(dense=True))
    assert dense >= 1 and sparse == dense, (sparse, dense)


def test_path_table_of_a_symbolic_m_covers_every_decode_m_then_prefill():
    sp = _stack()[0]
    sp.paths = {4: "triton"}
    table = sp.path_table()
    assert len(table) == sp.decode_max_m + 1 and set(table) == {2}  # no cuSPARSELt form on the CPU: triton
    sp.cslt = torch.zeros(1, dtype=torch.uint8)  # as if prepared: M > decode_max_m takes cuSPARSELt
    assert sp.path_table()[-1] == 3 and sp.path_table()[:4] == [2] * 4
    sp.cslt = None
    x = torch.randn(5, 256)
    y = torch.ops.llm_compress.sparse24_mm(
        x, sp.packed, sp.scales, sp.meta, None, None, None, None, 256, False, table
    )  # the CPU reference whatever the table
    torch.testing.assert_close(y, sp(x), rtol=0, atol=0)


def test_cuda_gemv_refuses_operands_it_cannot_read():
    from compress.runtime import cuda_decode

    W, keep = _sparse(rows=24, cols=256)
    values, meta = format24.pack_24(W.to(torch.bfloat16), keep)
    x = torch.randn(1, 256).to(torch.bfloat16)
    cuda_decode.check(x, values, None, meta, False)  # fits
    with pytest.raises(ValueError, match="x is torch.float16"):
        cuda_decode.check(x.half(), values, None, meta, False)
    with pytest.raises(ValueError, match="M = 9 tokens"):
        cuda_decode.check(x.expand(9, 256).contiguous(), values, None, meta, False)
    with pytest.raises(ValueError, match="values must be contiguous"):
        cuda_decode.check(x, values[:, :64], None, meta, False)
    with pytest.raises(ValueError, match="scales must be"):
        cuda_decode.check(x, format24.quantize_int4(values)[0], None, meta, True)


def test_cuda_path_only_for_bf16_activations_and_m_up_to_8():
    lin = torch.nn.Linear(256, 24)
    W, keep = _sparse()
    lin.weight.data = W
    sp = Sparse24Linear.from_linear(lin, keep)
    sp.cslt, sp.cuda_gemv = torch.zeros(1, dtype=torch.uint8), True
    assert sp.path(1) == "cuda" and sp.path(1, torch.float16) == "cusparselt"
    sp.paths = {1: "cuda"}  # a measured choice is not taken for activations the kernel cannot read
    assert sp.path(1, torch.float16) == "cusparselt"
    assert sp(torch.randn(0, 256)).shape == (0, 24)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("int4", [False, True])
@pytest.mark.parametrize("path", ["cuda", "mma"])
def test_compiled_layer_computes_what_the_eager_layer_computes(int4, path):
    """torch.compile(fullgraph=True) traces a CUDA Sparse24Linear into one custom-op call (no graph break) and
    gives the eager output (up to bf16 rounding of the fused bias add), for a decode (M = 1) and a prefill
    (M = 256) shape."""
    from compress.runtime.model import prepare

    lin = torch.nn.Linear(512, 384, bias=True)
    W, keep = _sparse(rows=384, cols=512)
    lin.weight.data = W
    sp = torch.nn.Sequential(Sparse24Linear.from_linear(lin, keep, int4=int4)).to("cuda", torch.bfloat16)
    prepare(sp)
    sp[0].paths = {1: path}
    assert sp[0].path(1) == path
    compiled = torch.compile(sp, fullgraph=True, dynamic=False)
    for m in (1, 256):
        x = torch.randn(m, 512, device="cuda", dtype=torch.bfloat16)
        with torch.inference_mode():
            torch.testing.assert_close(compiled(x), sp(x), rtol=8e-3, atol=1e-3)  # at most bf16 rounding


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


@pytest.mark.parametrize("arch", ["qwen3", "mistral", "gemma3"])
def test_compiled_sparse24_model_of_other_architectures_matches_eager_without_extra_graphs(arch):
    """The compiled op on whole models of other families (tiny random configs, every decoder Linear 2:4):
    logits equal the eager model's at three prompt lengths, and dynamo compiles as many graphs as for the same
    model with its dense Linears."""
    import transformers

    from compress.runtime.model import sparsify
    from tests.conftest import TINY_DIMS
    from tests.test_export import ARCHS

    config_cls, model_cls, kwargs, _ = ARCHS[arch]
    config = getattr(transformers, config_cls)(**TINY_DIMS, num_hidden_layers=2, **kwargs)
    torch.manual_seed(0)
    dense = getattr(transformers, model_cls)(config).eval()
    for m in dense.model.layers.modules():
        if isinstance(m, torch.nn.Linear):
            m.weight.data *= magnitude_mask(m.weight.data, NM(2, 4))
    ours = copy.deepcopy(dense)
    assert sparsify(ours)
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
