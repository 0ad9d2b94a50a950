"""Exact invariants of the pruning masks, and Wanda against a brute-force reference."""

import pytest
import torch

from prune import MagnitudeConfig, WandaConfig, parse_pattern, prune_weight
from prune.config import NM, Unstructured
from prune.magnitude import magnitude_mask
from prune.masks import mask_from_scores, prune_lowest_per_group, satisfies_nm
from prune.stats import ActNormSq
from prune.wanda import wanda_mask


def _weights(rows=24, cols=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=g), torch.rand(cols, generator=g) * 5


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 4)])
@pytest.mark.parametrize("method", [MagnitudeConfig, WandaConfig])
def test_nm_masks_have_exactly_n_zeros_per_group(method, n, m):
    W, act = _weights()
    stats = ActNormSq(W.shape[1], "cpu")
    stats.add_batch(torch.randn(2, 5, W.shape[1]))
    pruned, keep = prune_weight(method(NM(n, m)), W, stats)
    groups = keep.reshape(W.shape[0], -1, m)
    assert torch.equal(groups.sum(-1), torch.full(groups.shape[:2], m - n))
    assert satisfies_nm(pruned, n, m)
    assert torch.equal(pruned, W * keep)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.7, 0.99])
def test_wanda_unstructured_exact_per_row(sparsity):
    W, act = _weights(cols=50)
    keep = wanda_mask(W, act, Unstructured(sparsity))
    assert torch.equal((~keep).sum(1), torch.full((W.shape[0],), int(50 * sparsity)))


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.7])
def test_magnitude_unstructured_exact_per_layer(sparsity):
    W, _ = _weights()
    keep = magnitude_mask(W, Unstructured(sparsity))
    assert int((~keep).sum()) == int(W.numel() * sparsity)
    if sparsity:  # every pruned |w| <= every kept |w|
        assert W.abs()[~keep].max() <= W.abs()[keep].min()


def _brute_force_wanda(W, act, pattern):
    rows, cols = W.shape
    keep = torch.ones(rows, cols, dtype=torch.bool)
    for i in range(rows):
        score = [abs(float(W[i, j])) * float(act[j]) ** 0.5 for j in range(cols)]
        if isinstance(pattern, NM):
            for g in range(0, cols, pattern.m):
                order = sorted(range(g, g + pattern.m), key=lambda j: (score[j], j))
                for j in order[: pattern.n]:
                    keep[i, j] = False
        else:
            for j in sorted(range(cols), key=lambda j: (score[j], j))[: int(cols * pattern.sparsity)]:
                keep[i, j] = False
    return keep


@pytest.mark.parametrize("pattern", [NM(2, 4), NM(4, 8), Unstructured(0.5), Unstructured(0.6)])
def test_wanda_matches_brute_force(pattern):
    W, act = _weights(rows=6, cols=16, seed=3)
    W = W.double()  # the brute force computes in double
    assert torch.equal(wanda_mask(W, act.double(), pattern), _brute_force_wanda(W, act, pattern))


def test_ties_break_like_a_stable_sort():
    scores = torch.randint(0, 3, (50, 40)).float()  # many ties
    g = scores.reshape(50, 10, 4)
    idx = torch.sort(g, dim=-1, stable=True).indices[..., :2]
    ref = torch.ones_like(g, dtype=torch.bool).scatter_(-1, idx, False).reshape(50, 40)
    assert torch.equal(prune_lowest_per_group(scores, 2, 4), ref)


def test_act_norm_is_the_running_mean_over_samples():
    xs = [torch.randn(b, 7, 12) for b in (1, 3, 2)]
    stats = ActNormSq(12, "cpu")
    for x in xs:
        stats.add_batch(x)
    allx = torch.cat(xs)  # (6, 7, 12)
    expected = allx.pow(2).sum(dim=(0, 1)) / allx.shape[0]
    torch.testing.assert_close(stats.value, expected, rtol=1e-5, atol=1e-6)
    assert stats.nsamples == 6


def test_wanda_without_statistics_is_an_error():
    W, _ = _weights()
    with pytest.raises(ValueError, match="calibration statistics"):
        prune_weight(WandaConfig(NM(2, 4)), W, None)


@pytest.mark.parametrize(
    "pattern,sparsity,message",
    [
        ("2:4", 0.6, "means sparsity 0.5 but sparsity is 0.6"),
        ("unstructured", 1.0, r"\[0, 1\)"),
        ("unstructured", -0.1, r"\[0, 1\)"),
        ("unstructured", None, "needs a sparsity"),
        ("4:2", None, "0 < N < M"),
        ("2-4", None, "unknown pattern"),
    ],
)
def test_bad_patterns(pattern, sparsity, message):
    with pytest.raises(ValueError, match=message):
        parse_pattern(pattern, sparsity)


def test_indivisible_columns_rejected():
    with pytest.raises(ValueError, match="not divisible by M=4"):
        prune_lowest_per_group(torch.randn(3, 10), 2, 4)


@pytest.mark.parametrize("pattern", [NM(2, 4), Unstructured(0.5)])
def test_non_finite_scores_are_refused(pattern):
    """A NaN compares false with everything: the N:M ranking kept its whole group (4 of 4 weights) and
    unstructured pruning sorted it anywhere. Now it is an error."""
    scores = torch.rand(4, 8)
    scores[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        mask_from_scores(scores, pattern)
    scores[1, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        mask_from_scores(scores, pattern)
