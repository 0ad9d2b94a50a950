"""The quant stage (quant/stage.py): recipe schema and bad input, records that decode exactly to the model's
weights, 2:4 zeros kept, GPTQ through the layer-wise driver on several architectures, resume."""

import pytest
import torch

from compress.config import recipe_from_dict
from compress.errors import Interrupted, UserError
from compress.layerwise import run_layerwise_stage
from compress.pipeline import prune_model
from compress.records import check_weight_matches
from compress.resume import LayerwiseCheckpoint
from compress.stages import StageContext, kind_of
from prune.config import NM
from prune.masks import satisfies_nm
from prune.stage import PruneConfig
from quant.stage import DirectQuantStage, LayerwiseQuantStage, QuantConfig
from tests.conftest import tiny_llama
from tests.test_layerwise_architectures import make

CPU = torch.device("cpu")


def _ids(n=4, t=32, seed=0):
    return torch.randint(0, 128, (n, t), generator=torch.Generator().manual_seed(seed))


def _quantize(model, cfg, records=None, ids=None, checkpoint=None):
    records = {} if records is None else records
    ids = _ids() if ids is None else ids
    stage = kind_of(cfg).runner(cfg, StageContext(model, None, CPU, ids, records, progress=False))
    if isinstance(stage, DirectQuantStage):
        return stage.run(), records
    res = run_layerwise_stage(stage, model, ids, device=CPU, records=records, progress=False, checkpoint=checkpoint)
    return res, records


def _check_records(model, records):
    for name, module in model.named_modules():
        if name in records:
            check_weight_matches(name, module.weight, records[name])


@pytest.mark.parametrize(
    "stages, message",
    [
        ([{"quant": {"bits": 5}}], "quant bits 5 is not supported; choose one of 2, 3, 4, 8"),
        ([{"quant": {"method": "awq"}}], "quant.method 'awq' is unknown; allowed: rtn, gptq"),
        ([{"quant": {"strategy": "row"}}], "quant strategy 'row' is unknown"),
        ([{"quant": {"group_size": 48, "blocksize": 128}}], "blocksize 128 must be a positive multiple of group_size"),
        ([{"quant": {}}, {"quant": {}}], "a recipe quantizes once"),
        (
            [{"prune": {"method": "sparsegpt"}}, {"quant": {}}, {"finetune": {"method": "ast"}}],
            "finetune after quant would train the quantized weights off their grid",
        ),
        ([{"quant": {"bitz": 4}}], "unknown key 'stages[0].quant.bitz'"),
    ],
)
def test_bad_quant_recipes_name_the_problem(stages, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        recipe_from_dict({"stages": stages})


def test_the_runner_follows_the_method():
    assert kind_of(QuantConfig("rtn")).name == "quant"
    ctx = StageContext(tiny_llama(), None, CPU, None, {})
    assert isinstance(kind_of(QuantConfig()).runner(QuantConfig("rtn"), ctx), DirectQuantStage)
    assert isinstance(kind_of(QuantConfig()).runner(QuantConfig("gptq"), ctx), LayerwiseQuantStage)


def test_a_group_size_that_does_not_divide_in_features_is_refused_before_any_work():
    model = tiny_llama()  # in-features 64 and 128
    for method in ("rtn", "gptq"):
        stage = kind_of(QuantConfig()).runner(
            QuantConfig(method, group_size=96, blocksize=96), StageContext(model, None, CPU, None, {})
        )
        with pytest.raises(UserError, match=r"model.layers.0.self_attn.q_proj has 64 in-features, not divisible by "):
            stage.precheck(model)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_quantized_weights_are_exactly_what_the_records_decode_to(arch, method):
    model = make(arch, "eager")
    dense = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    _, records = _quantize(model, QuantConfig(method, 3, group_size=32))
    assert records and all(r.quant is not None and r.quant.spec.bits == 3 for r in records.values())
    _check_records(model, records)
    for name, rec in records.items():
        W = dict(model.named_modules())[name].weight
        assert not torch.equal(W, dense[name])  # it did change
        assert int(rec.quant.codes.max()) <= 7
        # 3 bits, groups of 32: at most 8 distinct values per group
        groups = W.detach().reshape(W.shape[0], -1, 32)
        assert max(len(torch.unique(g)) for g in groups.reshape(-1, 32)) <= 8
    assert "lm_head" not in records


def test_gptq_output_error_is_below_rtns_on_a_tiny_llama():
    """On held-out tokens, with enough calibration tokens (1024) for the 64- and 128-column Hessians."""
    errors = {}
    for method in ("rtn", "gptq"):
        model = tiny_llama(layers=2)
        base = tiny_llama(layers=2)
        _quantize(model, QuantConfig(method, 3, group_size=32), ids=_ids(16, 64, seed=5))
        ids = _ids(8, 32, seed=3)
        with torch.no_grad():
            errors[method] = float((model(ids).logits - base(ids).logits).pow(2).mean())
    assert errors["gptq"] < errors["rtn"]


@pytest.mark.parametrize("method", ["rtn", "gptq", "quest", "squeezellm"])
def test_a_pruned_layer_keeps_exactly_its_zeros(method):
    model = tiny_llama()
    records = prune_model(model, _ids(), PruneConfig("sparsegpt", "2:4"), CPU, progress=False).records
    masks = {n: r.mask.clone() for n, r in records.items()}
    _quantize(model, QuantConfig(method, 4, group_size=32, hadamard_block=32), records)
    _check_records(model, records)
    for name, module in model.named_modules():
        if name in masks:
            assert torch.equal(module.weight != 0, (module.weight != 0) & masks[name])
            assert satisfies_nm(module.weight, 2, 4)
            assert records[name].pattern == NM(2, 4) and torch.equal(records[name].mask, masks[name])


def test_quant_records_survive_a_resumed_run(tmp_path):
    ids = _ids()
    cfg = QuantConfig("gptq", 4, group_size=32)
    expected_model = tiny_llama(layers=3)
    _, expected = _quantize(expected_model, cfg, ids=ids)
    original = LayerwiseQuantStage.step

    def interrupted(self, idx, linears, stats):
        if idx == 2:
            raise KeyboardInterrupt
        return original(self, idx, linears, stats)

    LayerwiseQuantStage.step = interrupted
    try:
        with pytest.raises(Interrupted):
            _quantize(tiny_llama(layers=3), cfg, ids=ids, checkpoint=LayerwiseCheckpoint(tmp_path / "w", "k", 1e9))
    finally:
        LayerwiseQuantStage.step = original
    ckpt = LayerwiseCheckpoint(tmp_path / "w", "k", every_s=0)
    assert ckpt.next_layer == 2
    model = tiny_llama(layers=3)
    _, got = _quantize(model, cfg, ids=ids, checkpoint=ckpt)
    assert got.keys() == expected.keys()
    for name, rec in expected.items():
        g = got[name].quant
        assert torch.equal(g.packed, rec.quant.packed) and torch.equal(g.scale, rec.quant.scale)
        assert g.spec == rec.quant.spec
    _check_records(model, got)
    for (n, a), b in zip(model.state_dict().items(), expected_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), n


def test_a_non_finite_activation_stops_with_the_layer_name():
    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[0].post_attention_layernorm.weight[0] = float("inf")
    with pytest.raises(UserError, match=r"model.layers.0"):
        _quantize(model, QuantConfig("gptq", 4, group_size=32))


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_quest_records_decode_to_the_rotated_quantized_weights(arch):
    """QuEST on dense layers: codes live in the Hadamard basis; the model keeps the rotation folded back, so a
    plain Linear computes fwht(x) . Q(fwht(W))^T, and the record decodes to exactly that weight."""
    from quant.hadamard import fwht

    model = make(arch, "eager")
    dense = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    _, records = _quantize(model, QuantConfig("quest", 4, hadamard_block=32))
    _check_records(model, records)
    name = "model.layers.0.mlp.down_proj"
    rec, W = records[name].quant, dict(model.named_modules())[name].weight.detach()
    assert rec.block == 32 and rec.scale.shape == (W.shape[0], 1)
    rotated = fwht(W.float(), 32)  # back in the basis the codes were taken in: at most 16 levels per row
    assert max(len(torch.unique(r.round(decimals=5))) for r in rotated) <= 16
    # relative error near the 4-bit optimal-clip Gaussian figure sqrt(0.0115) = 0.107 (tests/test_quest.py)
    rel = float((W.float() - dense[name].float()).norm() / dense[name].float().norm())
    assert 0.05 < rel < 0.15


def test_quest_hadamard_block_that_does_not_divide_is_refused():
    model = tiny_llama()
    stage = kind_of(QuantConfig()).runner(
        QuantConfig("quest", hadamard_block=128), StageContext(model, None, CPU, None, {})
    )
    with pytest.raises(UserError, match=r"q_proj: hadamard_block 128 does not divide in-features 64"):
        stage.precheck(model)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("outliers", [0.0, 0.01])
def test_squeezellm_records_decode_to_the_weights_with_at_most_2b_dense_values_per_row(arch, outliers):
    model = make(arch, "eager")
    cfg = QuantConfig("squeezellm", 3, outlier_fraction=outliers, sensitive_fraction=outliers / 10, fisher_samples=2)
    out, records = _quantize(model, cfg)
    assert set(out["timings_s"]) == {"fisher_s", "quantize_s"}
    _check_records(model, records)
    for name, rec in records.items():
        q = rec.quant
        W = dict(model.named_modules())[name].weight.detach()
        assert q.lut.shape == (W.shape[0], 8) and q.lut.dtype == torch.float16
        assert q.values.numel() == (0 if outliers == 0 else q.values.numel()) and (outliers == 0) == (
            q.values.numel() == 0
        )
        dense_part = torch.ones_like(W, dtype=torch.bool)
        rows = torch.repeat_interleave(torch.arange(W.shape[0]), q.crow.diff())
        dense_part[rows, q.col] = False
        for r in range(W.shape[0]):  # the dense part of each row takes only its table's 8 values
            assert set(W[r][dense_part[r]].tolist()) <= set(q.lut[r].float().tolist())


def test_squeezellm_fisher_of_a_non_finite_model_stops_with_the_linear_name():
    model = tiny_llama()
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(UserError, match=r"non-finite gradient for model.layers.\d.*window 0"):
        _quantize(model, QuantConfig("squeezellm", 4, fisher_samples=1))


def test_joint_gptq_chooses_2of4_in_the_sweep_and_records_it(tmp_path):
    """quant.pattern '2:4': sparsegpt's joint prune + quantize; the chosen masks land in the records, the weights
    are exactly 2:4 and on the grid, and the export carries the 2:4 structure."""
    import json

    from compress.records import with_pattern
    from tests.test_quant_checkpoint import _export_and_load

    model = tiny_llama()
    _, records = _quantize(model, QuantConfig("gptq", 4, group_size=32, pattern="2:4"))
    assert len(with_pattern(records, NM(2, 4))) == 14
    _check_records(model, records)  # codes decode to the weight, nothing nonzero outside the mask
    for name, r in records.items():
        assert satisfies_nm(model.get_submodule(name).weight.detach(), 2, 4), name
        assert int(r.mask.sum()) == r.mask.numel() // 2, name  # exactly 2 kept of every 4
    out, loaded = _export_and_load(tmp_path, model, records, torch.float32)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["sparsity_config"]["sparsity_structure"] == "2:4"
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in model.state_dict().items())


def test_joint_gptq_pattern_is_refused_where_it_cannot_apply():
    with pytest.raises(ValueError, match="quant.pattern .* needs method gptq, not rtn"):
        QuantConfig("rtn", 4, pattern="2:4")
    with pytest.raises(ValueError, match="is not N:M"):
        QuantConfig("gptq", 4, pattern="unstructured")
    with pytest.raises(ValueError, match=r"stages\[1\].quant: quant.pattern chooses the mask while quantizing"):
        recipe_from_dict({"stages": [{"prune": {"pattern": "2:4"}}, {"quant": {"method": "gptq", "pattern": "2:4"}}]})
    pruned = tiny_llama()
    records = prune_model(pruned, _ids(), PruneConfig("wanda", "2:4"), CPU, progress=False).records
    with pytest.raises(UserError, match="already pruned .* drop quant.pattern"):
        _quantize(pruned, QuantConfig("gptq", 4, group_size=32, pattern="2:4"), records)
