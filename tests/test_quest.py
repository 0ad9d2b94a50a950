"""QuEST Hadamard quantization (quant/hadamard.py, quant/quest.py): exact invariants on CPU."""

import math

import pytest
import torch
from torch import nn

from quant.hadamard import check_block, fwht, hadamard_matrix
from quant.quest import (
    GAUSSIAN_CLIP,
    QuestLinear,
    QuestSpec,
    quest_dequantize,
    quest_linear_forward,
    quest_quantize,
    quest_ste,
    quest_weight,
    trust_mask,
)


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _gaussian_mse(alpha: float, bits: int, n: int = 400_001, lim: float = 10.0) -> float:
    """E[(X − Q(X))²] for X ~ N(0, 1) under the midpoint grid clipped at ±alpha (numerical integration)."""
    x = torch.linspace(-lim, lim, n, dtype=torch.float64)
    pdf = torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    step = 2 * alpha / (2**bits - 1)
    half = 2 ** (bits - 1)
    xq = (torch.round(x.clamp(-alpha, alpha) / step + 0.5).clamp(1 - half, half) - 0.5) * step
    return float(((x - xq) ** 2 * pdf).sum() * (x[1] - x[0]))


# --- Hadamard -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [1, 2, 8, 64, 128])
def test_fwht_equals_blockwise_dense_hadamard(block):
    x = torch.randn(3, 5, 256, generator=_g(block))
    H = hadamard_matrix(block) / math.sqrt(block)
    ref = (x.reshape(3, 5, 256 // block, block) @ H).reshape(x.shape)
    torch.testing.assert_close(fwht(x, block), ref, rtol=1e-5, atol=1e-5)


def test_hadamard_matrix_is_symmetric_orthogonal():
    H = hadamard_matrix(128)
    assert torch.equal(H, H.T) and torch.equal(H @ H, 128 * torch.eye(128))


def test_fwht_is_orthonormal_and_self_inverse():
    x = torch.randn(64, 512, generator=_g(1))
    y = fwht(x, 128)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=0)
    assert (fwht(y, 128) - x).abs().max() <= 1e-5


def test_fwht_bf16_returns_bf16_and_is_differentiable():
    x = torch.randn(4, 128, generator=_g(2)).bfloat16()
    y = fwht(x, 64)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), fwht(x.float(), 64), rtol=1e-2, atol=1e-2)
    xr = torch.randn(4, 128, generator=_g(3), requires_grad=True)
    g = torch.randn(4, 128, generator=_g(4))
    (fwht(xr, 128) * g).sum().backward()
    torch.testing.assert_close(xr.grad, fwht(g, 128), rtol=1e-5, atol=1e-5)  # Hᵀ = H


def test_bad_block_raises_one_line_error_naming_the_fix():
    with pytest.raises(ValueError, match="choose hadamard_block 64 or 32 that divides 576, or 0") as e:
        check_block(576, 128)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="not a power of two"):
        check_block(576, 96)
    with pytest.raises(ValueError, match="use hadamard_block 0"):
        check_block(575, 64)
    check_block(576, 0)
    check_block(576, 64)
    with pytest.raises(ValueError, match="divides 576"):
        quest_weight(torch.randn(8, 576), QuestSpec(hadamard_block=128))
    with pytest.raises(ValueError, match="not a power of two"):
        QuestSpec(hadamard_block=100)
    with pytest.raises(ValueError, match="choose one of 1, 2, 3, 4, 8"):
        QuestSpec(bits=5)


# --- quantizer ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_levels_symmetric_and_codes_decode_exactly(bits):
    # a ramp over [−1, 1] padded with zeros so that the clip s ≈ 0.9 (or the ramp alone when α is small): every
    # level is hit; plus Gaussian rows
    m = 20000
    n = max(m, math.ceil(m * GAUSSIAN_CLIP[bits] ** 2 / 2.43))
    ramp = torch.cat((torch.linspace(-1, 1, m), torch.zeros(n - m)))
    x = torch.cat((ramp[None], torch.randn(7, n, generator=_g(bits))))
    xq, codes, scale = quest_quantize(x, bits)
    assert codes.dtype == torch.uint8 and int(codes.max()) <= 2**bits - 1 and scale.shape == (8, 1)
    assert float(scale[0]) < 1
    assert torch.equal(quest_dequantize(codes, scale, bits), xq)
    step = 2 * scale / (2**bits - 1)
    levels = torch.unique(torch.round(xq / step * 2))  # in half-steps: odd integers ±1 … ±(2^b − 1)
    assert levels.numel() == 2**bits
    assert torch.equal(levels, -levels.flip(0))
    assert torch.equal(levels, torch.arange(-(2**bits) + 1, 2**bits, 2).float())
    assert (xq.abs() <= scale * (1 + 1e-6)).all()


def test_four_bit_gaussian_mse_matches_optimal_uniform_quantizer():
    # The MSE-optimal *uniform* 16-level Gaussian quantizer (Max 1960) has step 0.3352 and D = 0.01154; the
    # 0.0095 often quoted is the non-uniform Lloyd–Max optimum, which a uniform grid cannot reach.
    theory = _gaussian_mse(GAUSSIAN_CLIP[4], 4)
    assert 0.0114 < theory < 0.0117
    # α_4 = 2.514 is the minimiser (to the three decimals carried)
    assert theory < _gaussian_mse(GAUSSIAN_CLIP[4] - 0.02, 4) and theory < _gaussian_mse(GAUSSIAN_CLIP[4] + 0.02, 4)
    x = torch.randn(64, 8192, generator=_g(5))
    xq, _, _ = quest_quantize(x, 4)
    rel = float(((x - xq) ** 2).sum() / (x**2).sum())
    assert abs(rel - theory) / theory < 0.03, (rel, theory)


def test_all_zero_rows_give_zeros_and_nan_raises():
    x = torch.randn(4, 256, generator=_g(6))
    x[1] = 0
    xq, codes, scale = quest_quantize(x, 4)
    assert torch.isfinite(xq).all() and float(scale[1]) == 0
    assert torch.equal(xq[1], torch.zeros(256)) and torch.equal(quest_dequantize(codes, scale, 4), xq)
    W_hat = quest_weight(torch.zeros(8, 256), QuestSpec()).W_hat
    assert torch.equal(W_hat, torch.zeros(8, 256))
    for bad in (float("nan"), float("inf")):
        x[2, 3] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            quest_quantize(x, 4)
        with pytest.raises(ValueError, match="NaN or inf"):
            quest_weight(x, QuestSpec())


def test_trust_estimator_gradient_is_exactly_masked():
    x = (torch.randn(16, 512, generator=_g(7)) * 2).requires_grad_()
    g = torch.randn(16, 512, generator=_g(8))
    xq = quest_ste(x, 4)
    (xq * g).sum().backward()
    ref_q, _, scale = quest_quantize(x.detach(), 4)
    assert torch.equal(xq.detach(), ref_q)
    mask = trust_mask(x.detach(), ref_q, scale, 4)
    assert 0 < int((~mask).sum()) < mask.numel() // 10  # some outliers clipped, most trusted
    assert torch.equal(x.grad[~mask], torch.zeros(int((~mask).sum())))
    assert torch.equal(x.grad[mask], g[mask])
    # the outer levels are ±s, so the band is the clip range widened by half a step: trusted iff |x| ≤ s + step/2
    edge = scale * (1 + 1 / 15)
    inside = x.detach().abs() <= edge * (1 - 1e-6)
    outside = x.detach().abs() >= edge * (1 + 1e-6)
    assert mask[inside].all() and not mask[outside].any()


# --- weights and layers -------------------------------------------------------------------------------------


def test_folded_rotation_is_exact_for_a_plain_linear():
    W = torch.randn(96, 256, generator=_g(9))
    x = torch.randn(10, 256, generator=_g(10))
    spec = QuestSpec(bits=4, hadamard_block=128)
    res = quest_weight(W, spec)
    assert res.rotated and res.block == 128 and res.codes.shape == W.shape and res.scale.shape == (96, 1)
    Qr = quest_dequantize(res.codes, res.scale, 4)  # Q(fwht(W)), the rotated basis
    torch.testing.assert_close(x @ res.W_hat.T, fwht(x) @ Qr.T, rtol=1e-5, atol=1e-4)
    ref = quest_quantize(fwht(W), 4)[0]
    assert torch.equal(Qr, ref)


def test_rotation_lowers_error_of_weight_with_outlier_columns():
    W = torch.randn(256, 512, generator=_g(11))
    W[:, [7, 100, 301]] *= 40  # a few large input channels
    err = {}
    for block in (0, 128):
        W_hat = quest_weight(W, QuestSpec(hadamard_block=block)).W_hat
        err[block] = float(((W - W_hat) ** 2).sum() / (W**2).sum())
    assert err[128] < 0.5 * err[0], err


def test_keep_mask_keeps_exactly_the_same_zeros_without_rotation():
    W = torch.randn(64, 256, generator=_g(12))
    keep = torch.zeros(64, 256, dtype=torch.bool)
    idx = torch.rand(64, 64, 4, generator=_g(13)).argsort(-1)[..., :2]  # 2 of every 4
    keep.view(64, 64, 4).scatter_(-1, idx, True)
    res = quest_weight(W * keep, QuestSpec(bits=4, hadamard_block=128), keep=keep)
    assert not res.rotated and res.block == 0
    assert torch.equal(res.W_hat == 0, ~keep)  # midpoint grid has no zero level: zeros are exactly the pruned
    assert torch.equal(res.codes[~keep], torch.zeros(int((~keep).sum()), dtype=torch.uint8))
    kept = (W * keep).square().sum(-1, keepdim=True) / keep.sum(-1, keepdim=True)
    torch.testing.assert_close(res.scale, GAUSSIAN_CLIP[4] * kept.sqrt())
    # the pruned values of a non-pruned W are ignored too
    assert torch.equal(quest_weight(W, QuestSpec(), keep=keep).W_hat, res.W_hat)


@pytest.mark.parametrize("sparse", [False, True])
def test_quest_linear_eval_equals_plain_linear_with_w_hat(sparse):
    lin = nn.Linear(256, 48)
    torch.nn.init.normal_(lin.weight, generator=_g(14))
    keep = (torch.rand(48, 256, generator=_g(15)) > 0.5) if sparse else None
    spec = QuestSpec(bits=4, hadamard_block=64)
    x = torch.randn(3, 7, 256, generator=_g(16))
    q = QuestLinear(lin, spec, keep).eval()
    W_hat = quest_weight(lin.weight.detach(), spec, keep).W_hat
    with torch.no_grad():
        torch.testing.assert_close(q(x), x @ W_hat.T + lin.bias, rtol=1e-5, atol=1e-4)
    assert q.weight is lin.weight


def test_quest_linear_training_trust_gradients_and_pruned_zeros():
    lin = nn.Linear(128, 32)
    keep = torch.rand(32, 128, generator=_g(17)) > 0.5
    q = QuestLinear(lin, QuestSpec(bits=4, activations=True, act_bits=4), keep).train()
    x = torch.randn(5, 128, generator=_g(18), requires_grad=True)
    q(x).square().sum().backward()
    assert torch.equal(lin.weight.grad[~keep], torch.zeros(int((~keep).sum())))
    assert lin.weight.grad[keep].abs().sum() > 0 and x.grad.abs().sum() > 0 and lin.bias.grad is not None
    # dense W4A4 through the rotation: gradients reach weights and inputs, output matches eval values
    dense = QuestLinear(nn.Linear(128, 32), QuestSpec(activations=True)).train()
    y = dense(x)
    y.sum().backward()
    with torch.no_grad():
        torch.testing.assert_close(y, dense.eval()(x), rtol=0, atol=0)
    assert dense.weight.grad.abs().sum() > 0


def test_quest_linear_forward_function_matches_module():
    W = torch.randn(16, 128, generator=_g(19))
    x = torch.randn(4, 128, generator=_g(20))
    y = quest_linear_forward(x, W, QuestSpec())
    torch.testing.assert_close(y, x @ quest_weight(W, QuestSpec()).W_hat.T, rtol=1e-5, atol=1e-4)
