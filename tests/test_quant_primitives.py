"""Quantizer primitives and packing: exact invariants (issue 15)."""

import pytest
import torch

from quant.pack import pack_bits, pack_int32, unpack_bits, unpack_int32
from quant.primitives import QuantSpec, dequantize, quant_params, quantize, rtn, sqnr_db


def _w(rows=16, cols=256, seed=0):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 7, 8])
def test_pack_bits_round_trips_at_every_width(bits):
    codes = torch.randint(0, 2**bits, (7, 13), generator=torch.Generator().manual_seed(bits), dtype=torch.int64)
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == (codes.numel() * bits + 7) // 8
    assert torch.equal(unpack_bits(packed, bits, (7, 13)), codes.to(torch.uint8))


def test_pack_bits_layout_is_little_endian():
    # 3-bit codes 5 (101), 3 (011): stream bits 1,0,1, 1,1,0 -> byte 0b00011101 = 29
    assert pack_bits(torch.tensor([5, 3]), 3).tolist() == [29]


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_pack_int32_round_trips_and_matches_the_word_layout(bits):
    codes = torch.randint(0, 2**bits, (5, 37), generator=torch.Generator().manual_seed(0), dtype=torch.int64)
    packed = pack_int32(codes, bits)
    assert packed.dtype == torch.int32 and packed.shape == (5, -(-37 // (32 // bits)))
    assert torch.equal(unpack_int32(packed, bits, 37), codes.to(torch.uint8))
    word = sum(int(codes[0, j]) << (bits * j) for j in range(32 // bits))
    assert int(packed[0, 0]) & 0xFFFFFFFF == word


def test_pack_refuses_codes_outside_the_width():
    with pytest.raises(ValueError, match=r"outside \[0, 7\] for 3 bits"):
        pack_bits(torch.tensor([8]), 3)
    with pytest.raises(ValueError, match="2-, 4- or 8-bit"):
        pack_int32(torch.zeros(1, 4, dtype=torch.int64), 3)


@pytest.mark.parametrize("strategy", ["tensor", "channel", "group"])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_rtn_error_is_at_most_half_a_step_and_codes_in_range(strategy, symmetric, bits):
    spec = QuantSpec(bits, strategy, 64, symmetric)
    W = _w()
    Wq, codes, scale, zero = rtn(W, spec)
    assert int(codes.max()) <= spec.maxq
    step = scale.repeat_interleave(W.shape[1] // scale.shape[1], 1) if strategy != "tensor" else scale
    assert bool(((W - Wq).abs() <= step / 2 + 1e-6).all())
    assert torch.equal(dequantize(quantize(W, scale, zero, spec), scale, zero, spec), Wq)


def test_exact_zeros_stay_zero_so_a_24_pattern_survives():
    W = _w()
    W.view(16, -1, 4)[..., :2] = 0  # 2:4 zeros
    for symmetric in (True, False):
        Wq = rtn(W, QuantSpec(3, "group", 32, symmetric))[0]
        assert bool((Wq[W == 0] == 0).all())  # every pruned entry is still exactly 0


def test_symmetric_matches_compressed_tensors_convention():
    # scale = max|x| / ((2^b - 1) / 2); signed codes round(x / scale) clamped to [-2^(b-1), 2^(b-1) - 1]
    W = _w(4, 128)
    spec = QuantSpec(4, "group", 128, True)
    scale, zero = quant_params(W, spec)
    assert torch.allclose(scale[:, 0], W.abs().amax(1) / 7.5)
    signed = quantize(W, scale, zero, spec).to(torch.int64) - 8
    expect = torch.clamp(torch.round(W / scale), -8, 7)
    assert torch.equal(signed.float(), expect)


def test_more_bits_and_smaller_groups_give_higher_sqnr():
    W = _w(64, 512)
    s = {b: sqnr_db(W, rtn(W, QuantSpec(b, "group", 128))[0]) for b in (2, 3, 4, 8)}
    assert s[2] < s[3] < s[4] < s[8]
    assert sqnr_db(W, rtn(W, QuantSpec(3, "group", 32))[0]) > sqnr_db(W, rtn(W, QuantSpec(3, "channel"))[0])
    assert sqnr_db(W, W) == float("inf")


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"bits": 5}, "bits 5 is not supported"),
        ({"strategy": "row"}, "strategy 'row' is unknown"),
        ({"group_size": 0}, "group_size must be a positive integer"),
    ],
)
def test_bad_specs_are_one_line_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        QuantSpec(**kw)


def test_group_size_not_dividing_in_features_names_both():
    with pytest.raises(ValueError, match="group_size 128 does not divide in-features 200"):
        rtn(_w(4, 200), QuantSpec(4, "group", 128))


@pytest.mark.parametrize("bits", [4, 8])
def test_pack_int32_equals_compressed_tensors_pack_quantized(bits):
    """Our unsigned codes (zero point 2^(b-1)) packed equal compressed-tensors' packing of the signed codes."""
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    signed = torch.randint(-(2 ** (bits - 1)), 2 ** (bits - 1), (5, 64), generator=torch.Generator().manual_seed(0))
    theirs = helpers.pack_to_int32(signed.to(torch.int8), bits)
    assert torch.equal(pack_int32(signed + 2 ** (bits - 1), bits), theirs)
