"""Runtime (issue #5): 2:4 on the H200 (bench/runtime.py, bench/cslt_layouts.py)."""

from __future__ import annotations

import json

from bench.render.common import ROOT

GEMM_KERNELS = ("gemm", "nvjet", "cutlass", "xmma", "splitKreduce", "gemv24_kernel", "mma24_kernel")


def _met(ratio: float, goal: float) -> str:
    return "met" if ratio >= goal else "not met"


def _kernel_split(prof: dict) -> dict:
    """Kernel time of a profile (ms, per prefill or per decode step) by kind: GEMM (cuBLAS, cuSPARSELt and our
    kernels, lm_head included), attention, element-wise (Inductor's Triton kernels), other."""
    split = {"GEMM": 0.0, "attention": 0.0, "element-wise": 0.0, "other": 0.0}
    for name, v in prof["top"].items():
        kind = (
            "element-wise" if name.startswith("triton")
            else "attention" if "sdpa" in name or "flash" in name
            else "GEMM" if any(t in name for t in GEMM_KERNELS)
            else "other"
        )  # fmt: skip
        split[kind] += v["ms"]
    split["other"] += prof["kernels_total_ms"] - sum(split.values())  # kernels outside the top list
    return split


def _split_table(intro: str, unit: str, profs: dict, fmt: str, extra: dict) -> list[str]:
    """One row per profiled model: its kernel time by kind (`_kernel_split`), the kernel total, then
    `extra[label](name, profile)` columns."""
    kinds = list(_kernel_split(next(iter(profs.values()))))
    lines = [intro, "", f"| {unit} | " + " | ".join([*kinds, "kernels", *extra]) + " |"]
    lines.append("|---|" + "---:|" * (len(kinds) + 1 + len(extra)))
    for k, p in profs.items():
        cells = [fmt.format(v) for v in _kernel_split(p).values()] + [fmt.format(p["kernels_total_ms"])]
        lines.append(f"| {k} | " + " | ".join(cells + [f(k, p) for f in extra.values()]) + " |")
    return [*lines, ""]


def _cslt_layouts() -> list[str]:
    """The cuSPARSELt operand-layout / split-K experiment (bench/cslt_layouts.py), if it was run."""
    path = ROOT / "bench" / "logs" / "cslt_layouts.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    rows, run = data["rows"], data["run"]
    keys = [("L0", "shim layout"), ("L0s", "+ split-K kept"), ("L1", "x as col-major B"), ("L1s", "+ split-K"),
            ("L2", "W as sparse B"), ("L2s", "+ split-K")]  # fmt: skip
    lines = [
        f"cuSPARSELt operand layouts at prefill sizes ({run['date']}, {run['machine']}; "
        "`python bench/cslt_layouts.py`, bench/logs/cslt_layouts.json; "
        "GPU µs, CUDA-graph replay, one weight, each variant checked against the dense matmul first). *shim "
        "layout*: W as the structured A, x as B transposed (what `csrc/cslt_shim.cpp` does); *x as col-major B*: "
        "the same bytes described as x^T column-major; *W as sparse B*: y = x·W^T with x as the dense A; "
        "*+ split-K*: the plan re-made with the split-K settings the search picked as well as its algorithm id. "
        "The search picked the default split-K (-1) for every case, so the + columns differ from their left "
        "neighbours by run-to-run noise only. cuBLAS here is timed on one weight without rotation and varies more "
        "between calls than in the per-GEMM table; compare the layouts with each other (last column):",
        "",
        "| N×K | M | cuBLAS | " + " | ".join(label for _, label in keys) + " | best / shim layout |",
        "|---|---:|---:|" + "---:|" * (len(keys) + 1),
    ]
    for r in rows:
        us = [r[k].get("us") for k, _ in keys]
        cells = [f"{u:.1f}" if u else "error" for u in us]
        best = min(u for u in us if u)
        lines.append(
            f"| {r['shape']} | {r['m']} | {r['dense_us']:.1f} | " + " | ".join(cells) + f" | {best / us[0]:.2f} |"
        )
    return [*lines, ""]


def runtime(d: dict) -> list[str]:
    """Issue #5 section from bench/runtime.json."""
    e2e, run = d["end_to_end"], d["run"]
    comp = e2e.get("compiled", {})
    names = [("dense", "dense bf16"), ("stock_2of4", "stock torch 2:4"), ("ours_2of4", "ours 2:4 bf16"),
             ("ours_int4_2of4", "ours 2:4 int4")]  # fmt: skip
    f1 = lambda x: "—" if x is None else f"{x:.1f}"  # noqa: E731
    marks: dict[str, str] = {}  # footnote text -> mark, for figures kept from earlier runs

    def mark(sec: dict, key: str) -> str:
        note = sec.get("earlier", {}).get(key)
        if not note:
            return ""
        return marks.setdefault(note, "*" * (len(marks) + 1))

    def row(label: str, sec: dict, key: str, sub: str | None = None) -> str:
        vals = sec.get(key, {})
        vals = vals.get(sub, {}) if sub else vals
        path = f"{key}/{sub}" if sub else key
        cells = []
        for k, _ in names:
            v = vals.get(k)
            ratio = f" ({v / vals['dense'] if key == 'decode_tok_s' else vals['dense'] / v:.2f}×)" if (
                v and vals.get("dense") and k != "dense") else ""  # fmt: skip
            cells.append(f1(v) + ratio + (mark(sec, f"{path}/{k}") if v is not None else ""))
        return f"| {label} | " + " | ".join(cells) + " |"

    g = {(r["shape"], r["m"]): r for r in d["gemm"] if r.get("timed") is not False}
    layers = e2e["layers"]
    shapes7 = [("4096x4096", 4), ("11008x4096", 2), ("4096x11008", 1)]  # one decoder layer's 7 GEMMs

    def per_token(us: dict) -> float:  # {shape: µs} -> ms for the 224 GEMMs of a token
        return layers * sum(n * us[s] for s, n in shapes7) / 1000

    dates = d.get("section_dates", {})
    cmds = run.get("commands", [run["command"]])
    lines = [
        "## Runtime (issue #5): 2:4 on the H200",
        *(["", f"**Note.** {d['end_to_end_note']}"] if d.get("end_to_end_note") else []),
        "",
        f"{run['machine']}, torch {d['torch']}, prefill backend `{d['prefill_backend']}` (our cached-plan "
        f"cuSPARSELt shim); device-to-device copy {d['copy_bandwidth_tb_s']:.2f} TB/s; latest run {run['date']}. "
        "Commands, run as separate calls merged with `--update` (GPU calls are limited to 10 minutes; "
        "`make bench-runtime` runs everything in one): " + "; ".join(f"`{c}`" for c in cmds) + ".",
        "",
        f"Llama-2-7B-shaped model ({layers} layers, random weights, magnitude 2:4 masks on every decoder Linear), "
        "bf16. *Eager*: the model's forward as written (decode: one step replayed from a CUDA graph). *Compiled*: "
        "`compress.runtime.model.compile_forward` — `torch.compile` of the whole forward, applied identically to "
        "the dense model and to ours (our layers are one opaque custom op to the compiler, so it fuses the norms, "
        "rotary, SiLU and residual adds around our kernels), decode step again replayed from a CUDA graph. Decode "
        "= greedy steps with a static KV cache after a 128-token prefill. Every GEMM path was checked against an "
        "fp32 matmul of the same masked weights before timing (largest relative error of any path: "
        + f"{max(v for r in d['gemm'] for k, v in r.items() if k.startswith('rel_err') and v is not None):.1e}"
        + "; logits vs the eager dense model: "
        + ", ".join(f"{k} {v:.3f}" for k, v in e2e["logits_rel_err"].items())
        + (", compiled " + ", ".join(f"{k} {v:.3f}" for k, v in comp.get("logits_rel_err", {}).items() if v))
        + " — bf16 rounding through 32 layers of random weights).",
        "",
        "| | " + " | ".join(label for _, label in names) + " |",
        "|---|" + "---:|" * len(names),
        row("prefill 2048 tokens (ms), compiled", comp, "prefill_ms"),
        row("decode tok/s, batch 1, compiled", comp, "decode_tok_s", "batch1"),
        row("decode tok/s, batch 16, compiled", comp, "decode_tok_s", "batch16"),
        row("prefill 2048 tokens (ms), eager", e2e, "prefill_ms"),
        row("decode tok/s, batch 1, eager", e2e, "decode_tok_s", "batch1"),
        row("decode tok/s, batch 16, eager", e2e, "decode_tok_s", "batch16"),
        "| weights + buffers (GiB) | "
        + " | ".join(f1(d["memory_gib"].get(k)) if k in d["memory_gib"] else "—" for k, _ in names)
        + " |",
        "",
    ]
    lines += [f"{m} measured {note}." for note, m in marks.items()] + ([""] if marks else [])
    pc, dc1, dc16 = comp["prefill_ms"], comp["decode_tok_s"]["batch1"], comp["decode_tok_s"]["batch16"]
    lines += [
        "Compiled (the fastest setting for dense and ours alike), against dense bf16 measured the same way: "
        f"**decode batch 1 {dc1['ours_2of4'] / dc1['dense']:.2f}×** bf16 "
        f"(goal 1.5×: {_met(dc1['ours_2of4'] / dc1['dense'], 1.5)}) and "
        f"**{dc1['ours_int4_2of4'] / dc1['dense']:.2f}×** int4 "
        f"(goal 3×: {_met(dc1['ours_int4_2of4'] / dc1['dense'], 3.0)}), **prefill "
        f"{pc['dense'] / pc['ours_2of4']:.2f}×** (goal 1.3×: {_met(pc['dense'] / pc['ours_2of4'], 1.3)}), "
        "**decode batch 16 "
        f"{dc16['ours_2of4'] / dc16['dense']:.2f}×** bf16. Stock torch 2:4 (eager only: torch.compile cannot "
        f"trace its sparse tensor) runs prefill at {e2e['prefill_ms']['dense'] / e2e['prefill_ms']['stock_2of4']:.2f}× "
        f"and decode at {e2e['decode_tok_s']['batch1']['stock_2of4'] / e2e['decode_tok_s']['batch1']['dense']:.2f}× "
        "dense.",
        "",
    ]
    lines += [f"Note: {n}" for n in d.get("notes", [])] + ([""] if d.get("notes") else [])

    # decode GEMMs as the models' one-time path search timed them (current kernels)
    paths = e2e.get("paths", {})
    if paths:
        lines += [
            "Decode GEMMs as each model's one-time path search timed them (GPU µs per call, CUDA-graph replay, "
            "weights rotated over 8 layers so they come from HBM; *CUDA* = our CUDA-core GEMV, M ≤ 8; *mma* = our "
            "tensor-core `mma.sp` kernel, M ≤ 64; bold = chosen; cuBLAS and byte bounds from the per-GEMM table "
            f"below ({dates.get('gemm', 'earlier run')}):",
            "",
            "| weights | N×K | M | CUDA | mma | Triton | cuSPARSELt | dense cuBLAS | byte bound |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, label, bound in (("ours_2of4", "bf16 2:4", "bound_us_24_bytes"),
                                   ("ours_int4_2of4", "int4 2:4", "bound_us_int4_bytes")):  # fmt: skip
            for key, v in paths.get(name, {}).items():
                shape, m = key.split(" M=")
                cells = [
                    ("**" + f1(v[p]) + "**" if v["chosen"] == p else f1(v[p])) if p in v else "—"
                    for p in ("cuda", "mma", "triton", "cusparselt")
                ]
                gr = g.get((shape, int(m)), {})
                lines.append(
                    f"| {label} | {shape} | {m} | " + " | ".join(cells)
                    + f" | {f1(gr.get('dense_gpu_us'))} | {f1(gr.get(bound))} |"
                )  # fmt: skip
        lines.append("")
    prof = comp.get("prefill_profile", {})
    pg = comp.get("prefill_graph_ms", {})
    if "dense" in prof and "ours_2of4" in prof:
        lines += _split_table(
            "Where a compiled 2048-token prefill's GPU time goes (torch.profiler, one prefill after a warm-up; "
            "`--profile`). *measured*: the prefill as in the table above; *graph*: the same prefill replayed from "
            "a CUDA graph (`--prefill-graph`, no host launch work); *unattributed* = measured − kernels:",
            "ms", {k: prof[k] for k in ("dense", "ours_2of4")}, "{:.1f}",
            {"measured": lambda k, p: f"{pc[k]:.1f}", "graph": lambda k, p: f1(pg.get(k)),
             "unattributed": lambda k, p: f"{pc[k] - p['kernels_total_ms']:.1f}"},
        )  # fmt: skip
    dprof = comp.get("decode_profile", {})
    if "dense" in dprof and len(dprof) > 1:
        lines += _split_table(
            "Where one decode step's GPU time goes (batch 1, compiled, replayed from a CUDA graph; torch.profiler "
            "over 16 steps, ms per step; *step* = wall time per step with the profiler on; *between kernels* = step "
            "− kernels, the graph's launch gaps):",
            "ms per token", {k: dprof[k] for k, _ in names if k in dprof}, "{:.3f}",
            {"step": lambda k, p: f"{p['step_ms']:.3f}",
             "between kernels": lambda k, p: f"{p['step_ms'] - p['kernels_total_ms']:.3f}"},
        )  # fmt: skip
    extra = [r for r in d.get("gemm_extra", []) if r.get("timed") is not False]
    if extra:
        lines += [
            f"Fused projections ({dates.get('gemm_extra', '')}; `--shapes 12288x4096,22016x4096`: q/k/v as one "
            "12288×4096 GEMM, gate/up as one 22016×4096), GPU µs:",
            "",
            "| N×K | M | dense | ours (path) | ours int4 | dense/ours |",
            "|---|---:|---:|---|---:|---:|",
        ]
        for r in extra:
            lines.append(
                f"| {r['shape']} | {r['m']} | {f1(r['dense_gpu_us'])} | {f1(r['ours_gpu_us'])} ({r['ours_path']}) | "
                f"{f1(r.get('ours_int4_gpu_us'))} | {r['dense_gpu_us'] / r['ours_gpu_us']:.2f}× |"
            )
        lines.append("")
    lines += _cslt_layouts()
    lines += [
        f"Per GEMM ({dates.get('gemm', '')}; µs; N×K = out×in features; *eager* = a plain PyTorch call, host "
        "work included; *GPU* = the same calls replayed from a CUDA graph; weights rotated over copies larger than "
        "L2; bound = 2:4 bf16 bytes / copy bandwidth; mma = our tensor-core kernel on the one resident form, "
        "M ≤ 64, bf16 and int4; ours = the path the layer takes before a path search; int4 at M > 64: the values "
        "kernel into the scratch form, then cuSPARSELt):",
        "",
        "| N×K | M | dense eager | stock eager | ours eager | dense GPU | stock GPU | ours GPU (path) | ours int4 GPU "
        "(path) | mma GPU | mma int4 GPU | cuSPARSELt GPU | 2:4 byte bound | dense/ours GPU | dense/ours int4 GPU |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in d["gemm"]:
        if r.get("timed") is False:
            lines.append(f"| {r['shape']} | {r['m']} | correctness check failed |" + " |" * 12)
            continue
        i4 = r.get("ours_int4_gpu_us")
        ratio4 = f"{r['dense_gpu_us'] / i4:.2f}×" if i4 else "—"
        lines.append(
            f"| {r['shape']} | {r['m']} | {f1(r['dense_us'])} | {f1(r.get('stock_us'))} | {f1(r['ours_us'])} | "
            f"{f1(r['dense_gpu_us'])} | {f1(r.get('stock_gpu_us'))} | {f1(r['ours_gpu_us'])} ({r['ours_path']}) | "
            f"{f1(i4)} ({r.get('ours_int4_path', '—')}) | {f1(r.get('mma_gpu_us'))} | "
            f"{f1(r.get('mma_int4_gpu_us'))} | {f1(r.get('cusparselt_gpu_us'))} | {f1(r['bound_us_24_bytes'])} | "
            f"{r['dense_gpu_us'] / r['ours_gpu_us']:.2f}× | {ratio4} |"
        )

    def chosen(name: str, m: int) -> dict:  # {shape: µs of the chosen path}
        return {k.split(" M=")[0]: v[v["chosen"]] for k, v in paths[name].items() if k.endswith(f" M={m}")}

    g_int4 = per_token(chosen("ours_int4_2of4", 1))
    bound4 = per_token({s: g[(s, 1)]["bound_us_int4_bytes"] for s, _ in shapes7})
    over4 = [chosen("ours_int4_2of4", 1)[s] - g[(s, 1)]["bound_us_int4_bytes"] for s, _ in shapes7]
    over24 = [chosen("ours_2of4", 1)[s] - g[(s, 1)]["bound_us_24_bytes"] for s, _ in shapes7]
    pre_ratio = [r["dense_gpu_us"] / r["ours_gpu_us"] for r in g.values() if r["m"] == 2048]
    ex = {(r["shape"], r["m"]): r["ours_gpu_us"] for r in extra}
    fused = [(f, s, n) for f, s, n in (("12288x4096", "4096x4096", 3), ("22016x4096", "11008x4096", 2))
             if (f, 1) in ex]  # fmt: skip
    fused_save = [1 - ex[(f, 1)] / (n * g[(s, 1)]["ours_gpu_us"]) for f, s, n in fused]  # M = 1, same kernels
    exd = {(r["shape"], r["m"]): r["dense_gpu_us"] for r in extra}
    saved_us = {  # µs per layer one fused q/k/v + one fused gate/up save at M = 1
        k: sum(n * g[(s, 1)][f"{k}_gpu_us"] - src[(f, 1)] for f, s, n in fused)
        for k, src in (("dense", exd), ("ours", ex))
    }
    gd = _kernel_split(prof["dense"])["GEMM"] if prof.get("dense") else per_token(
        {s: g[(s, 2048)]["dense_gpu_us"] for s, _ in shapes7})  # fmt: skip
    need = gd / (pc["dense"] / 1.3 - (pc["dense"] - gd))  # GEMM speedup 1.3x needs, non-GEMM time kept
    same_kernels = [v for sec in (pc, pg) for k, v in sec.items() if k in ("ours_2of4", "ours_int4_2of4")]
    m64 = [r["dense_gpu_us"] / r["ours_gpu_us"] for r in g.values() if r["m"] == 64]
    m16 = [r["dense_gpu_us"] / r["ours_gpu_us"] for r in g.values() if r["m"] == 16]
    g4 = {m: g.get(("4096x4096", m), {}) for m in (16, 64)}
    lines += ["", "What the figures say, and what would close the gaps:", ""]
    if {"dense", "ours_2of4", "ours_int4_2of4"} <= set(dprof):
        ds = {k: _kernel_split(dprof[k]) for k in ("dense", "ours_2of4", "ours_int4_2of4")}
        step = {k: dprof[k]["step_ms"] for k in ds}
        rest = {k: step[k] - ds[k]["GEMM"] for k in ds}  # non-GEMM kernels + time between kernels
        lm_head = {k: max(v["ms"] for n, v in dprof[k]["top"].items() if v["calls"] == 1 and "nvjet" in n)
                   for k in ds}  # fmt: skip
        budget = step["dense"] / 3 - rest["ours_int4_2of4"]  # GEMM ms a 3x int4 step leaves
        reduce = sum(v["calls"] for n, v in dprof["dense"]["top"].items() if "splitKreduce" in n) / layers
        xfer = [g[(s, 1)]["bound_us_int4_bytes"] for s, _ in shapes7]
        lines += [
            f"- **Decode, batch 1, bf16: {dc1['ours_2of4'] / dc1['dense']:.2f}×.** In the decode profile (of the "
            "runtime before issue 16, not re-run) the "
            f"GEMMs (lm_head included) take {ds['dense']['GEMM']:.2f} ms of dense's {step['dense']:.2f} ms step and "
            f"{ds['ours_2of4']['GEMM']:.2f} ms of ours' {step['ours_2of4']:.2f} ms; the rest — attention, norms, "
            f"rotary, residuals, and the gaps between a graph's kernels — is {rest['dense']:.2f} ms dense and "
            f"{rest['ours_2of4']:.2f} ms ours (ours has fewer kernels: cuBLAS adds a split-K reduction kernel to "
            f"{reduce:.0f} of a layer's 7 GEMMs). Each of our bf16 launches sits "
            f"{min(over24):.1f}–{max(over24):.1f} µs above its byte bound (launch, ramp-up, tail), about as far "
            "as cuBLAS sits above its own.",
            f"- **Decode, batch 1, int4: {dc1['ours_int4_2of4'] / dc1['dense']:.2f}×** (1.72× on 2026-11-28 with "
            "the CUDA GEMV, whose integer work per kept value bounded it; bench/logs/runtime_v6_*). The tensor-core "
            "kernel (`csrc/sparse24_mma.cu`) lets `mma.sp` pick each group's x values and multiply; the CUDA cores "
            "only turn nibbles into bf16 (3 operations per 2 values). Its 224 int4 GEMMs take "
            f"{g_int4:.2f} ms per token (path search), {min(over4):.1f}–{max(over4):.1f} µs each above their byte "
            f"bounds (all 224 at the bound: {bound4:.2f} ms). A 3× step is {step['dense'] / 3:.2f} ms (profiled "
            f"dense step / 3); ours' non-GEMM kernels and gaps take {rest['ours_int4_2of4']:.2f} ms of it, which "
            f"leaves {budget:.2f} ms for all GEMMs including lm_head ({lm_head['ours_int4_2of4']:.2f} ms, bf16) — "
            f"against {ds['ours_int4_2of4']['GEMM']:.2f} ms now and {bound4 + lm_head['ours_int4_2of4']:.2f} ms "
            f"at the byte bound. So 3× needs the int4 GEMMs within "
            f"{(budget - lm_head['ours_int4_2of4'] - bound4) * 1000 / 224:.1f} µs of their byte bound on average "
            f"(each is a {min(xfer):.1f}–{max(xfer):.1f} µs transfer), "
            "or a smaller non-GEMM part, which shrinks dense's step as well. "
            "What would close it: fewer, longer GEMM launches (a persistent kernel over a layer's GEMMs, or "
            "programmatic dependent launch so that each kernel's prologue overlaps its predecessor's tail) and a "
            "fused decoder step (norm + rotary + attention + residual in fewer kernels). Fusing q/k/v and gate/up "
            f"into one GEMM each (fused table above: {min(fused_save or [0]):.0%}–{max(fused_save or [0]):.0%} "
            f"less time at M = 1) saves dense {saved_us['dense']:.1f} µs per layer and ours "
            f"{saved_us['ours']:.1f}, so it raises tokens/s for both but not the ratio.",
        ]
    else:
        dense_ms, ours_ms, int4_ms = (1000 / dc1[k] for k in ("dense", "ours_2of4", "ours_int4_2of4"))
        lines += [
            f"- **Decode, batch 1: {dc1['ours_2of4'] / dc1['dense']:.2f}× bf16, "
            f"{dc1['ours_int4_2of4'] / dc1['dense']:.2f}× int4.** Per token the 224 GEMMs take "
            f"{per_token({s: g[(s, 1)]['dense_gpu_us'] for s, _ in shapes7}):.2f} ms dense, "
            f"{per_token(chosen('ours_2of4', 1)):.2f} ms ours bf16 and {g_int4:.2f} ms int4 (byte bound "
            f"{bound4:.2f} ms); measured tokens {dense_ms:.2f}, {ours_ms:.2f} and {int4_ms:.2f} ms. Run with "
            "`--profile` for the per-step split.",
        ]
    dc16_4 = dc16.get("ours_int4_2of4")
    lines += [
        f"- **Decode, batch 16: {dc16['ours_2of4'] / dc16['dense']:.2f}× bf16"
        + (f", {dc16_4 / dc16['dense']:.2f}× int4" if dc16_4 else "")
        + "** (0.71× with the paths before the tensor-core kernel; 1.26× bf16 and 1.30× int4 with its "
        "fragment-ordered copy before issue 16): at M = 16 the tensor-core kernel reads each weight once for all "
        "16 tokens and shares each x fragment across up to 4 row tiles (`rows` in its launch search); reading the "
        f"one resident form it is {min(m16):.2f}–{max(m16):.2f}× cuBLAS per GEMM there, and cuSPARSELt's small-M "
        "kernels are slower than cuBLAS. At M = 64 every "
        f"path of ours is slower than cuBLAS ({min(m64):.2f}–{max(m64):.2f}× in the per-GEMM table; the "
        f"tensor-core kernel's time grows with M past 16 — {f1(g4[16].get('mma_gpu_us'))} µs at M = 16, "
        f"{f1(g4[64].get('mma_gpu_us'))} µs at M = 64 for 4096×4096 — so it is no longer bound by the weight "
        "bytes there), so batch 64 decode would be slower than dense.",
        f"- **Prefill: {pc['dense'] / pc['ours_2of4']:.2f}×**"
        + (
            f" ({pg['dense'] / pg['ours_2of4']:.2f}× replayed from a CUDA graph)"
            if {"dense", "ours_2of4"} <= set(pg)
            else ""
        )  # fmt: skip
        + f". cuSPARSELt (plans cached) runs the M = 2048 GEMMs {min(pre_ratio):.2f}–{max(pre_ratio):.2f}× "
        "faster than cuBLAS; neither another operand layout nor the search's split-K settings raise that, and "
        "neither does fusing q/k/v or gate/up (tables above). Attention (cuDNN flash) and element-wise "
        "work are the same for both. "
        + (
            "The time the profiler does not attribute to kernels is about the same for both and is not host launch "
            "work (the graph replay takes as long). "
            if "dense" in prof and {"dense", "ours_2of4"} <= set(pg)
            else ""
        )
        + (
            f"The kernel sums alone give "
            f"{prof['dense']['kernels_total_ms'] / prof['ours_2of4']['kernels_total_ms']:.2f}×. "
            if "dense" in prof and "ours_2of4" in prof
            else ""
        )
        + f"1.3× in the measured prefill needs sparse GEMMs {need:.2f}× faster than cuBLAS (non-GEMM time kept), "
        "beyond what cuSPARSELt 0.8 gives on these shapes (2:4's ceiling is 2×). The prefill figures move by a "
        f"few percent between calls — the same prefill kernels (bf16 and int4 models, measured and graph-replayed) "
        f"took {min(same_kernels):.1f}–{max(same_kernels):.1f} ms — so the graph-replayed ratio is at the goal's "
        "edge, not past it. What would "
        "close it: a tuned sm90 sparse GEMM (CUTLASS `wgmma.sp` with TMA) or fp8 2:4 (`torch._cslt_sparse_mm` "
        "accepts fp8) with its own accuracy study.",
        "- **Memory.** One resident form per layer (issue 16): bf16 keeps cuSPARSELt's compressed form alone "
        "(1.125 bytes per weight, read by the tensor-core kernel and by cuSPARSELt), int4 its nibbles, scales and "
        "that form's metadata section (0.39 bytes per weight); the memory row is whole models (embeddings and "
        "head included) as prepared.",
        "- Kernel versions and logs: bench/logs/ (v1: Triton tile expansion; v2: per-column expansion, 3–10× "
        "slower; v3: cuSPARSELt everywhere; v4/v5: Triton GEMV + path search; v6: the CUDA GEMV and compiled mode "
        "— gemv_sweep_v1..v3.log trace the CUDA kernel; v7: prefill profile, fused shapes, the tensor-core kernel "
        "— runtime_v7_gemm_mma_r1.log is its first version, one row tile per block, slow at M ≥ 16; v8: the GEMM "
        "table with the tensor-core kernel, decode profiles, graph-replayed prefill, eager rows; cslt_layouts.log: "
        "the cuSPARSELt layout and split-K experiment).",
        "",
    ]
    return lines


def user_path(d: dict) -> list[str]:
    """Issue 16's user-path section (bench/user_path.py): transformers generate, a user's torch.compile, memory;
    each 2:4 figure also as a ratio to dense in the same row."""
    up = d.get("user_path")
    if not up:
        return []
    run = up.get("run", {})
    names = [("dense", "dense"), ("ours_2of4", "bf16 2:4"), ("ours_int4_2of4", "int4 2:4")]

    def cells(vals: dict, higher_better: bool) -> str:
        base = vals.get("dense")
        out = []
        for k, _ in names:
            v = vals.get(k)
            if v is None:
                out.append("—")
            elif k == "dense" or not base:
                out.append(f"{v:.1f}")
            else:
                out.append(f"{v:.1f} ({(v / base if higher_better else base / v):.2f}×)")
        return " | ".join(out)

    lines = [
        f"### User path (issue 16): `{run.get('command', 'python bench/user_path.py')}`",
        "",
        f"{run.get('machine', '')}, {run.get('date', '')}; Llama-2-7B-shaped, {up.get('layers')} layers, random "
        "weights with magnitude 2:4 masks, as `load_runtime_model` gives them (no path search). Decode: "
        f"transformers `generate`, static cache, greedy, {up.get('context')}-token prompt, rate from a "
        f"{up.get('short_long', ['?', '?'])[1]}- minus a {up.get('short_long', ['?', '?'])[0]}-token call (CUDA "
        "events around whole calls). Ratios: against dense in the same row (prefill: dense ms / ours).",
        "",
        "| | " + " | ".join(label for _, label in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for key, label in (("decode_tok_s", "decode tok/s, compiled (transformers' own)"),
                       ("decode_tok_s_nocompile", "decode tok/s, `disable_compile=True`")):  # fmt: skip
        for b, vals in up.get(key, {}).items():
            lines.append(f"| {label}, {b.replace('batch', 'batch ')} | {cells(vals, True)} |")
    for key, label in (("eager", "prefill 2048 ms, eager"), ("compiled", "prefill 2048 ms, `torch.compile(model)`")):
        vals = up.get("prefill_ms", {}).get(key)
        if vals:
            lines.append(f"| {label} | {cells(vals, False)} |")
    mem = up.get("memory_gib")
    if mem:

        def gib(k: str) -> str:
            if mem.get(k) is None:
                return "—"
            ratio = "" if k == "dense" or not mem.get("dense") else f" ({mem[k] / mem['dense']:.2f}×)"
            return f"{mem[k]:.2f}{ratio}"

        lines.append("| weights + buffers GiB | " + " | ".join(gib(k) for k, _ in names) + " |")
    lin = up.get("linear_weight_gib")
    if lin and lin.get("dense"):

        def lgib(k: str) -> str:
            if lin.get(k) is None:
                return "—"
            return f"{lin[k]:.3f}" + ("" if k == "dense" else f" ({lin[k] / lin['dense']:.4f}×)")

        lines.append("| decoder Linear weights GiB | " + " | ".join(lgib(k) for k, _ in names) + " |")
    graphs = up.get("prefill_compiled_graphs")
    if graphs:
        lines += ["", "Graphs dynamo compiled for the prefill at two lengths: "
                  + ", ".join(f"{k} {v}" for k, v in graphs.items()) + "."]  # fmt: skip
    if up.get("linear_weight_gib_note"):
        lines += ["", f"Decoder Linear weights: {up['linear_weight_gib_note']}."]
    if up.get("errors"):
        lines += ["", "Failed: " + "; ".join(f"{k}: {v}" for k, v in up["errors"].items()) + "."]
    for k, v in up.get("not_measured", {}).items():
        lines += ["", f"Not measured: {k} — {v}"]
    lines += one_form(d.get("one_form"))
    return [*lines, ""]


def one_form(of: dict | None) -> list[str]:
    """Issue 16's checks of the one resident form: cuSPARSELt's layout against ours, its M limits, host cost."""
    if not of:
        return []
    lay, odd, ho = of["layout"], of["odd_m"], of["host_overhead"]
    small, big = lay["small_probes"], lay["seven_b_shapes"]
    lines = [
        "",
        f"### The one resident form (issue 16), {of['machine']}, {of['date']}",
        "",
        f"- cuSPARSELt's compressed layout against `cslt_layout.to_cslt`: {small['bit_exact']}/{small['matrices']} "
        f"probe matrices bit-exact over {', '.join(small['shapes'])} (`{small['command']}`); the shapes "
        f"{', '.join(big['shapes'])} bit-exact on a probe weight (`{big['command']}`).",
        f"- cuSPARSELt planned unpadded at M off a multiple of 16 ({odd['shape']}, `{odd['command']}`): "
        + "; ".join(
            f"M = {m}: "
            + ("refused" if "error" in v else f"first call {v['first_call_ms']} ms, then {v['cached_call_ms']} ms")
            for m, v in odd["results"].items()
        )
        + " (M not divisible by 8 is refused; a new M pays a search) — hence the M buckets of `cusparselt.bucket`.",
        f"- {of['cutlass_sm90']}.",
        "",
        f"Per-call cost, `{ho['command']}`:",
        "",
        "| " + " | ".join(ho["columns"]) + " |",
        "|---|---|---:|---:|",
        *(f"| {c} | {name} | {e:.1f} | {g:.1f} |" for c, name, e, g in ho["rows"]),
        "",
    ]
    return lines
