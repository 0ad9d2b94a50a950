"""DSnoT keeps every count of zeros and never increases the row error it minimises."""

import pytest
import torch

from compress.pipeline import prune_model
from prune import DSnoTConfig, MagnitudeConfig, SparseGPTConfig, WandaConfig, make_stats, prune_weight
from prune.config import NM, Unstructured
from prune.dsnot import row_error
from prune.masks import satisfies_nm
from prune.stage import DSnoTOptions, PruneConfig
from prune.step import dsnot_init


def _layer(seed=0, rows=48, cols=128):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g)
    X = torch.randn(6, 64, cols, generator=g) * torch.rand(cols, generator=g) * 2 + 0.2
    return W, X


def _stats(method, X):
    s = make_stats(method, X.shape[-1], "cpu")
    for x in X:
        s.add_batch(x[None])
    return s


@pytest.mark.parametrize("init", [MagnitudeConfig, WandaConfig, SparseGPTConfig])
@pytest.mark.parametrize("pattern", [Unstructured(0.6), Unstructured(0.7), NM(2, 4), NM(4, 8)])
def test_counts_kept_and_error_never_increases(init, pattern):
    W, X = _layer()
    method = DSnoTConfig(init(pattern))
    stats = _stats(method, X)
    W0, keep0 = dsnot_init(method.init, W, stats.parts[0])
    Wd, keep = prune_weight(method, W, stats)
    if isinstance(pattern, NM):
        groups = lambda k: (~k).reshape(W.shape[0], -1, pattern.m).sum(-1)  # noqa: E731
        assert torch.equal(groups(keep), groups(keep0)) and satisfies_nm(Wd, pattern.n, pattern.m)
    else:
        assert torch.equal((~keep).sum(1), (~keep0).sum(1))
    D = W * stats.parts[1].sum_row.float()
    assert (row_error(D, keep).abs() <= row_error(D, keep0).abs() + 1e-3).all()
    assert (keep != keep0).any()  # it did refine something
    assert torch.equal(Wd[keep & keep0], W0[keep & keep0]) and torch.equal(Wd[keep & ~keep0], W[keep & ~keep0])


def test_sparsegpt_init_is_the_one_shot_saliency_mask_with_dense_values():
    """zyxxmu/DSnoT `--initial_method sparsegpt`: w^2/diag(Hinv)^2 mask per row, no OBS weight update."""
    W, X = _layer(seed=1)
    method = DSnoTConfig(SparseGPTConfig(Unstructured(0.5)))
    stats = _stats(method, X)
    W0, keep0 = dsnot_init(method.init, W, stats.parts[0])
    assert torch.equal((~keep0).sum(1), torch.full((W.shape[0],), W.shape[1] // 2))
    assert torch.equal(W0, W * keep0)
    Wd, keep = prune_weight(method, W, stats)
    assert torch.equal(Wd, W * keep)  # every kept value is the dense one
    Ws, keep_s = prune_weight(method.init, W, stats.parts[0])  # SparseGPT alone does update the weights
    assert not torch.equal(Ws[keep_s], W[keep_s])


def test_dsnot_without_statistics_is_an_error():
    with pytest.raises(ValueError, match="DSnoT needs calibration statistics"):
        prune_weight(DSnoTConfig(WandaConfig(NM(2, 4))), torch.randn(4, 8), None)


def test_recipe_composition_and_skip(tiny):
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    cfg = PruneConfig("sparsegpt", "2:4", dsnot=DSnoTOptions(skip=("mlp",)))
    assert isinstance(cfg.spec, DSnoTConfig) and isinstance(
        cfg.method_for("model.layers.0.mlp.up_proj"), SparseGPTConfig
    )
    result = prune_model(tiny, ids, cfg, torch.device("cpu"), progress=False)
    for name in result.metrics:
        assert satisfies_nm(tiny.get_submodule(name).weight, 2, 4)
