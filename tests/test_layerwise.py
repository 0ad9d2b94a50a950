"""The layer-wise driver: a no-op step reproduces the model; statistics come from the unmodified layer."""

import pytest
import torch

from compress.errors import UserError
from compress.layerwise import run_layerwise
from compress.pipeline import prune_model
from prune.masks import satisfies_nm
from prune.stage import PruneConfig


def test_noop_step_reproduces_full_model_logits(tiny):
    ids = torch.randint(0, 128, (6, 20), generator=torch.Generator().manual_seed(1))
    ref = tiny(input_ids=ids).logits
    result = run_layerwise(tiny, list(ids.split(2)), lambda i, lin, st: {}, device=torch.device("cpu"), progress=False)
    logits = torch.cat([tiny.lm_head(tiny.model.norm(h)) for h in result.hidden])
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    assert len(result.metrics) == 2 * 7  # every Linear of both layers
    assert all(m["rel_output_error"] == 0.0 for m in result.metrics.values())


def test_statistics_come_from_the_dense_layer_inputs(tiny):
    """Layer 1's Wanda statistics must be computed from inputs produced by the *pruned* layer 0,
    and its own statistics from the layer before its weights change (sparsegpt llama_sequential)."""
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(2))
    seen = {}

    def step(idx, linears, stats):
        for name, s in stats.items():
            seen[name] = s.value.clone()
        for lin in linears.values():  # crude pruning so the next layer's inputs change
            lin.weight.data[:, ::2] = 0
        return {}

    from prune.stats import ActNormSq

    ref_model = __import__("copy").deepcopy(tiny)
    run_layerwise(
        tiny,
        [ids],
        step,
        device=torch.device("cpu"),
        make_stats=lambda n, lin: ActNormSq(lin.in_features, "cpu"),
        progress=False,
    )
    # Reference: layer 0 q_proj input from the dense model; layer 1 input after pruning layer 0 the same way.
    captured = {}
    layer0 = ref_model.model.layers[0]
    h = layer0.self_attn.q_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("q0", i[0]))
    ref_model(input_ids=ids)
    h.remove()
    expected0 = captured["q0"].pow(2).sum(dim=(0, 1)) / ids.shape[0]
    torch.testing.assert_close(seen["model.layers.0.self_attn.q_proj"], expected0, rtol=1e-5, atol=1e-6)
    for lin in layer0.modules():
        if isinstance(lin, torch.nn.Linear):
            lin.weight.data[:, ::2] = 0
    h = ref_model.model.layers[1].mlp.down_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("d1", i[0]))
    ref_model(input_ids=ids)
    h.remove()
    expected1 = captured["d1"].pow(2).sum(dim=(0, 1)) / ids.shape[0]
    torch.testing.assert_close(seen["model.layers.1.mlp.down_proj"], expected1, rtol=1e-5, atol=1e-6)


def test_prune_model_wanda_2of4_touches_only_decoder_linears(tiny):
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(3))
    head, embed = tiny.lm_head.weight.clone(), tiny.model.embed_tokens.weight.clone()
    result = prune_model(
        tiny,
        ids,
        PruneConfig("wanda", "2:4", ignore=(r".*\.1\.mlp\.down_proj",)),
        torch.device("cpu"),
        batch_size=2,
        progress=False,
    )
    assert torch.equal(tiny.lm_head.weight, head) and torch.equal(tiny.model.embed_tokens.weight, embed)
    assert "model.layers.1.mlp.down_proj" not in result.metrics
    assert not satisfies_nm(tiny.model.layers[1].mlp.down_proj.weight, 2, 4)
    for name, m in result.metrics.items():
        W = tiny.get_submodule(name).weight
        assert satisfies_nm(W, 2, 4) and m["sparsity"] == 0.5
        assert 0 < m["rel_output_error"] < 1


@pytest.mark.parametrize("pattern,sparsity", [("2:4", None), ("unstructured", 0.5)])
def test_nan_weight_stops_the_run_naming_the_linear(tiny, pattern, sparsity):
    """Unstructured Wanda used to exit 0 and export NaN weights; 2:4 failed later at export with another cause."""
    tiny.model.layers[1].self_attn.q_proj.weight.data[3, 5] = float("nan")
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(3))
    with pytest.raises(UserError, match=r"model\.layers\.1\.self_attn\.q_proj\.weight is not finite \(1 NaN"):
        prune_model(tiny, ids, PruneConfig("wanda", pattern, sparsity), torch.device("cpu"), progress=False)


def test_nan_activation_stops_the_run_naming_the_layer(tiny):
    tiny.model.layers[0].mlp.down_proj.weight.data[0, 0] = float("inf")  # layer 0's output overflows
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(3))
    with pytest.raises(UserError, match=r"not finite"):
        run_layerwise(tiny, [ids], lambda i, lin, st: {}, device=torch.device("cpu"), targets=lambda n, m: False,
                      progress=False)  # fmt: skip
    tiny.model.layers[0].mlp.down_proj.weight.data[0, 0] = 0.0
    tiny.model.embed_tokens.weight.data[ids[0, 0]] = float("nan")
    with pytest.raises(UserError, match=r"input of decoder layer 0 \(embedding output\) is not finite"):
        run_layerwise(tiny, [ids], lambda i, lin, st: {}, device=torch.device("cpu"), progress=False)
