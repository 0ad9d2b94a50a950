"""SparseGPT against the paper's guarantees on toy layers with correlated inputs."""

import pytest
import torch

from prune import MagnitudeConfig, SparseGPTConfig, WandaConfig, make_stats, prune_weight
from prune.config import NM, Unstructured
from prune.masks import satisfies_nm
from prune.obs import inverse_hessian_factor
from prune.sparsegpt import sparsegpt_prune
from prune.stats import Hessian


def _toy(rows=32, cols=64, tokens=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / cols**0.5 + torch.eye(cols)  # correlated inputs
    X = (torch.randn(tokens, cols, generator=g) @ mix) * torch.linspace(0.2, 3, cols)
    W = torch.randn(rows, cols, generator=g)
    return W, X


def _error(W, Wp, X):
    return float(((X @ (W - Wp).T) ** 2).sum())


def _stats(method, X):
    s = make_stats(method, X.shape[1], "cpu")
    if s is not None:
        for chunk in X.split(128):
            s.add_batch(chunk[None])
    return s


def test_sparsity_zero_returns_w_unchanged():
    W, X = _toy()
    s = _stats(SparseGPTConfig(Unstructured(0.0)), X)
    Wp, keep, loss = sparsegpt_prune(W, s.H, Unstructured(0.0))
    assert torch.equal(Wp, W) and keep.all() and loss == 0.0


@pytest.mark.parametrize("pattern", [Unstructured(0.5), NM(2, 4), NM(4, 8)])
def test_error_ordering_sparsegpt_wanda_magnitude(pattern):
    W, X = _toy()
    errors = {}
    for name, method in [
        ("magnitude", MagnitudeConfig(pattern)),
        ("wanda", WandaConfig(pattern)),
        ("sparsegpt", SparseGPTConfig(pattern, blocksize=64)),
    ]:
        Wp, keep = prune_weight(method, W, _stats(method, X))
        assert torch.equal(Wp == 0, ~keep | (W == 0)) or (Wp[~keep] == 0).all()
        errors[name] = _error(W, Wp, X)
    assert errors["sparsegpt"] <= errors["wanda"] <= errors["magnitude"], errors


@pytest.mark.parametrize("pattern", [NM(2, 4), NM(4, 8)])
def test_nm_mask_exact(pattern):
    W, X = _toy()
    Wp, keep = prune_weight(SparseGPTConfig(pattern), W, _stats(SparseGPTConfig(pattern), X))
    groups = keep.reshape(W.shape[0], -1, pattern.m).sum(-1)
    assert (groups == pattern.m - pattern.n).all() and satisfies_nm(Wp, pattern.n, pattern.m)


def test_unstructured_exact_per_block():
    W, X = _toy(cols=96)
    method = SparseGPTConfig(Unstructured(0.6), blocksize=32)
    _, keep = prune_weight(method, W, _stats(method, X))
    for b in range(3):
        assert int((~keep[:, 32 * b : 32 * (b + 1)]).sum()) == int(32 * 32 * 0.6)


def test_hessian_matches_reference_formula():
    X = torch.randn(3, 10, 6)
    h = Hessian(6, "cpu")
    h.add_batch(X[:1])
    h.add_batch(X[1:])
    flat = X.reshape(-1, 6)
    torch.testing.assert_close(h.H, 2 / 3 * flat.T @ flat, rtol=1e-5, atol=1e-5)


def test_dead_inputs_get_zero_columns():
    W, X = _toy()
    X[:, 5] = 0
    s = _stats(SparseGPTConfig(NM(2, 4)), X)
    Wp, _, _ = sparsegpt_prune(W, s.H, NM(2, 4))
    assert (Wp[:, 5] == 0).all()


def test_singular_hessian_even_after_damping_is_a_clear_error():
    with pytest.raises(ValueError, match="not positive definite even with damping"):
        inverse_hessian_factor(-torch.eye(8), 0.01)


def test_sparsegpt_without_statistics_is_an_error():
    with pytest.raises(ValueError, match="SparseGPT needs calibration statistics"):
        prune_weight(SparseGPTConfig(NM(2, 4)), torch.randn(4, 8), None)


def test_group_chooser_equals_the_pairwise_ranks_ties_included():
    from prune.masks import keep_top_n_of_m, prune_lowest_per_group

    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 3, (500, 4), generator=g).float()  # many ties
    for n in (1, 2, 3):
        assert torch.equal(keep_top_n_of_m(s, n), prune_lowest_per_group(s, n, 4))


@pytest.mark.parametrize("where", ["weight", "hessian"])
def test_nonfinite_value_in_the_nm_sweep_is_refused(where):
    W, X = _toy()
    H = _stats(SparseGPTConfig(NM(2, 4)), X).H.clone()
    if where == "weight":
        W[3, 17] = float("nan")
    else:
        H[5, 9] = H[9, 5] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf|not positive definite"):  # never a silent mask
        sparsegpt_prune(W, H, NM(2, 4))
