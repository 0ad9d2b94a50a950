"""Quantization (issue 15): SmolLM2-135M wiki perplexity, size and time per method and grid (bench/quant.py)."""

from __future__ import annotations

METHODS = {
    "rtn": "RTN",
    "rtn_asym": "RTN asymmetric",
    "gptq": "GPTQ",
    "quest": "QuEST",
    "squeezellm_dense": "SqueezeLLM dense-only",
    "squeezellm_dense_sparse": "SqueezeLLM dense-and-sparse",
}
GRIDS = {  # column order; w4g32 is the GGUF source's own grid (Q4_1 is 4-bit, group 32)
    "w4g64": "w4g64",
    "w3g64": "w3g64",
    "w4g32": "w4g32 (source grid)",
    "w4": "w4 (per row)",
    "w3": "w3 (per row)",
}
BASES = {"": "dense", "sparsegpt2of4+": "sparsegpt2of4"}  # key prefix -> base variant
SPARSE = "sparsegpt2of4+"
EMBED_PARAMS = 49152 * 576  # SmolLM2-135M's embedding (vocab x hidden), tied to lm_head: stored once
GOAL_GAP_CLOSED = 0.30  # GPTQ w3g64 closes at least this fraction of RTN w3g64's ppl gap to dense
GOAL_PARITY = 0.01  # our GPTQ within 1% of GPTQModel's ppl
FISHER_DEFAULT = 100  # bench/quant.py's --fisher-samples default (the SqueezeLLM reference's)


def _ppl(x: float | None) -> str:
    """A perplexity: two decimals below 100, one below 10 000, then 6.8e4."""
    if x is None:
        return "—"
    if x >= 1e4:
        e = len(str(int(x))) - 1
        return f"{x / 10**e:.1f}e{e}"
    return f"{x:.2f}" if x < 100 else f"{x:.1f}"


def _ppl_of(v: dict, key: str) -> float | None:
    return v.get(key, {}).get("wiki_ppl")


def _cell(e: dict | None) -> str:
    return "—" if e is None else f"{_ppl(e['wiki_ppl'])} ({e['size_mb']:.0f} MB)"


def _dtype(e: dict) -> str:
    return str(e.get("dtype", "")).removeprefix("torch.").replace("bfloat16", "bf16").replace("float32", "fp32")


def _device(e: dict) -> str:
    return "CPU" if e.get("device") == "cpu" else str(e.get("device", "")).removeprefix("NVIDIA ")


def _fisher(e: dict) -> int:
    """SqueezeLLM's Fisher windows of a variant: recorded, else its command's flag, else the script's default."""
    if "fisher_samples" in e:
        return e["fisher_samples"]
    args = e.get("command", "").split()
    return int(args[args.index("--fisher-samples") + 1]) if "--fisher-samples" in args else FISHER_DEFAULT


def _protocol(e: dict) -> str:
    """Calibration and evaluation of a run, from one of its entries."""
    cal, w = e["calibration"], e.get("eval_max_windows")
    windows = "all perplexity windows" if w is None else f"first {w} perplexity windows"
    return f"{cal['nsamples']} × {cal['seqlen']} calibration, {windows}"


def _table(v: dict, prefix: str, cell=None, shown=lambda e: True) -> list[str]:
    """Method rows x grid columns of the variants on one base that are `shown`; cells `cell(entry or None)`
    (default 'ppl (size MB)'); [] when none."""
    cell = cell or _cell
    keys = [k for k in v if k.startswith(prefix) and "/" in k[len(prefix) :] and shown(v[k])]
    grids = [g for g in GRIDS if any(k.split("/")[1] == g for k in keys)]
    methods = [m for m in METHODS if any(k[len(prefix) :].split("/")[0] == m for k in keys)]
    if not methods:
        return []
    lines = ["| method | " + " | ".join(GRIDS[g] for g in grids) + " |", "|---|" + "---:|" * len(grids)]
    for m in methods:
        lines.append(f"| {METHODS[m]} | " + " | ".join(cell(v.get(f"{prefix}{m}/{g}")) for g in grids) + " |")
    return lines


def goals(v: dict) -> list[str]:
    """The issue's three goals, each verdict computed from the figures of one results file's variants."""
    dense, rtn3, gptq3 = _ppl_of(v, "dense"), _ppl_of(v, "rtn/w3g64"), _ppl_of(v, "gptq/w3g64")
    lines = []
    if None in (dense, rtn3, gptq3) or rtn3 <= dense:
        lines.append(f"- GPTQ w3g64 closes ≥ {GOAL_GAP_CLOSED:.0%} of RTN w3g64's ppl gap to dense: not measured.")
    else:
        closed = (rtn3 - gptq3) / (rtn3 - dense)
        verdict = "reached" if closed >= GOAL_GAP_CLOSED else "not reached"
        lines.append(
            f"- GPTQ w3g64 closes {closed:.1%} of RTN w3g64's ppl gap to dense ((RTN {_ppl(rtn3)} − GPTQ "
            f"{_ppl(gptq3)}) / (RTN {_ppl(rtn3)} − dense {_ppl(dense)})); goal ≥ {GOAL_GAP_CLOSED:.0%}: {verdict}."
        )
    ds3 = _ppl_of(v, "squeezellm_dense_sparse/w3")
    if None in (ds3, gptq3):
        lines.append("- SqueezeLLM dense-and-sparse w3 ≤ GPTQ w3 (w3g64): not measured.")
    else:
        verdict = "reached" if ds3 <= gptq3 else "not reached"
        lines.append(f"- SqueezeLLM dense-and-sparse w3 {_ppl(ds3)} ≤ GPTQ w3 (w3g64) {_ppl(gptq3)}: {verdict}.")
    g, r = v.get(f"{SPARSE}gptq/w4g64"), v.get(f"{SPARSE}rtn/w4g64")
    if g is None or r is None:
        lines.append("- 2:4 + GPTQ w4g64 better than 2:4 + RTN w4g64: not measured.")
    else:
        verdict = "reached" if g["wiki_ppl"] < r["wiki_ppl"] else "not reached"
        if "recovery" in g and "recovery" in r:
            better = "reached" if g["recovery"] > r["recovery"] else "not reached"
            rec = f"recovery {g['recovery']:.3f} vs {r['recovery']:.3f}: {better}"
        else:
            rec = "recovery not measured"
        lines.append(
            f"- 2:4 + GPTQ w4g64 better than 2:4 + RTN w4g64: wiki ppl {_ppl(g['wiki_ppl'])} vs "
            f"{_ppl(r['wiki_ppl'])}, {verdict}; {rec}."
        )
    return lines


def _times(gpu: dict | None, cpu: dict | None) -> list[str]:
    """Seconds of the quant stage per method at the 4-bit grids (dense base), one column per results file."""
    files = [d["variants"] for d in (gpu, cpu) if d]
    keys = [f"{m}/{g}" for m in METHODS for g in GRIDS if g.startswith("w4")]
    keys = [k for k in keys if any(k in v for v in files)]
    if not keys:
        return []
    heads = []
    for v in files:
        e = v.get("dense") or v[keys[0]]
        cal = e["calibration"]
        w = e.get("eval_max_windows")
        fisher = sorted({_fisher(v[k]) for k in keys if k in v and k.startswith("squeezellm")})
        heads.append(
            f"{_device(e)} s ({_dtype(e)}, {cal['nsamples']} × {cal['seqlen']} calibration"
            + (f", {'/'.join(map(str, fisher))} Fisher windows" if fisher else "")
            + (f", ppl on the first {w} windows" if w is not None else "")
            + ")"
        )
    lines = [
        "Quantization stage, seconds (the pipeline's `quant` timing; for SqueezeLLM it includes the Fisher pass), "
        "dense base:",
        "",
        "| method | grid | " + " | ".join(heads) + " |",
        "|---|---|" + "---:|" * len(files),
    ]
    for k in keys:
        m, g = k.split("/")
        cells = [_time_cell(v.get(k)) for v in files]
        lines.append(f"| {METHODS[m]} | {g} | " + " | ".join(cells) + " |")
    beside = sorted({v[k]["score_workers"] for v in files for k in keys if k in v and _beside_scoring(v[k])})
    if beside:
        lines += [
            "",
            f"\\* built beside {'/'.join(map(str, beside))} zero-shot scoring processes on the same host "
            "(bench/quant.py --score-workers), so slower than alone; the other cells are builds that ran alone "
            "(a variant rebuilt beside the scoring keeps its earlier lone build's timings, `timing_source` in the "
            "results file).",
        ]
    return lines


def _beside_scoring(e: dict) -> bool:
    return bool(e.get("score_workers")) and "timing_source" not in e


def _time_cell(e: dict | None) -> str:
    if e is None or e.get("quant_s") is None:
        return "—"
    return f"{e['quant_s']:.1f}" + ("\\*" if _beside_scoring(e) else "")


def parity(p: dict, where: str) -> list[str]:
    """Our GPTQ against GPTQModel's on the same windows (bench/gptqmodel_parity.py), as shipped and with the
    Hessian summed in GPTQModel's floating-point order (bench/gptq_parity.py --hessian-sum)."""
    theirs = p["gptqmodel_wiki_ppl"]
    rows = [("ours (running-mean Hessian, as shipped; IST-DASLab's order)", p["ours_wiki_ppl"])]
    if p.get("ours_hessian_sum_wiki_ppl") is not None:
        rows.append(("ours, Hessian summed in GPTQModel's order (`--hessian-sum`)", p["ours_hessian_sum_wiki_ppl"]))
    settings = p.get("settings", "")
    if isinstance(settings, dict):
        settings = ", ".join(f"{k} {v}" for k, v in settings.items())
    commands = p.get("commands", [])
    if isinstance(commands, str):
        commands = [commands]
    lines = [
        f"GPTQ parity with GPTQModel ({where}; {settings}). Commands: " + "; ".join(f"`{c}`" for c in commands) + ".",
        "",
        "| GPTQ | wiki ppl | vs GPTQModel | within 1% |",
        "|---|---:|---:|---|",
        f"| GPTQModel | {theirs:.3f} | | |",
    ]
    for label, ppl in rows:
        rel = ppl / theirs - 1
        ok = "yes" if abs(rel) <= GOAL_PARITY + 1e-9 else "no"  # 1e-9: float slack at the edge
        lines.append(f"| {label} | {ppl:.3f} | {rel:+.2%} | {ok} |")
    if p.get("note"):
        lines += ["", p["note"]]
    return [*lines, ""]


def notes(gpu: dict | None, cpu: dict | None) -> list[str]:
    v = (gpu or cpu)["variants"]
    lines = [
        "- SmolLM2's in-features 576 is not a multiple of 128, so group 64 replaces the usual group 128 "
        "(compressed-tensors requires the group size to divide the columns).",
        "- The GGUF source is already Q4_1 (4-bit, group 32): every 4-bit figure starts from weights that already "
        'sit on a 4-bit grid, which flatters it; the w4g32 column is labelled "source grid" for its group size'
        + ("." if any(k.endswith("/w4g32") for k in v) else " (none was run in these files)."),
    ]
    cv = (cpu or {}).get("variants", {})
    sym, asym, dense = (_ppl_of(cv, k) for k in ("rtn/w4g32", "rtn_asym/w4g32", "dense"))
    if None not in (sym, asym, dense):
        lines.append(
            "- No 4-bit grid of compressed-tensors' kinds holds the source exactly: Q4_1 stores x = d·q + m with a "
            "float minimum m per block of 32, while an asymmetric int grid is s·(q − z) with an integer zero point "
            f"z. CPU, same group 32: RTN symmetric {_ppl(sym)}, RTN asymmetric {_ppl(asym)}, dense {_ppl(dense)}."
        )
    g = v.get("gptq/w4g64")
    share = (
        f": {EMBED_PARAMS * 2 / 1e6 / g['size_mb']:.0%} of the {g['size_mb']:.0f} MB GPTQ w4g64 one"
        if g and _dtype(g) == "bf16"
        else ""
    )
    lines.append(
        "- Sizes are the exported model.safetensors files. The bf16 embedding (tied to lm_head, stored once: "
        f"{EMBED_PARAMS / 1e6:.1f}M parameters, {EMBED_PARAMS * 2 / 1e6:.0f} MB) is not quantized and dominates "
        f"a 135M model's quantized file{share}. The CPU run's files are fp32 for everything left unquantized."
    )
    sg = v.get(f"{SPARSE}gptq/w4g64")
    same = f" ({sg['size_mb']:.2f} MB vs {g['size_mb']:.2f} MB, GPTQ w4g64)" if g and sg else ""
    lines.append(
        "- compressed-tensors' pack-quantized format has no 2:4 compression, so a 2:4 + int4 file is the same size "
        f"as the dense int4 one{same}."
    )
    lines.append("- 3-bit, SqueezeLLM and QuEST checkpoints are in our llm-compress-quant layout.")
    q = [(g, v[f"{SPARSE}quest/{g}"]["wiki_ppl"]) for g in GRIDS if f"{SPARSE}quest/{g}" in v]
    if q:
        base = _ppl_of(v, "sparsegpt2of4")
        lines.append(
            "- QuEST on a 2:4 layer has no Hadamard rotation (the rotation would make the weight dense); on SmolLM2 "
            "that fails: "
            + ", ".join(f"{g} {_ppl(p)}" for g, p in q)
            + (f" against the 2:4 base's {_ppl(base)}." if base is not None else ".")
        )
    pairs = [
        (name, _ppl_of(d["variants"], "gptq/w4g64"), _ppl_of(d["variants"], "rtn/w4g64"))
        for name, d in (("GPU", gpu), ("CPU", cpu))
        if d
    ]
    pairs = [(n, g, r) for n, g, r in pairs if g is not None and r is not None]
    if pairs:
        worse = [p for p in pairs if p[1] > p[2]]
        figures = "; ".join(f"{n}: GPTQ {_ppl(g)} vs RTN {_ppl(r)}" for n, g, r in pairs)
        if len(worse) == len(pairs):
            line = f"- GPTQ w4g64 is worse than RTN w4g64 on this model ({figures})"
        elif worse:
            line = f"- GPTQ w4g64 against RTN w4g64 on this model: worse in {len(worse)} of the runs ({figures})"
        else:
            line = f"- GPTQ w4g64 beats RTN w4g64 on this model ({figures})"
        par = next((d["gptqmodel_parity"] for d in (gpu, cpu) if d and "gptqmodel_parity" in d), None)
        if par and cv.get("rtn/w4g64") and par.get("gptqmodel_wiki_ppl"):
            line += (
                f"; GPTQModel's own GPTQ gives {_ppl(par['gptqmodel_wiki_ppl'])} on the CPU protocol's model "
                f"(RTN {_ppl(_ppl_of(cv, 'rtn/w4g64'))} there), so it is the method's behaviour on this Q4_1-derived "
                "model, not ours"
            )
        rec = [
            f"{g} {v[f'gptq/{g}']['recovery']:.3f} vs {v[f'rtn/{g}']['recovery']:.3f}"
            for g in GRIDS
            if "recovery" in v.get(f"gptq/{g}", {}) and "recovery" in v.get(f"rtn/{g}", {})
        ]
        if rec:
            line += ". Recovery, GPTQ vs RTN: " + ", ".join(rec)
        lines.append(line + ".")
    return lines
    return lines


def _recovery_table(v: dict, prefix: str) -> list[str]:
    """Method rows x grid columns, cells 'recovery ± binomial SE', of the scored variants on one base."""
    dense = v.get("dense", {}).get("_scores")
    if not dense:
        return []

    def cell(e: dict | None) -> str:
        if e is None or "recovery" not in e:
            return "—"
        return f"{e['recovery']:.3f} ± {_recovery_se(e['_scores'], dense):.3f}"

    return _table(v, prefix, cell, shown=lambda e: "recovery" in e)


def recoveries(v: dict) -> list[str]:
    """Zero-shot recovery of every variant that was scored (bench/quant.py --zeroshot): per base a method x grid
    table, then each variant's task scores."""
    scored = [(k, e) for k, e in v.items() if "recovery" in e]
    if not scored or "_scores" not in v.get("dense", {}):
        return []
    lines = [
        "Zero-shot recovery (lm-eval on the embedded validation sets, full sets; mean over HellaSwag acc_norm, "
        "ARC-Easy acc and PIQA acc of (acc − chance) / (dense acc − chance)). Cell: recovery ± its binomial "
        "standard error (validation sets of "
        + ", ".join(f"{t} {n}" for t, n in TASK_SIZES.items())
        + " examples; the dense scores taken as exact). — = not scored.",
        "",
    ]
    for prefix, base in BASES.items():
        table = _recovery_table(v, prefix)
        if table:
            b = v.get(base, {})
            head = "Dense base" if not prefix else "SparseGPT 2:4 base"
            if "recovery" in b:
                head += f" (itself {b['recovery']:.3f})"
            lines += [head + ":", "", *table, ""]
    order = {k: i for i, k in enumerate(f"{p}{m}/{g}" for p in BASES for m in METHODS for g in GRIDS)}
    scored.sort(key=lambda ke: (ke[0] not in BASES.values(), order.get(ke[0], -1)))
    lines += [
        "Task scores:",
        "",
        "| variant | wiki ppl | recovery | HellaSwag | ARC-Easy | PIQA |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k, e in scored:
        sc = e.get("_scores", {})
        cells = [sc.get(t, {}).get(m) for t, m in (("hellaswag", "acc_norm"), ("arc_easy", "acc"), ("piqa", "acc"))]
        lines.append(
            f"| {k} | {_ppl(e['wiki_ppl'])} | {e['recovery']:.3f} | "
            + " | ".join("—" if c is None else f"{c:.3f}" for c in cells)
            + " |"
        )
    src = v.get("dense", {}).get("scores_source")
    if src:
        lines += ["", f"Dense zero-shot scores: {src}."]
    unscored = [k for k, e in v.items() if "/" in k and "recovery" not in e]
    if unscored:
        lines += ["", "Not scored: " + ", ".join(unscored) + "."]
    return [*lines, ""]


TASK_SIZES = {"hellaswag": 10042, "arc_easy": 570, "piqa": 1838}  # embedded validation sets (eval/lm_tasks.py)
CHANCE = {"hellaswag": 0.25, "arc_easy": 0.25, "piqa": 0.5}  # eval/zeroshot.py CHANCE (the renderer imports no torch)
METRIC = {"hellaswag": "acc_norm", "arc_easy": "acc", "piqa": "acc"}


def _recovery_se(scores: dict, dense: dict) -> float:
    """Standard error of the recovery mean from each task's binomial accuracy error (dense taken as exact)."""
    var = 0.0
    for t, n in TASK_SIZES.items():
        a, d = scores[t][METRIC[t]], dense[t][METRIC[t]]
        var += a * (1 - a) / n / (d - CHANCE[t]) ** 2
    return var**0.5 / len(TASK_SIZES)


def qat(q: dict, v: dict) -> list[str]:
    """2:4 + AST + QuEST-QAT (bench/finetune.py variant ast_2of4_quest_w4, copied into quant.json's `qat`)."""
    ptq = v.get(f"{SPARSE}quest/w4")
    rec = f", recovery {q['recovery']:.3f}" if "recovery" in q else ", recovery not measured"
    lines = [
        f"2:4 + AST + QuEST-QAT w4 (recipe `{q['recipe']}`, `{q['command']}`, {q.get('device', '')}, "
        f"{q.get('date', '')}): "
        f"{q['train_tokens']:,} training tokens in {q['train_s']:.0f} s; wiki ppl {_ppl(q['wiki_ppl'])}{rec}"
        + (f"; the same 2:4 base quantized by QuEST post-training: {_ppl(ptq['wiki_ppl'])}" if ptq else "")
        + (
            f"; AST alone (bench/finetune.json, {q['ast_tokens']:,} tokens): {_ppl(q['ast_wiki_ppl'])}"
            if q.get("ast_wiki_ppl")
            else ""
        )
        + ".",
        "",
    ]
    return lines


def int4_codes(d: dict) -> list[str]:
    """GPTQ vs RTN codes in the runtime's int4 2:4 layout (bench/int4_codes.py)."""
    run = d["run"]
    lines = [
        f"GPTQ codes in the runtime's int4 2:4 layout (`{run['command']}`, {d['device']}, {run['date']}; "
        f"Llama-2-7B-shaped, {d['layers']} layers, random weights with magnitude 2:4 masks, GPTQ on synthetic "
        "correlated inputs, each layer's dequantised weight checked equal to GPTQ's bit for bit):",
        "",
        "| decode tok/s (runs) | RTN | GPTQ | GPTQ / RTN |",
        "|---|---:|---:|---:|",
    ]
    modes = d.get("decode_mode", {})

    def runs(b: str, name: str) -> str:
        ms = modes.get(b, {}).get(name, [])
        return " / ".join(
            f"{x:.1f}" + (f" ({ms[i]}: capture failed)" if i < len(ms) and ms[i] != "cuda-graph" else "")
            for i, x in enumerate(d["decode_tok_s"][b][name])
        )

    for b in d["decode_tok_s"]:
        ratio = d["ratio_gptq_over_rtn"].get(b)
        lines.append(f"| {b} | {runs(b, 'rtn')} | {runs(b, 'gptq')} | {'—' if ratio is None else f'{ratio:.3f}'} |")
    lines += ["", "GPTQ / RTN: mean over the runs replayed from a CUDA graph."]
    err = d.get("output_error", {})
    if err:
        g = sum(e["gptq"] for e in err.values()) / len(err)
        r = sum(e["rtn"] for e in err.values()) / len(err)
        lines += [
            "",
            f"Layer 0 relative output error on fresh inputs of the calibration distribution, mean over its "
            f"{len(err)} Linears: GPTQ {g:.4f}, RTN {r:.4f}. GPTQ took {d['gptq_s']:.0f} s.",
        ]
    wb = d.get("weight_bytes", {})
    if wb:
        lines += [f"Buffers: RTN {wb['rtn'] / 2**30:.2f} GiB, GPTQ {wb['gptq'] / 2**30:.2f} GiB."]
    return [*lines, ""]


def quant(gpu: dict | None, cpu: dict | None, codes: dict | None = None, kmeans_runs: tuple = ()) -> list[str]:
    if not gpu and not cpu:
        return []
    lines = ["## Quantization (issue 15): SmolLM2-135M wiki perplexity, size and time per method and grid", ""]
    for name, d in (("GPU", gpu), ("CPU", cpu)):
        if not d:
            continue
        v = d["variants"]
        e = v.get("dense") or next(iter(v.values()))
        commands = dict.fromkeys(x["command"] for x in v.values() if "command" in x)
        dates = sorted({x["date"] for x in v.values() if "date" in x})
        label = "full protocol" if e.get("eval_max_windows") is None else "reduced protocol, labelled"
        lines += [
            f"{name} ({label}): {_device(e)}, {_dtype(e)}, {_protocol(e)}. Commands (each variant's is in "
            f"bench/{'quant' if name == 'GPU' else 'quant_cpu'}.json): "
            + "; ".join(f"`{c}`" for c in commands)
            + f" — machine: {d.get('run', {}).get('machine', e['device'])} — date: {', '.join(dates)}.",
            "",
        ]
    main = gpu or cpu
    v = main["variants"]
    lines += [
        "Each variant is a pipeline run whose exported checkpoint is evaluated from disk. Cell: wiki ppl (size of "
        "the exported model.safetensors). — = not run (RTN and GPTQ use group grids; QuEST and SqueezeLLM one "
        "scale or table per output row, so their grids are the bit width alone).",
        "",
    ]
    for prefix, base in BASES.items():
        table = _table(v, prefix)
        if not table:
            continue
        b = v.get(base)
        if prefix:
            head = "SparseGPT 2:4 base (`sparsegpt2of4+`; a quant run keeps the checkpoint's zeros)"
            fmt = "as sparse-24-bitmask"
        else:
            head = "Dense base"
            fmt = _dtype(b) if b else ""
        if b:
            head += f": {_ppl(b['wiki_ppl'])}, {b['size_mb']:.0f} MB {fmt}"
        lines += [head + ".", "", *table, ""]
    lines += recoveries(v)
    if isinstance(main.get("qat"), dict):
        lines += qat(main["qat"], v)
    lines += ["Goals:", "", *goals(v), ""]
    times = _times(gpu, cpu)
    if times:
        lines += [*times, ""]
    if cpu:
        cv = cpu["variants"]
        cells = [
            f"{METHODS[k.split('/')[0]]} {k.split('/')[1]} {_ppl(e['wiki_ppl'])}"
            for k, e in cv.items()
            if "/" in k and k.split("/")[0] in METHODS
        ]
        if cells:
            dense = _ppl_of(cv, "dense")
            lines += [
                "CPU wiki ppl (reduced protocol, not comparable to the GPU cells)"
                + (f", dense {_ppl(dense)}" if dense is not None else "")
                + ": "
                + "; ".join(cells)
                + ".",
                "",
            ]
    for k in kmeans_runs:
        if k:
            lines += kmeans(k)
    for name, d in (("GPU", gpu), ("CPU", cpu)):
        if d and isinstance(d.get("gptqmodel_parity"), dict):
            par = d["gptqmodel_parity"]  # measured on the CPU (settings.machine), kept in quant.json (the file)
            where = par.get("settings", {}).get("machine", name) if isinstance(par.get("settings"), dict) else name
            lines += parity(par, "CPU" if "CPU" in where else where)
    if codes:
        lines += int4_codes(codes)
    lines += ["Notes:", "", *notes(gpu, cpu), ""]
    return lines


def kmeans(d: dict) -> list[str]:
    """SqueezeLLM per-Linear time (bench/kmeans.py): our k-means and dense-and-sparse, and sklearn's per-row
    estimate (the reference's loop), per device, shape set and bit width."""
    run = d.get("run", {})
    lines = [
        f"SqueezeLLM per Linear (`{run.get('command', 'python bench/kmeans.py')}`, {run.get('machine', '')}, "
        f"{run.get('date', '')}; synthetic heavy-tailed weights, {run.get('iters', 50)} Lloyd iterations; median "
        "seconds): our k-means (all rows at once) and the whole dense-and-sparse step (outlier search + k-means + "
        "reconstruction), against the reference's per-row sklearn KMeans (one row timed × rows, an estimate):",
        "",
        "| device / shapes / bits | Linear (out × in) | k-means s | dense-and-sparse s | sklearn per-row loop s "
        "(est.) |",
        "|---|---|---:|---:|---:|",
    ]
    shapes = {"smollm2": "SmolLM2-135M", "llama2-7b": "Llama-2-7B"}
    for key, mods in d.get("kmeans_s", {}).items():
        device, shape, bits = key.split("/")
        est = d.get("sklearn_estimate_s", {}).get(f"{shape}/{bits}", {})
        for mod, km in mods.items():
            ds = d.get("dense_sparse_s", {}).get(key, {}).get(mod)
            sk = est.get(mod)
            dims = d.get("shapes", {}).get(shape, {}).get(mod, "")
            lines.append(
                f"| {device} / {shapes.get(shape, shape)} / {bits} | {mod} {dims} "
                f"| {km:.3f} | {'—' if ds is None else f'{ds:.3f}'} | {'—' if sk is None else f'{sk:.1f}'} |"
            )
    layer = d.get("layer_s", {})
    if layer:
        lines += [
            "",
            "One decoder layer (every Linear of it, dense-and-sparse): "
            + ", ".join(f"{k} {s:.1f} s" for k, s in layer.items())
            + ".",
        ]
    return [*lines, ""]
