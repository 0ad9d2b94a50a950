"""OWL layer-wise sparsities: mean kept at the target, spread within lambda, N:M refused."""

import pytest
import torch

from compress.config import recipe_from_dict
from compress.pipeline import prune_model
from prune.owl import outlier_ratio, owl_sparsities
from prune.stage import OWLOptions, PruneConfig
from tests.conftest import tiny_llama


def test_owl_sparsities_keep_the_mean_and_order():
    ratios = [0.01, 0.05, 0.02, 0.03]
    s = owl_sparsities(ratios, 0.7, 0.08)
    assert sum(s) / len(s) == pytest.approx(0.7, abs=1e-12)
    assert max(s) - min(s) == pytest.approx(0.16)  # spread 2 * lambda around a mean of exactly the target
    assert s[1] == min(s) and s[0] == max(s)  # most outliers -> least pruning
    assert owl_sparsities([0.3, 0.3], 0.5) == [0.5, 0.5]


def test_outlier_ratio_counts_entries_above_m_times_mean():
    scores = [torch.tensor([1.0, 1.0, 1.0, 1.0]), torch.tensor([1.0, 1.0, 1.0, 100.0])]
    assert outlier_ratio(scores, M=5) == pytest.approx(1 / 8)


def test_owl_keeps_global_sparsity_within_0_1_percent():
    model = tiny_llama(hidden=1024, layers=3)
    ids = torch.randint(0, 128, (2, 32), generator=torch.Generator().manual_seed(0))
    cfg = PruneConfig("wanda", "unstructured", 0.7, owl=OWLOptions())
    result = prune_model(model, ids, cfg, torch.device("cpu"), progress=False)
    numel = sum(m["shape"][0] * m["shape"][1] for m in result.metrics.values())
    zeros = sum(m["sparsity"] * m["shape"][0] * m["shape"][1] for m in result.metrics.values())
    assert abs(zeros / numel - 0.7) < 0.001
    per_layer = {int(n.split(".")[2]): m["sparsity"] for n, m in result.metrics.items() if n.endswith("q_proj")}
    assert len(set(round(v, 3) for v in per_layer.values())) > 1  # the layers really differ


def test_owl_with_nm_is_refused():
    with pytest.raises(ValueError, match="owl distributes unstructured sparsity only"):
        recipe_from_dict({"prune": {"method": "wanda", "pattern": "2:4", "owl": {}}})
