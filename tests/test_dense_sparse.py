"""SqueezeLLM dense-and-sparse (quant/dense_sparse.py): exact invariants of the k-means, the outlier sets, the
exported form and the Fisher diagonal, on small CPU tensors and a tiny random Llama."""

import pytest
import torch

from prune.masks import satisfies_nm
from quant.dense_sparse import (
    DenseSparseSpec,
    dense_and_sparse,
    fisher_diagonal,
    iqr_threshold,
    range_outlier_mask,
    range_outlier_r,
    reconstruct,
    sensitive_mask,
    weighted_kmeans_1d,
)
from quant.primitives import QuantSpec, rtn, sqnr_db
from tests.conftest import tiny_llama


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _weights(rows=64, cols=256, seed=0) -> torch.Tensor:
    """Heavy-tailed like LLM weights: Student-t (3 dof) times 0.02."""
    torch.manual_seed(seed)
    return torch.distributions.StudentT(3.0).sample((rows, cols)) * 0.02


def _fisher(rows=64, cols=256, seed=1) -> torch.Tensor:
    """Heavy-tailed positive Fisher-like values: a few entries carry most of each row's mass."""
    g = _gen(seed)
    return torch.randn(rows, cols, generator=g).pow(2) * torch.rand(rows, cols, generator=g).pow(4)


def _objective(X, w, c, a) -> float:
    return float((w.double() * (X.double() - c.double().gather(1, a)) ** 2).sum())


def _keep_24(rows, cols, seed=2) -> torch.Tensor:
    return (torch.rand(rows, cols // 4, 4, generator=_gen(seed)).argsort(-1) >= 2).reshape(rows, cols)


@pytest.mark.parametrize("k", [4, 8, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kmeans_objective_never_increases_and_assignment_is_nearest(k, dtype):
    X = _weights()
    w = _fisher()
    w[3] = 0  # a row without weight: uniform fallback
    w[5, ::2] = 0  # zero weights inside a row
    X[7, :200] = X[7, 0]  # many duplicates: few distinct weighted values, empty clusters to relocate
    c, a, hist = weighted_kmeans_1d(X, w, k, 50, centroid_dtype=dtype)
    assert c.dtype == torch.float32 and c.shape == (64, k) and a.dtype == torch.int64 and a.shape == X.shape
    assert bool(torch.isfinite(c).all()) and bool((c[:, 1:] >= c[:, :-1]).all())
    assert torch.equal(c.to(dtype).float(), c)  # representable in the storage dtype
    tol = 1e-9 * hist[0]
    assert all(b <= a_ + tol for a_, b in zip(hist, hist[1:], strict=False)), hist
    assert hist[-1] < hist[0]
    w_eff = w.clone()
    w_eff[3] = 1
    assert _objective(X, w_eff, c, a) == pytest.approx(hist[-1], rel=1e-6)
    dist = (X.double()[:, :, None] - c.double()[:, None, :]).abs()  # (rows, cols, k)
    assert torch.equal(dist.gather(2, a[:, :, None]).squeeze(2), dist.amin(2))  # exactly a nearest centroid
    c2, a2, hist2 = weighted_kmeans_1d(X, w, k, 50, centroid_dtype=dtype)
    assert torch.equal(c, c2) and torch.equal(a, a2) and hist == hist2  # deterministic


def test_kmeans_recovers_exactly_k_distinct_values():
    k, rows, cols = 8, 32, 200
    g = _gen(3)
    values = torch.randn(rows, k, generator=g).sort(1).values  # k distinct values per row
    # unequal multiplicities, singletons included, so the seeding alone cannot place one centroid per value
    counts = torch.tensor([1, 2, 5, 10, 20, 40, 60, 62])
    idx = torch.repeat_interleave(torch.arange(k), counts)
    idx = idx[torch.stack([torch.randperm(cols, generator=g) for _ in range(rows)])]
    X = values.gather(1, idx)
    w = torch.rand(rows, cols, generator=g) + 0.01
    c, a, hist = weighted_kmeans_1d(X, w, k, 50)
    assert torch.equal(c, values)
    assert torch.equal(c.gather(1, a), X)
    assert _objective(X, w, c, a) == 0.0  # the reported one comes from prefix sums: zero up to their rounding
    assert hist[-1] <= 1e-12 * float((w.double() * X.double() ** 2).sum())


def test_kmeans_beats_rtn_at_the_same_bits():
    W = _weights(64, 512)
    ones = torch.ones_like(W)
    for bits in (3, 4):
        c, a, _ = weighted_kmeans_1d(W, ones, 2**bits, 50)
        assert sqnr_db(W, c.gather(1, a)) > sqnr_db(W, rtn(W, QuantSpec(bits, "channel", symmetric=False))[0])


def test_no_outliers_is_plain_fisher_weighted_kmeans():
    W, F = _weights(), _fisher()
    spec = DenseSparseSpec(bits=3, outlier_fraction=0, sensitive_fraction=0)
    r = dense_and_sparse(W, F, spec)
    c, a, hist = weighted_kmeans_1d(W, F, 8, spec.iters, centroid_dtype=torch.float16)
    assert r.nnz == 0 and r.n_range == 0 and r.n_sensitive == 0 and r.range_r == float("inf")
    assert torch.equal(r.lut.float(), c) and torch.equal(r.indices.long(), a) and r.objective == hist
    assert torch.equal(r.W, c.gather(1, a)) and torch.equal(r.W, r.lut.float().gather(1, r.indices.long()))


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("pruned", [False, True])
def test_exported_form_decodes_exactly_to_the_result(bits, pruned):
    W, F = _weights(), _fisher()
    keep = _keep_24(*W.shape) if pruned else None
    r = dense_and_sparse(W, F, DenseSparseSpec(bits=bits, outlier_fraction=0.01, sensitive_fraction=0.005), keep)
    assert r.lut.dtype == torch.float16 and r.lut.shape == (64, 2**bits)
    assert r.indices.dtype == torch.uint8 and int(r.indices.max()) < 2**bits
    assert r.crow_indices.dtype == torch.int64 and r.crow_indices.shape == (65,)
    assert r.col_indices.dtype == torch.int64 and r.values.dtype == torch.float16
    assert int(r.crow_indices[-1]) == r.nnz > 0
    decoded = reconstruct(r.lut, r.indices, r.crow_indices, r.col_indices, r.values, r.keep, tuple(W.shape))
    assert torch.equal(decoded, r.W) and r.W.dtype == torch.float32
    mask = r.outlier_mask()
    assert torch.equal(r.W[mask], W[mask].half().float())  # outliers kept exactly in fp16
    assert torch.equal(r.to_sparse_csr().to_dense()[mask], r.values)
    dense = ~mask if keep is None else ~mask & keep
    assert torch.equal(r.W[dense], r.lut.float().gather(1, r.indices.long())[dense])
    target = W if keep is None else W * keep
    assert sqnr_db(target, r.W) > (13 if bits == 3 else 18)  # a working quantizer, not a no-op


def test_24_mask_keeps_exactly_its_zeros_and_ignores_pruned_entries():
    W, F = _weights(64, 512), _fisher(64, 512)
    keep = _keep_24(64, 512)
    F[9] = 0  # a row without Fisher mass: uniform weights over its dense entries
    spec = DenseSparseSpec(bits=4, outlier_fraction=0.01, sensitive_fraction=0.002)
    r = dense_and_sparse(W * keep, F, spec, keep)
    assert bool((r.W[~keep] == 0).all()) and satisfies_nm(r.W, 2, 4) and torch.equal(r.keep, keep)
    assert bool((r.outlier_mask() <= keep).all())
    assert r.n_sensitive == round(0.002 * int(keep.sum()))
    # whatever sits at pruned positions (huge weights, huge Fisher values) changes nothing
    W2 = torch.where(keep, W, torch.full_like(W, 50.0))
    F2 = torch.where(keep, F, torch.full_like(F, 1e6))
    r2 = dense_and_sparse(W2, F2, spec, keep)
    assert torch.equal(r.W, r2.W) and torch.equal(r.lut, r2.lut) and torch.equal(r.indices, r2.indices)
    assert torch.equal(r.col_indices, r2.col_indices) and torch.equal(r.values, r2.values)
    # pruned positions store the index of the centroid nearest 0
    near0 = r.lut.float().abs().argmin(1, keepdim=True).expand_as(W)
    assert torch.equal(
        r.lut.float().gather(1, r.indices.long())[~keep].abs(), r.lut.float().gather(1, near0)[~keep].abs()
    )
    # without the mask the pruned positions would be clustered as zeros and the kept ones fit worse
    dense_only = DenseSparseSpec(bits=4, outlier_fraction=0, sensitive_fraction=0)
    err = lambda R: float((F * (W - R.W) ** 2)[keep].sum())  # noqa: E731
    assert err(dense_and_sparse(W * keep, F, dense_only, keep)) < err(dense_and_sparse(W * keep, F, dense_only))


def test_range_outlier_fraction_hits_the_target():
    W = _weights(256, 1024)
    for fraction in (0.0045, 0.01, 0.001):
        mask = range_outlier_mask(W, fraction)
        assert abs(float(mask.float().mean()) - fraction) < 0.001
        r = range_outlier_r(W, fraction)
        assert 0 < r < float("inf") and torch.equal(mask, W.double().abs() >= iqr_threshold(W, r))
    keep = _keep_24(256, 1024)
    mask = range_outlier_mask(W, 0.0045, keep)
    assert bool((mask <= keep).all()) and abs(int(mask.sum()) / int(keep.sum()) - 0.0045) < 0.001
    assert not bool(range_outlier_mask(W, 0.0).any()) and not bool(sensitive_mask(_fisher(), 0.0).any())
    r = dense_and_sparse(W, _fisher(256, 1024), DenseSparseSpec(bits=3))
    assert abs(r.n_range / W.numel() - 0.0045) < 0.001 and r.n_sensitive == round(0.0005 * W.numel())
    assert max(r.n_range, r.n_sensitive) <= r.nnz <= r.n_range + r.n_sensitive


def test_sensitive_mask_takes_exactly_the_largest_fisher_values():
    F = _fisher()
    F[0, :10] = 1e3  # ties at the top: the lowest positions win
    m = sensitive_mask(F, 0.001)
    n = round(0.001 * F.numel())
    assert int(m.sum()) == n and float(F[m].min()) >= float(F[~m].max())
    assert bool(m[0, : min(n, 10)].all())
    keep = _keep_24(*F.shape)
    mk = sensitive_mask(F, 0.01, keep)
    assert int(mk.sum()) == round(0.01 * int(keep.sum())) and bool((mk <= keep).all())
    assert float(F[mk].min()) >= float(F[keep & ~mk].max())


def test_fisher_weighting_fits_heavily_weighted_entries_better():
    W = _weights(128, 256)
    spec = DenseSparseSpec(bits=2, outlier_fraction=0, sensitive_fraction=0)
    uniform = torch.ones_like(W)
    heavy = uniform.clone()
    heavy[:, 17] = 1e4
    e_uniform = (dense_and_sparse(W, uniform, spec).W - W)[:, 17].abs()
    e_heavy = (dense_and_sparse(W, heavy, spec).W - W)[:, 17].abs()
    assert float(e_heavy.mean()) < 0.1 * float(e_uniform.mean())
    # a top-Fisher entry goes to the sparse part and is kept exactly
    r = dense_and_sparse(W, heavy, DenseSparseSpec(bits=2, outlier_fraction=0, sensitive_fraction=128 / W.numel()))
    assert torch.equal(r.outlier_mask()[:, 17], torch.ones(128, dtype=torch.bool))
    assert torch.equal(r.W[:, 17], W[:, 17].half().float())


def test_bad_inputs_are_one_line_errors():
    W, F = _weights(), _fisher()
    spec = DenseSparseSpec()
    for bad, what in ((float("nan"), "NaN or inf"), (float("inf"), "NaN or inf")):
        Wb = W.clone()
        Wb[1, 2] = bad
        with pytest.raises(ValueError, match=f"weight contains {what}"):
            dense_and_sparse(Wb, F, spec)
        Fb = F.clone()
        Fb[1, 2] = bad
        with pytest.raises(ValueError, match=f"fisher contains {what}"):
            dense_and_sparse(W, Fb, spec)
    with pytest.raises(ValueError, match="negative"):
        dense_and_sparse(W, -F, spec)
    with pytest.raises(ValueError, match="must match"):
        dense_and_sparse(W, F[:, :128], spec)
    with pytest.raises(ValueError, match="bool mask"):
        dense_and_sparse(W, F, spec, keep=torch.ones_like(W))
    with pytest.raises(ValueError, match="beyond fp16"):
        dense_and_sparse(W * 1e7, F, spec)
    with pytest.raises(ValueError, match="kmeans weights must be ≥ 0"):
        weighted_kmeans_1d(W, -F, 4, 10)
    with pytest.raises(ValueError, match="kmeans k"):
        weighted_kmeans_1d(W, F, 0, 10)
    for kwargs, msg in (
        (dict(bits=5), "bits 5 is not supported; choose one of 2, 3, 4, 8"),
        (dict(outlier_fraction=0.2), r"outlier_fraction 0.2 must be a fraction in \[0, 0.1\)"),
        (dict(sensitive_fraction=-0.01), r"sensitive_fraction -0.01 must be a fraction in \[0, 0.1\)"),
        (dict(iters=0), "iters 0 must be a positive integer"),
        (dict(iters=2.5), "iters 2.5 must be a positive integer"),
    ):
        with pytest.raises(ValueError, match=msg):
            DenseSparseSpec(**kwargs)


def _flags_and_grads(model):
    return [(n, p.requires_grad, None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()]


def test_fisher_diagonal_is_the_sum_of_squared_per_sample_gradients():
    model = tiny_llama(seed=0)
    model.model.embed_tokens.weight.requires_grad_(False)  # a non-default flag that must survive
    windows = torch.randint(0, 128, (3, 16), generator=_gen(4))
    layers = model.model.layers
    linears = {
        "layers.0.mlp.down_proj": layers[0].mlp.down_proj,
        "layers.1.self_attn.q_proj": layers[1].self_attn.q_proj,
    }
    before = _flags_and_grads(model)
    fisher = fisher_diagonal(model, windows, linears, "cpu")
    after = _flags_and_grads(model)
    assert [(n, f) for n, f, _ in before] == [(n, f) for n, f, _ in after]
    assert all(g is None for _, _, g in after) and not model.training
    assert set(fisher) == set(linears)

    # by hand: one backward per window, the .grad squared and summed
    for p in model.parameters():
        p.requires_grad_(True)
    expected = {n: torch.zeros_like(lin.weight) for n, lin in linears.items()}
    for i in range(windows.shape[0]):
        model.zero_grad(set_to_none=True)
        ids = windows[i : i + 1]
        model(input_ids=ids, labels=ids).loss.backward()
        for n, lin in linears.items():
            expected[n] += lin.weight.grad**2
    for n in linears:
        assert fisher[n].dtype == torch.float32 and fisher[n].shape == linears[n].weight.shape
        assert float(fisher[n].sum()) > 0
        assert torch.allclose(fisher[n], expected[n], rtol=1e-5, atol=1e-12)


def test_fisher_diagonal_refuses_a_non_finite_gradient_and_restores_the_model():
    model = tiny_llama(seed=0)
    model.train()
    lin = model.model.layers[0].mlp.up_proj
    with torch.no_grad():
        lin.weight[0, 0] = float("nan")
    before = _flags_and_grads(model)
    with pytest.raises(ValueError, match="non-finite gradient for layers.0.mlp.up_proj on window 0"):
        fisher_diagonal(model, torch.randint(0, 128, (2, 8), generator=_gen(5)), {"layers.0.mlp.up_proj": lin}, "cpu")
    after = _flags_and_grads(model)
    assert [(n, f) for n, f, _ in before] == [(n, f) for n, f, _ in after] and model.training
    with pytest.raises(ValueError, match="integer tensor"):
        fisher_diagonal(model, torch.rand(2, 8), {"x": lin}, "cpu")
