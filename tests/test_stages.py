"""Recipes as ordered stages; the per-Linear record travels from stage to export; true-sequential order; records
survive a resumed run."""

import json

import pytest
import torch
from safetensors.torch import load_file

from compress.config import Recipe, RunConfig, recipe_from_dict, to_dict
from compress.errors import Interrupted, UserError
from compress.export import unpack_bitmask
from compress.layerwise import forward_groups
from compress.models import decoder_layers
from compress.pipeline import prune_model, run
from compress.records import LinearRecord, check_weight_matches
from compress.resume import LayerwiseCheckpoint
from compress.stages import stage_kinds
from prune.config import NM, Unstructured
from prune.stage import PruneConfig, PruneStage
from tests.conftest import tiny_llama
from tests.test_layerwise_architectures import make

CPU = torch.device("cpu")


@pytest.fixture
def tiny_folder(tmp_path):
    from tests.recipe_checkpoints import tiny_folder as write

    return write(tmp_path / "tiny")


def _ids(n=4, t=32, seed=0):
    return torch.randint(0, 128, (n, t), generator=torch.Generator().manual_seed(seed))


def test_stages_parse_in_order_and_round_trip():
    r = recipe_from_dict(
        {"stages": [{"prune": {"method": "wanda", "pattern": "unstructured", "sparsity": 0.3}}, {"prune": {}}]}
    )
    assert [type(s) for s in r.stages] == [PruneConfig, PruneConfig]
    assert r.stages[0].sparsity == 0.3 and r.stages[1].pattern == "2:4"
    d = to_dict(r)
    assert [list(s) for s in d["stages"]] == [["prune"], ["prune"]]
    assert recipe_from_dict(d) == r
    assert recipe_from_dict({"prune": {"method": "sparsegpt"}}).stages == (PruneConfig("sparsegpt"),)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"stages": [{"prun": {}}]}, "stages[0]: unknown stage kind 'prun'; allowed: prune"),
        ({"stages": [{"prune": {}, "x": {}}]}, "stages[0] must be a mapping with one key"),
        ({"stages": {"prune": {}}}, "stages must be a list of one-key mappings"),
        ({"stages": [{"prune": {}}, {"prune": {"methd": "wanda"}}]}, "unknown key 'stages[1].prune.methd'; allowed:"),
        ({"stages": [{"prune": {"method": "obs"}}]}, "stages[0].prune.method 'obs' is unknown"),
        ({"stages": [{"prune": {"method": 3}}]}, "stages[0].prune.method must be a string"),
        ({"stages": [], "prune": {}}, "either stages: [...] or the older top-level prune"),
    ],
)
def test_bad_stages_name_the_place_and_the_allowed_values(data, message):
    with pytest.raises(ValueError) as e:
        recipe_from_dict(data)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_every_kind_has_a_frozen_schema():
    for kind in stage_kinds().values():
        cfg = kind.config()
        with pytest.raises(AttributeError):
            cfg.__setattr__(next(iter(vars(cfg))), None)


def test_prune_records_the_masks_it_applies(tiny):
    result = prune_model(tiny, _ids(), PruneConfig("wanda", "2:4"), CPU, progress=False)
    assert set(result.records) == set(result.metrics) and len(result.records) == 14
    for name, module in tiny.named_modules():
        if name in result.records:
            rec = result.records[name]
            assert rec.pattern == NM(2, 4)
            keep = rec.mask
            assert bool((keep.reshape(keep.shape[0], -1, 4).sum(-1) == 2).all())
            assert torch.equal(module.weight != 0, keep)  # random weights: no kept value is exactly zero


def test_stages_compose_in_order_and_the_last_record_reaches_export(tmp_path, tiny_folder):
    """Unstructured 30% then 2:4: the second stage's record (2:4) is what the export encodes, bit for bit."""
    recipe = recipe_from_dict(
        {
            "calibration": {"nsamples": 4, "seqlen": 32},
            "stages": [{"prune": {"pattern": "unstructured", "sparsity": 0.3}}, {"prune": {"pattern": "2:4"}}],
            "eval": {"perplexity": []},
        }
    )
    report = run(RunConfig(str(tiny_folder), recipe, device="cpu"), tmp_path / "out", progress=False, log=lambda m: 0)
    assert [s["kind"] for s in report["stages"]] == ["prune", "prune"]
    assert set(report["timings_s"]) >= {"prune", "prune_1"}
    assert {k: report["export"][k] for k in ("format", "compressed_modules")} == {
        "format": "sparse-24-bitmask",
        "compressed_modules": 14,
    }
    assert report["export"]["size_mb"] > 0
    tensors = load_file(tmp_path / "out" / "model.safetensors")
    keep = unpack_bitmask(tensors["model.layers.0.mlp.down_proj.bitmask"], (64, 128))
    assert bool((keep.reshape(64, 32, 4).sum(-1) == 2).all())
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["quantization_config"]["sparsity_config"]["sparsity_structure"] == "2:4"


def test_export_writes_the_recorded_mask_even_where_a_kept_weight_is_zero(tmp_path):
    from compress.export import save_checkpoint

    model = tiny_llama()
    lin = decoder_layers(model)[0].mlp.down_proj
    W = lin.weight.data
    keep = torch.zeros_like(W, dtype=torch.bool)
    keep[:, 2::4] = keep[:, 3::4] = True  # keep positions 2, 3 of every group
    W.mul_(keep)
    W[0, 2] = 0.0  # a kept weight that happens to be zero: the zeros alone would keep positions 0 and 3
    out = save_checkpoint(model, None, tmp_path / "c", masks_24={"model.layers.0.mlp.down_proj": keep})
    got = unpack_bitmask(load_file(out / "model.safetensors")["model.layers.0.mlp.down_proj.bitmask"], W.shape)
    assert torch.equal(got, keep)


def test_a_weight_that_disagrees_with_its_record_is_refused(tmp_path):
    from compress.export import save_checkpoint

    model = tiny_llama()
    lin = decoder_layers(model)[0].mlp.down_proj
    keep = torch.zeros_like(lin.weight, dtype=torch.bool)
    keep[:, 0::4] = keep[:, 1::4] = True  # the weight is dense: positions 2, 3 are nonzero
    with pytest.raises(UserError, match="down_proj: weight has nonzeros outside its 2:4 keep-mask"):
        save_checkpoint(model, None, tmp_path / "c", masks_24={"model.layers.0.mlp.down_proj": keep})
    assert not (tmp_path / "c").exists()
    rec = LinearRecord(tuple(lin.weight.shape))
    rec.set_mask(NM(2, 4), keep)
    with pytest.raises(ValueError, match="weights outside its recorded 2:4 keep-mask are nonzero"):
        check_weight_matches("down_proj", lin.weight, rec)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_forward_groups_follow_the_forward_order(arch):
    model = make(arch, "eager")
    layer = decoder_layers(model)[0]
    linears = {n: m for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}
    ids = _ids(1, 16)
    calls = {}

    def capture(module, args, kwargs):
        calls["args"], calls["kwargs"] = args, kwargs

    h = layer.register_forward_pre_hook(capture, with_kwargs=True)
    model(ids, use_cache=False)
    h.remove()
    groups = forward_groups(layer, linears, lambda: layer(*calls["args"], **calls["kwargs"]))
    short = [sorted(n.split(".")[-1] for n in g) for g in groups]
    assert short == [["k_proj", "q_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]


def test_true_sequential_calibrates_later_groups_on_pruned_inputs():
    ids = _ids()
    plain, seq = tiny_llama(), tiny_llama()
    prune_model(plain, ids, PruneConfig("sparsegpt", "2:4"), CPU, progress=False)
    prune_model(seq, ids, PruneConfig("sparsegpt", "2:4", true_sequential=True), CPU, progress=False)
    a, b = plain.state_dict(), seq.state_dict()
    for proj in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):  # first group: same inputs
        assert torch.equal(a[f"model.layers.0.{proj}.weight"], b[f"model.layers.0.{proj}.weight"])
    for proj in ("self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"):  # later groups see pruned inputs
        assert not torch.equal(a[f"model.layers.0.{proj}.weight"], b[f"model.layers.0.{proj}.weight"])


def test_records_survive_a_resumed_run(tmp_path):
    ids = _ids()
    expected = prune_model(tiny_llama(layers=3), ids, PruneConfig("wanda", "2:4"), CPU, progress=False).records
    original = PruneStage.step

    def interrupted(self, idx, linears, stats):
        if idx == 2:
            raise KeyboardInterrupt
        return original(self, idx, linears, stats)

    PruneStage.step = interrupted
    try:
        with pytest.raises(Interrupted):
            ckpt = LayerwiseCheckpoint(tmp_path / "w", "k", every_s=1e9)
            prune_model(tiny_llama(layers=3), ids, PruneConfig("wanda", "2:4"), CPU, progress=False, checkpoint=ckpt)
    finally:
        PruneStage.step = original
    ckpt = LayerwiseCheckpoint(tmp_path / "w", "k", every_s=0)
    assert ckpt.next_layer == 2
    got = prune_model(tiny_llama(layers=3), ids, PruneConfig("wanda", "2:4"), CPU, progress=False, checkpoint=ckpt)
    assert got.records.keys() == expected.keys()
    for name, rec in expected.items():
        assert torch.equal(got.records[name].keep_bits, rec.keep_bits) and got.records[name].pattern == rec.pattern


def test_unstructured_records_carry_their_pattern(tiny):
    result = prune_model(tiny, _ids(), PruneConfig("wanda", "unstructured", 0.5), CPU, progress=False)
    assert {r.pattern for r in result.records.values()} == {Unstructured(0.5)}


def test_recipe_rejects_objects_that_are_no_stage_config():
    with pytest.raises(TypeError, match="no stage kind registered for dict"):
        Recipe(stages=({"prune": {}},))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_linears_fed_one_input_share_statistics_equal_to_their_own(arch):
    """q/k/v (and gate/up) share one Hessian (compress/layerwise.py SharedInputs); it equals the Hessian each
    would have accumulated alone, bit for bit."""
    from compress.layerwise import run_layerwise
    from prune.stats import Hessian

    model = make(arch, "eager")
    ids = [_ids(1, 16, seed=s) for s in range(3)]
    seen = {}

    def step(idx, linears, stats):
        if idx == 0:
            seen.update(stats)
        return {}

    run_layerwise(model, ids, step, device=CPU, make_stats=lambda n, m: Hessian(m.in_features, CPU), progress=False)
    short = {n.split(".")[-1]: s for n, s in seen.items()}
    assert short["q_proj"] is short["k_proj"] is short["v_proj"] and short["gate_proj"] is short["up_proj"]
    assert len({id(s) for s in short.values()}) == 4 and short["q_proj"].nsamples == 3

    # reference: every Linear's own accumulator, fed by plain hooks on the dense layer-0 inputs
    fresh = make(arch, "eager")
    layer = decoder_layers(fresh)[0]
    own = {n: Hessian(m.in_features, CPU) for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, n=n: own[n].add_batch(inp[0].detach()))
        for n, m in layer.named_modules()
        if n in own
    ]
    for x in ids:
        fresh(x, use_cache=False)
    for h in hooks:
        h.remove()
    for n, s in own.items():
        assert torch.equal(short[n.split(".")[-1]].H, s.H), n
