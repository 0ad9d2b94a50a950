"""Driver speed (issue 14 A.6): our layer-wise driver against llm-compressor 0.10's sequential pipeline
(bench/driver_speed.py)."""

from __future__ import annotations


def _f(x, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def _phases(p: dict) -> str:
    keys = ("capture_s", "stats_pass_s", "step_s", "output_pass_s")
    return ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {p[k]:.1f}" for k in keys if k in p)


def _theirs_phases(p: dict) -> str:
    keys = ("trace_subgraphs_s", "calibrate_pass_s", "compress_modules_s", "propagate_pass_s")
    names = {"trace_subgraphs_s": "fx tracing", "compress_modules_s": "compress", "calibrate_pass_s": "calibrate pass",
             "propagate_pass_s": "propagate pass"}  # fmt: skip
    rest = p.get("pipeline_s", 0) - sum(p.get(k, 0) for k in keys)
    return ", ".join(f"{names[k]} {p[k]:.1f}" for k in keys if k in p) + f", other {rest:.1f}"


def _error_hook_s(rec: dict) -> float | None:
    parts = rec.get("profile", {}).get("parts", {})
    hook = next((v for k, v in parts.items() if k.startswith("error_hook")), None)
    return hook["cum_s"] if hook else None


def driver_speed(d: dict) -> list[str]:
    """Table (method, seconds and perplexity on both sides) and notes with the phases, from driver_speed.json."""
    setup, ev, machine = d["setup"], d["eval"], d["machine"]
    cal = setup["calibration"]
    any_r = next(iter(d["results"].values()))
    versions = any_r["llmcompressor"]["versions"]
    lines = [
        "## Driver speed (issue 14 A.6): our layer-wise driver vs llm-compressor's sequential pipeline",
        "",
        f"Command: `{d['command']}` — machine: {machine['cpu_count']} CPU cores, "
        f"{machine.get('cuda_device') or 'no GPU'}, {machine['platform']} — date: {d['date_utc'][:10]} — our code: "
        f"{machine.get('code', machine.get('git_commit'))}. SmolLM2-135M (embedded GGUF, {setup['dtype']}), "
        f"{setup['pattern']}, {cal['nsamples']} × {cal['seqlen']} tokens of {cal['dataset']} (the same token ids "
        f"on both sides), batch {cal['batch_size']}, CPU, each side alone in its own process. Ours: `python -m "
        f"compress run` (pinned CPU numerics, its default), seconds = report.json `timings_s.prune`. "
        f"llm-compressor {versions['llmcompressor']} (compressed-tensors {versions['compressed-tensors']}, "
        f"transformers {versions['transformers']}, side venv): `oneshot(..., pipeline='sequential')` with "
        "WandaPruningModifier / SparseGPTModifier(sparsity=0.5, mask_structure='2:4'), native numerics (its "
        "default), seconds = the oneshot call. Perplexity: both exported folders through our evaluator "
        f"(`{ev['command']}`): {ev['set']}, {ev['windows']} windows of {ev['seqlen']} tokens.",
        "",
        "| method | ours (s) | llm-compressor (s) | ratio | ours, native numerics (s) | ratio, both native "
        "| llm-compressor, pinned (s) | wiki ppl ours | wiki ppl llm-compressor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, r in d["results"].items():
        ours, theirs = r["ours"], r["llmcompressor"]
        native, pinned = r.get("ours_native", {}), r.get("llmcompressor_pinned", {})
        lines.append(
            f"| {method} 2:4 | {ours['prune_s']:.1f} | {theirs['oneshot_s']:.1f} | {r['ratio']:.2f} | "
            f"{_f(native.get('prune_s'))} | "
            f"{_f(native['prune_s'] / theirs['oneshot_s'] if native.get('prune_s') else None, '.2f')} | "
            f"{_f(pinned.get('oneshot_s'))} | {ours['wiki_ppl']:.1f} | "
            f"{theirs['wiki_ppl']:.1f} |"
        )
    lines += [""]
    for method, r in d["results"].items():
        ours, theirs = r["ours"], r["llmcompressor"]
        hook = _error_hook_s(r.get("ours_profile", {}))
        prof = r.get("ours_profile", {})
        hook_note = (
            f" Under cProfile, before the output error became opt-in (prune {prof['prune_s']:.1f} s, output pass "
            f"{prof['phases']['output_pass_s']:.1f} s),"
            f" the per-Linear output-error hooks took {hook:.1f} s."
            if hook is not None
            else ""
        )
        load = ours["run"]["load_before"]["loadavg"][0], theirs["run"]["load_before"]["loadavg"][0]
        others = ours["run"]["others_cores_during"], theirs["run"]["others_cores_during"]
        lines.append(
            f"- {method}: ours {_phases(ours['phases'])} s; llm-compressor {_theirs_phases(theirs['phases_s'])} s "
            f"({theirs['subgraphs']} subgraphs; oneshot {theirs['oneshot_s']:.1f} s of which pipeline "
            f"{theirs['phases_s'].get('pipeline_s', 0):.1f} s).{hook_note} Load average before the runs "
            f"{load[0]:.2f} / {load[1]:.2f}; cores used by other processes during them {others[0]} / {others[1]}."
        )
    settings = d["defaults"]["llmcompressor"]
    sg = settings.get("sparsegpt", {})
    lines += [
        f"- Defaults: ours SparseGPT blocksize 128, percdamp 0.01; llm-compressor block_size "
        f"{sg.get('block_size', '-')}, dampening_frac {sg.get('dampening_frac', '-')}, sequential targets "
        f"{sg.get('sequential_targets_used', '-')} (inferred: one subgraph per decoder layer, plus the rest). Both "
        "run two passes per layer (statistics, then the next layer's inputs from the pruned layer). Ours computes "
        "each Linear's output error in the second pass only with `calibration.output_error: true` (off by default "
        "since the cProfile run above: it took half of the output pass). Linears fed one input (q/k/v, gate/up) "
        "share one statistics accumulator.",
        "",
    ]
    after = [
        (m, k, r) for m, res in d["results"].items() for k, r in res.items() if k.startswith("ours_output_error_off")
    ]
    if after:
        lines += [
            "",
            "After the change (the output error is now opt-in, `calibration.output_error: true`; weights unchanged, "
            "the golden checkpoints are bit-identical):",
            "",
            "| method | ours, numerics | prune (s) | stats pass | step | output pass | llm-compressor (s) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for m, _k, r in after:
            ph, theirs = r["phases"], d["results"][m].get("llmcompressor", {}).get("oneshot_s")
            lines.append(
                f"| {m} 2:4 | {r['numerics']} | {r['prune_s']:.1f} | {ph['stats_pass_s']:.1f} | {ph['step_s']:.1f} | "
                f"{ph['output_pass_s']:.1f} | {theirs if theirs is None else f'{theirs:.1f}'} |"
            )
        lines += ["", f"Command: `{after[0][2]['command']}`; {after[0][2]['note']}; {after[0][2]['date_utc']}.", ""]
    return lines
