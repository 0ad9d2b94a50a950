"""Figures the benchmark renderers compute from the JSON (not typed into prose)."""

import math

import pytest

from bench.render.finetune import tokens_to_reach


def test_tokens_to_reach_recovers_an_exact_power_law():
    # ppl = 20 + 100 * T^-0.5: the excess over 20 reaches 10 at T = 100; fit on the points inside the window only
    curve = [[t, 20 + 100 * t**-0.5] for t in (1, 100, 144, 196, 256, 400)]
    curve[0][1] = 1e6  # a warm-up transient outside the window must not enter the fit
    t, slope = tokens_to_reach(curve, 30.0, floor=20.0)
    assert math.isclose(slope, -0.5, rel_tol=1e-9) and math.isclose(t, 100.0, rel_tol=1e-9)


def test_tokens_to_reach_refuses_too_few_points_or_a_rising_curve():
    assert tokens_to_reach([[1, 50.0], [100, 40.0], [200, 35.0]], 30.0) is None  # one point in the window
    assert tokens_to_reach([[t, 10.0 + t] for t in (30, 40, 50, 60, 100)], 5.0) is None


def _qv(**ppl):
    """Synthetic bench/quant.py variants: key -> wiki ppl (keys with '__' for '/', '_p_' for '+')."""
    return {
        k.replace("__", "/").replace("_p_", "+"): {"wiki_ppl": p, "size_mb": 100.0, "quant_s": 1.0}
        for k, p in ppl.items()
    }


def test_quant_goals_are_computed_from_the_figures():
    from bench.render.quant import goals

    v = _qv(dense=20.0, rtn__w3g64=200.0, gptq__w3g64=100.0, squeezellm_dense_sparse__w3=120.0)
    g = goals(v)
    assert "55.6%" in g[0] and g[0].endswith("reached.") and "not reached" not in g[0]  # (200-100)/(200-20)
    assert "120.00" not in g[1] and "120.0" in g[1] and "not reached" in g[1]  # 120 > 100
    v["gptq/w3g64"]["wiki_ppl"] = 180.0  # closes 11.1%
    assert "11.1%" in goals(v)[0] and "not reached" in goals(v)[0]


def test_quant_missing_cells_are_dashes_and_missing_recovery_is_not_measured():
    from bench.render.quant import goals, quant

    v = _qv(dense=20.0, rtn__w4g64=30.0, quest__w3=50.0, sparsegpt2of4=90.0)
    v.update(_qv(sparsegpt2of4_p_gptq__w4g64=100.0, sparsegpt2of4_p_rtn__w4g64=110.0))
    for e in v.values():
        e.update(device="cpu", dtype="torch.float32", calibration={"nsamples": 4, "seqlen": 8}, eval_max_windows=2)
    lines = quant(None, {"variants": v, "run": {"machine": "test"}})
    assert "| RTN | 30.00 (100 MB) | — |" in lines  # rtn has no w3 (per row) cell
    assert "| QuEST | — | 50.00 (100 MB) |" in lines
    c = goals(v)[2]
    assert "100.0 vs 110.0, reached" in c and c.endswith("recovery not measured.")
    v["sparsegpt2of4+gptq/w4g64"]["recovery"], v["sparsegpt2of4+rtn/w4g64"]["recovery"] = 0.5, 0.6
    assert "recovery 0.500 vs 0.600: not reached" in goals(v)[2]
    assert all("not measured" in x for x in goals(v)[:2])  # no w3g64 figures


def test_quant_gptqmodel_parity_relative_difference():
    from bench.render.quant import parity

    p = {"ours_wiki_ppl": 30.3, "gptqmodel_wiki_ppl": 30.0, "settings": {"bits": 4}, "commands": ["a", "b"]}
    assert any("| +1.00% | yes |" in x for x in parity(p, "CPU"))  # at the edge: float slack
    lines = parity(p | {"ours_wiki_ppl": 31.2, "ours_hessian_sum_wiki_ppl": 30.003}, "CPU")
    assert any("| +4.00% | no |" in x for x in lines) and any("| +0.01% | yes |" in x for x in lines)


def test_recovery_standard_error_and_int4_codes_ratio_skip_eager_runs():
    from bench.int4_codes import ratios
    from bench.render.quant import _recovery_se, int4_codes

    dense = {"hellaswag": {"acc_norm": 0.45}, "arc_easy": {"acc": 0.55}, "piqa": {"acc": 0.70}}
    half = {"hellaswag": {"acc_norm": 0.35}, "arc_easy": {"acc": 0.40}, "piqa": {"acc": 0.60}}
    expect = ((0.35 * 0.65 / 10042) / 0.2**2 + (0.4 * 0.6 / 570) / 0.3**2 + (0.6 * 0.4 / 1838) / 0.2**2) ** 0.5 / 3
    assert abs(_recovery_se(half, dense) - expect) < 1e-12
    d = {
        "decode_tok_s": {"batch1": {"rtn": [100.0, 5.0], "gptq": [98.0, 102.0]}},
        "decode_mode": {"batch1": {"rtn": ["cuda-graph", "eager"], "gptq": ["cuda-graph", "cuda-graph"]}},
    }
    d["ratio_gptq_over_rtn"] = ratios(d)
    assert d["ratio_gptq_over_rtn"] == {"batch1": 1.0}  # the eager (capture failed) run is left out
    d |= {"run": {"command": "c", "date": "today"}, "device": "GPU", "layers": 2}
    text = "\n".join(int4_codes(d))
    assert "5.0 (eager: capture failed)" in text and "| 1.000 |" in text


def test_uncontended_timings_take_the_lone_build_and_mark_the_rest():
    from bench.quant import uncontended_timings
    from bench.render.quant import _time_cell

    lone = {"time_s": {"quant": 40.0}, "quant_s": 40.0, "command": "c0", "date": "d0", "wiki_ppl": 38.0}
    alone = {"gptq/w4g64": lone | {"base": "dense", "method": "gptq", "grid": "w4g64"}}
    new = {
        k: {"time_s": {"quant": 66.0}, "quant_s": 66.0, "score_workers": 4, "wiki_ppl": 38.0}
        | {"base": "dense", "method": "gptq", "grid": g}
        for k, g in (("gptq/w4g64", "w4g64"), ("gptq/w4g32", "w4g32"))
    }
    new["plain"] = {"time_s": {}, "quant_s": 2.0}  # built alone already: untouched
    assert uncontended_timings(new, alone) == 1
    e = new["gptq/w4g64"]
    assert e["quant_s"] == 40.0 and e["time_s"] == {"quant": 40.0} and e["time_s_beside_scoring"] == {"quant": 66.0}
    assert e["timing_source"] == {"command": "c0", "date": "d0", "wiki_ppl": 38.0}
    assert uncontended_timings(new, alone) == 0  # idempotent
    assert _time_cell(e) == "40.0" and _time_cell(new["gptq/w4g32"]) == "66.0\\*" and _time_cell(None) == "—"
    alone["gptq/w4g32"] = dict(alone["gptq/w4g64"], grid="w4g64")  # another recipe under the same key: refused
    assert uncontended_timings(new, alone) == 0


def test_recovery_tables_carry_the_standard_error_and_list_the_unscored():
    from bench.render.quant import _recovery_se, recoveries

    dense = {"hellaswag": {"acc_norm": 0.45}, "arc_easy": {"acc": 0.55}, "piqa": {"acc": 0.70}}
    half = {"hellaswag": {"acc_norm": 0.35}, "arc_easy": {"acc": 0.40}, "piqa": {"acc": 0.60}}
    v = _qv(dense=20.0, rtn__w4g64=30.0, gptq__w4g64=31.0)
    v["dense"] |= {"_scores": dense, "recovery": 1.0}
    v["rtn/w4g64"] |= {"_scores": half, "recovery": 0.5}
    text = "\n".join(recoveries(v))
    assert f"| RTN | 0.500 ± {_recovery_se(half, dense):.3f} |" in text
    assert "GPTQ" not in text.split("Task scores")[0]  # no scored GPTQ variant: no row
    assert "Not scored: gptq/w4g64." in text
    assert recoveries(_qv(dense=20.0)) == []


def test_user_path_decode_rate_and_table():
    from bench.render.runtime import user_path
    from bench.user_path import decode_rate

    assert decode_rate(4, 16, 80, 1000.0, 3000.0) == 4 * 64 / 2.0  # the extra tokens over the extra time
    with pytest.raises(ValueError, match="must outlast"):
        decode_rate(1, 16, 80, 3000.0, 2000.0)
    up = {
        "layers": 2, "context": 128, "short_long": [16, 80], "run": {"command": "c"},
        "decode_tok_s": {"batch1": {"dense": 100.0, "ours_2of4": 150.0}},
        "prefill_ms": {"eager": {"dense": 60.0, "ours_2of4": 40.0, "ours_int4_2of4": 50.0}},
        "memory_gib": {"dense": 10.0, "ours_2of4": 5.6},
    }  # fmt: skip
    text = "\n".join(user_path({"user_path": up}))
    assert "| decode tok/s, compiled (transformers' own), batch 1 | 100.0 | 150.0 (1.50×) | — |" in text
    assert "| prefill 2048 ms, eager | 60.0 | 40.0 (1.50×) | 50.0 (1.20×) |" in text
    assert "| weights + buffers GiB | 10.00 | 5.60 (0.56×) | — |" in text
    assert user_path({}) == []


def test_user_path_variant_does_not_inherit_the_dense_models_compiled_generate():
    """transformers keeps generate's compiled forward on the instance (`_compiled_call`); a 2:4 copy made after
    the dense model's compiled generate must compile its own, not run the dense graph (the bug that voided the
    2026-12-02 compiled-generate figures)."""
    import torch

    from bench.user_path import build, linear_gib, variant

    dense = build(1, torch.device("cpu"), tiny=True)
    dense._compiled_call, dense._last_compile_config = dense.__call__, object()  # as after a compiled generate
    ours = variant(dense, "ours_2of4")
    assert "_compiled_call" not in ours.__dict__ and "_last_compile_config" not in ours.__dict__
    assert ours.model.layers[0].mlp.down_proj.__class__.__name__ == "Sparse24Linear"
    assert 0.5 < linear_gib(ours) / linear_gib(dense) < 0.6  # fp32 values + positions: (4 * 0.5 + 1/8) / 4
