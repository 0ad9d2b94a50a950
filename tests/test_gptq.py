"""GPTQ on the shared OBS sweep (quant/gptq.py): exact invariants on toy layers with correlated inputs."""

import pytest
import torch

from prune import SparseGPTConfig
from prune.config import NM
from prune.masks import satisfies_nm
from quant.gptq import gptq_quantize
from quant.primitives import QuantSpec, dequantize, rtn
from tests.test_sparsegpt import _error, _stats, _toy


def _layer(rows=32, cols=256, seed=0):
    W, X = _toy(rows, cols, tokens=1024, seed=seed)
    return W, X, _stats(SparseGPTConfig(NM(2, 4)), X).H


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("spec", [QuantSpec(3, "group", 64), QuantSpec(4, "group", 128), QuantSpec(3, "channel")])
def test_gptq_beats_rtn_and_its_codes_decode_to_its_weights(spec, act_order):
    W, X, H = _layer()
    r = gptq_quantize(W, H, spec, act_order=act_order)
    assert _error(W, r.W, X) < 0.8 * _error(W, rtn(W, spec)[0], X)
    assert int(r.codes.max()) <= spec.maxq
    assert torch.equal(dequantize(r.codes, r.scale, r.zero, spec), r.W)  # what is exported is what was computed


def test_identity_hessian_makes_gptq_exactly_rtn():
    """No correlation between inputs, nothing to compensate: the sweep must reduce to round-to-nearest."""
    W = _toy()[0]
    for spec in (QuantSpec(4, "group", 32), QuantSpec(3, "channel"), QuantSpec(4, "group", 64, symmetric=False)):
        r = gptq_quantize(W, torch.eye(W.shape[1]), spec)
        assert torch.equal(r.W, rtn(W, spec)[0])


def test_fixed_24_mask_keeps_exactly_its_zeros_and_quantizes_the_rest():
    W, X, H = _layer()
    keep = torch.rand(W.shape, generator=torch.Generator().manual_seed(1)).view(32, -1, 4).argsort(-1) >= 2
    keep = keep.view(W.shape)
    r = gptq_quantize(W, H, QuantSpec(4, "group", 128), keep=keep)
    assert torch.equal(r.W != 0, keep & (r.W != 0)) and bool((r.W[~keep] == 0).all())
    assert torch.equal(r.keep, keep)
    assert torch.equal(dequantize(r.codes, r.scale, r.zero, QuantSpec(4, "group", 128)), r.W)


def test_joint_24_and_quantization_in_one_sweep():
    W, X, H = _layer()
    spec = QuantSpec(4, "group", 128)
    r = gptq_quantize(W, H, spec, pattern=NM(2, 4))
    assert satisfies_nm(r.W, 2, 4) and bool((r.W[~r.keep] == 0).all()) and int((~r.keep).sum()) == W.numel() // 2
    # quantizing a fixed one-shot 2:4 model with RTN is worse than choosing and quantizing jointly
    from prune.sparsegpt import sparsegpt_prune

    Wp, keep, _ = sparsegpt_prune(W, H, NM(2, 4))
    assert _error(W, r.W, X) < _error(W, rtn(Wp, spec)[0] * keep, X)


def test_bad_inputs_are_one_line_errors():
    W, X, H = _layer()
    with pytest.raises(ValueError, match="group_size 96 does not divide in-features 256"):
        gptq_quantize(W, H, QuantSpec(4, "group", 96))
    with pytest.raises(ValueError, match="blocksize 128 must be a multiple of group_size 256"):
        gptq_quantize(W, H, QuantSpec(4, "group", 256))
    with pytest.raises(ValueError, match="not both"):
        gptq_quantize(W, H, QuantSpec(4), keep=torch.ones_like(W, dtype=torch.bool), pattern=NM(2, 4))
    W[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        gptq_quantize(W, H, QuantSpec(4))
