"""An interrupted layer-wise run resumes from its checkpoint and ends bit-identical to an uninterrupted one."""

import pytest
import torch

from compress.layerwise import run_layerwise
from compress.resume import LayerwiseCheckpoint
from prune import WandaConfig, make_stats, prune_weight
from prune.config import NM
from tests.conftest import tiny_llama

METHOD = WandaConfig(NM(2, 4))


def _step(idx, linears, stats):
    for name, lin in linears.items():
        lin.weight.data.copy_(prune_weight(METHOD, lin.weight.data, stats[name])[0])
    return {name: {"layer": idx} for name in linears}


def _run(model, batches, step, checkpoint=None):
    return run_layerwise(
        model,
        batches,
        step,
        device=torch.device("cpu"),
        progress=False,
        checkpoint=checkpoint,
        make_stats=lambda n, lin: make_stats(METHOD, lin.in_features, "cpu"),
    )


def test_resume_is_bit_identical(tmp_path):
    batches = list(torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0)).split(2))
    ref = tiny_llama(layers=3)
    expected = _run(ref, batches, _step)

    def interrupted(idx, linears, stats):
        if idx == 2:
            raise KeyboardInterrupt
        return _step(idx, linears, stats)

    with pytest.raises(KeyboardInterrupt):
        _run(tiny_llama(layers=3), batches, interrupted, LayerwiseCheckpoint(tmp_path / "w", "key", every_s=0))

    fresh = tiny_llama(layers=3)  # a new process starts from the dense model again
    checkpoint = LayerwiseCheckpoint(tmp_path / "w", "key", every_s=0)
    assert checkpoint.resumed and checkpoint.next_layer == 2
    calls = []
    result = _run(fresh, batches, lambda i, lin, st: calls.append(i) or _step(i, lin, st), checkpoint)
    assert calls == [2]
    for k, v in ref.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    for a, b in zip(result.hidden, expected.hidden, strict=True):
        assert torch.equal(a, b)
    assert result.metrics.keys() == expected.metrics.keys()


def test_checkpoint_of_another_run_is_discarded(tmp_path):
    first = LayerwiseCheckpoint(tmp_path / "w", "key-a", every_s=0)
    first.save(1, [torch.zeros(2)], {}, {0: {"w": torch.ones(2)}})
    other = LayerwiseCheckpoint(tmp_path / "w", "key-b", every_s=0)
    assert not other.resumed and other.next_layer == 0 and not (tmp_path / "w").exists()
