"""Foundation (issue #2): SmolLM2-135M perplexity after pruning; Wanda 2:4 on a Llama-2-7B-shaped model."""

from __future__ import annotations

ROWS = [
    ("dense", "dense"),
    ("magnitude_50", "magnitude 50%"),
    ("magnitude_2of4", "magnitude 2:4"),
    ("wanda_50", "Wanda 50%"),
    ("wanda_4of8", "Wanda 4:8"),
    ("wanda_2of4", "Wanda 2:4"),
]


def _numerics(run: dict) -> str:
    """' CPU numerics: pinned (AVX2 code paths).' from a run's meta; runs before 2026-12-01 recorded none (native)."""
    cn = run.get("cpu_numerics")
    if cn is None:
        return " CPU numerics: native (not recorded; before the pinning)."
    pinned = cn.get("MKL_CBWR") and cn.get("LLM_COMPRESS_CPU_NUMERICS") != "native"
    return f" CPU numerics: {'pinned' if pinned else 'native'} (ATen {cn.get('aten')})."


def smollm2(d: dict, title: str) -> list[str]:
    run, cal, ev, t = d["runs"]["smollm2"], d["calibration"], d["smollm2_eval"], d["smollm2_timings"]
    numerics = _numerics(run) if cal["device"] == "cpu" else ""
    lines = [
        f"### {title}",
        "",
        f"Command: `{run['command']}` — machine: {run['machine']} — date: {run['date']}.{numerics}",
        f"Calibration: {cal['nsamples']} × {cal['seqlen']} tokens of `{cal['dataset']}` (seed 0) on "
        f"{cal['device']}. Perplexity: embedded `wiki` (SQuAD Wikipedia paragraphs), {ev['windows']} windows "
        f"of {ev['seqlen']} tokens, model in {ev['dtype']}.",
        "",
        "| model | wiki ppl | prune time (s) |",
        "|---|---:|---:|",
    ]
    for key, label in ROWS:
        prune = t.get(f"prune_{key}_s")
        lines.append(f"| {label} | {d['smollm2_wiki_ppl'][key]:.2f} | {'' if prune is None else f'{prune:.1f}'} |")
    lines += [
        "",
        f"Load (GGUF, dequantised) {t['load_model_s']:.1f} s; calibration sampling "
        f"{t['calibration_data_s']:.1f} s; one perplexity pass {t['eval_s']:.1f} s.",
        "",
    ]
    return lines


def llama7b(d: dict) -> list[str]:
    r, run = d["llama2_7b_shape_wanda_2of4"], d["runs"]["llama7b"]
    t = r["driver_timings_s"]
    error_s = t["output_pass_s"] - t["stats_pass_s"]  # the output pass = a forward + ΔW·x for every Linear
    return [
        "## Foundation: Wanda 2:4 on a Llama-2-7B-shaped model (H200)",
        "",
        f"Command: `{run['command']}` — machine: {run['machine']} — date: {run['date']}.",
        "32 layers, hidden 4096, intermediate 11008, bf16, random weights; 128 × 2048 random-token "
        f"calibration, {r['batch_size']} samples per forward; includes measuring every Linear's output "
        "error. Model creation excluded.",
        "",
        "| calibrate + prune (s) | target | peak GPU memory (GiB) | one layer (GiB) | hidden states (GiB) |",
        "|---:|---:|---:|---:|---:|",
        f"| {r['calibrate_prune_s']:.1f} | ≤ 30 | {r['peak_gpu_gb']:.2f} | {r['one_layer_gib']:.2f} | "
        f"{r['hidden_states_gib']:.2f} |",
        "",
        "Driver phases (s): " + ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in t.items()),
        "",
        # ≈ 9 s is an estimate of two bare forward passes, not a recorded figure (foundation.json has none)
        "Reading: the two forward passes over 128 × 2048 tokens per layer (statistics, then the next layer's "
        "inputs) are the compute floor (≈ 9 s); the output pass also computes ΔW·x for every Linear to report "
        f"its output error (one more matmul per Linear, ≈ {error_s:.0f} s). Only one decoder layer (plus its dense "
        f"copy for the error) and the {r['hidden_states_gib']:.0f} GiB of hidden states are on the GPU.",
        "",
    ]
