"""Write BENCHMARKS.md from the results files in bench/ (run by `make bench` after measuring)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS = [
    ("dense", "dense"),
    ("magnitude_50", "magnitude 50%"),
    ("magnitude_2of4", "magnitude 2:4"),
    ("wanda_50", "Wanda 50%"),
    ("wanda_4of8", "Wanda 4:8"),
    ("wanda_2of4", "Wanda 2:4"),
]


def _smollm2(d: dict, title: str) -> list[str]:
    run, cal, ev, t = d["runs"]["smollm2"], d["calibration"], d["smollm2_eval"], d["smollm2_timings"]
    lines = [
        f"### {title}",
        "",
        f"Command: `{run['command']}` — machine: {run['machine']} — date: {run['date']}.",
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


ZS_TASKS = ["boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]
ZS_LABELS = ["BoolQ", "RTE", "HellaSwag", "WinoGrande", "ARC-e", "ARC-c", "OBQA"]


def _zeroshot(d: dict, title: str) -> list[str]:
    run, cal = d["run"], d["calibration"]
    ck = d["checkpoints"]
    limit = next(iter(ck.values()))["limit"]
    lines = [
        f"### {title}",
        "",
        f"Command: `{run['command']}` — machine: {run['machine']} — date: {run['date']}.",
        f"Checkpoints made by the pipeline with {cal['nsamples']} × {cal['seqlen']} tokens of `{cal['dataset']}`, "
        f"model in {d['dtype']}; lm-eval 0.4.13, 0-shot, lm-eval's own task definitions on the embedded "
        f"validation files ({'full sets' if limit is None else f'first {limit} examples per task'}; ARC and "
        "OBQA use validation, the papers use test). `acc` in %, ± its standard error; mean = mean `acc`.",
        "",
        "| checkpoint | " + " | ".join(ZS_LABELS) + " | mean | size (MB) | eval wall (s) |",
        "|---|" + "---:|" * (len(ZS_LABELS) + 3),
    ]
    for name, r in ck.items():
        cells = [f"{100 * r[t]['acc']:.1f} ± {100 * r[t]['acc_stderr']:.1f}" for t in ZS_TASKS]
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {100 * r['mean_acc']:.2f} | "
            f"{r['size_bytes'] / 1e6:.0f} | {r['wall_s']:.0f} |"
        )
    norm = [
        f"{name}: "
        + ", ".join(
            f"{lab} {100 * r[t]['acc_norm']:.1f}"
            for t, lab in zip(ZS_TASKS, ZS_LABELS, strict=True)
            if r[t].get("acc_norm") is not None
        )
        for name, r in ck.items()
    ]
    lines += ["", "`acc_norm` where the task has it — " + "; ".join(norm) + "."]
    lines += [f"{name}: {r['wall_s_note']}." for name, r in ck.items() if r.get("wall_s_note")]
    lines.append("")
    return lines


PR_CELLS = ["50", "60", "70", "4of8", "2of4"]
PR_LABELS = ["50%", "60%", "70%", "4:8", "2:4"]


def _fmt(x) -> str:
    return "—" if x is None else (f"{x:.1f}" if x < 1e4 else f"{x:.3g}")


def _pruning(gpu: dict | None, cpu: dict | None) -> list[str]:
    lines = ["## Pruning methods (issue #4): SmolLM2-135M wiki perplexity", ""]
    if gpu:
        run, cal = gpu["run"], gpu["calibration"]
        lines += [
            f"H200, {cal['nsamples']} × {cal['seqlen']} `{cal['dataset']}` calibration, {cal['dtype']}, "
            f"{cal['eval_windows']} windows. Commands: " + "; ".join(f"`{c}`" for c in run["commands"]) + ". "
            "— = not measured.",
            "",
            f"Dense: {gpu['wiki_ppl']['dense']:.2f}.",
            "",
            "| method | " + " | ".join(PR_LABELS) + " |",
            "|---|" + "---:|" * len(PR_CELLS),
        ]
        for m, row in gpu["wiki_ppl"].items():
            if m != "dense":
                lines.append(f"| {m} | " + " | ".join(_fmt(row.get(c)) for c in PR_CELLS) + " |")
        t = gpu.get("time_s_7b_shape", {})
        lines += [
            "",
            "Time on the Llama-2-7B-shaped model (H200, bf16, 128 × 2048 calibration, 2:4; OWL at 70% unstructured), "
            "commands above with `--part llama7b`: the method's own compute (the driver's `step`, "
            "scaled from the layers timed to 32) — "
            + "; ".join(f"{m} {v['estimated_32_layers_step_s']:.2f} s" for m, v in t.items() if v)
            + "; whole calibrate + prune (scaled, includes per-call overhead ×16): "
            + "; ".join(f"{m} {v['estimated_32_layers_s']:.0f} s" for m, v in t.items() if v)
            + ". Not measured: "
            + ", ".join(m for m, v in t.items() if not v)
            + ".",
            "",
        ]
    if cpu:
        cal = cpu["calibration"]
        lines += [
            f"CPU cells (labelled: {cal['nsamples']} × {cal['seqlen']} calibration, fp32, first "
            f"{cal['eval_windows']} windows of 2048), commands "
            + "; ".join(f"`{c}`" for c in cpu["run"]["commands"])
            + f" — dense "
            f"{cpu['wiki_ppl']['dense']:.2f}:",
            "",
        ]
        lines += ["| method | " + " | ".join(PR_LABELS) + " |", "|---|" + "---:|" * len(PR_CELLS)]
        for m, row in cpu["wiki_ppl"].items():
            if m != "dense":
                lines.append(f"| {m} | " + " | ".join(_fmt(row.get(c)) for c in PR_CELLS) + " |")
        lines.append("")
    return lines


def _runtime(d: dict) -> list[str]:
    """Issue #5 section from bench/runtime.json."""
    e2e, run = d["end_to_end"], d["run"]
    p, b1, b16 = e2e["prefill_ms"], e2e["decode_tok_s"]["batch1"], e2e["decode_tok_s"]["batch16"]
    names = [("dense", "dense bf16"), ("stock_2of4", "stock torch 2:4"), ("ours_2of4", "ours 2:4 bf16"),
             ("ours_int4_2of4", "ours 2:4 int4")]  # fmt: skip
    f1 = lambda x: "—" if x is None else f"{x:.1f}"  # noqa: E731
    lines = [
        "## Runtime (issue #5): 2:4 on the H200",
        "",
        f"`{run['command']}` (= `make bench-runtime`), {run['date']}, {run['machine']}, torch {d['torch']}, "
        f"prefill backend `{d['prefill_backend']}` (our cached-plan cuSPARSELt shim); device-to-device copy "
        f"{d['copy_bandwidth_tb_s']:.2f} TB/s. Llama-2-7B-shaped model ({e2e['layers']} layers, random weights, "
        "magnitude 2:4 masks on every decoder Linear), bf16; decode = greedy steps with a static KV cache after a "
        "128-token prefill, one step replayed from a CUDA graph "
        f"({', '.join(sorted(set(e2e['decode_mode'].values())))}). Every output was checked against an fp32 matmul "
        "of the same masked weights before timing (largest relative error of any path: "
        + f"{max(v for r in d['gemm'] for k, v in r.items() if k.startswith('rel_err') and v is not None):.1e}"
        + "; logits vs dense: "
        + ", ".join(f"{k} {v:.3f}" for k, v in e2e["logits_rel_err"].items())
        + ", bf16 rounding through 32 layers).",
        "",
        "| | " + " | ".join(label for _, label in names) + " |",
        "|---|" + "---:|" * len(names),
        "| prefill 2048 tokens (ms) | " + " | ".join(f1(p.get(k)) for k, _ in names) + " |",
        "| decode tok/s, batch 1 | " + " | ".join(f1(b1.get(k)) for k, _ in names) + " |",
        "| decode tok/s, batch 16 | " + " | ".join(f1(b16.get(k)) for k, _ in names) + " |",
        "| weights + buffers (GiB) | "
        + " | ".join(f1(d["memory_gib"].get(k)) if k in d["memory_gib"] else "—" for k, _ in names)
        + " |",
        "",
        f"Against dense bf16 in the same run: **prefill {d['prefill_speedup_bf16_2of4']:.2f}×** (goal 1.3×), "
        f"**decode batch 1 {d['decode_speedup_bf16_2of4']:.2f}×** bf16 (goal 1.5×) and "
        f"**{d['decode_speedup_int4_2of4']:.2f}×** int4 (goal 3×); stock torch 2:4: prefill "
        f"{p['dense'] / p['stock_2of4']:.2f}×, decode {b1['stock_2of4'] / b1['dense']:.2f}×. Goals not reached "
        "are explained below. Our bf16 model holds the packed weights for the Triton kernels *and* cuSPARSELt's "
        "compressed copy (both 56% of dense), hence more memory than dense.",
        "",
        "Per GEMM (µs; N×K = out×in features; *eager* = a plain PyTorch call, host work included; *GPU* = the same "
        "calls replayed from a CUDA graph; weights rotated over copies larger than L2; bound = 2:4 bytes / copy "
        "bandwidth):",
        "",
        "| N×K | M | dense eager | stock eager | ours eager | dense GPU | stock GPU | ours GPU (path) | ours int4 GPU "
        "| Triton GPU | cuSPARSELt GPU | 2:4 byte bound | ours/dense GPU |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in d["gemm"]:
        if r.get("timed") is False:
            lines.append(f"| {r['shape']} | {r['m']} | correctness check failed | | | | | | | | | | |")
            continue
        lines.append(
            f"| {r['shape']} | {r['m']} | {f1(r['dense_us'])} | {f1(r.get('stock_us'))} | {f1(r['ours_us'])} | "
            f"{f1(r['dense_gpu_us'])} | {f1(r.get('stock_gpu_us'))} | {f1(r['ours_gpu_us'])} ({r['ours_path']}) | "
            f"{f1(r.get('ours_int4_gpu_us'))} | {f1(r.get('triton_gpu_us'))} | {f1(r.get('cusparselt_gpu_us'))} | "
            f"{f1(r['bound_us_24_bytes'])} | {r['dense_gpu_us'] / r['ours_gpu_us']:.2f}× |"
        )
    g = {(r["shape"], r["m"]): r for r in d["gemm"] if r.get("timed") is not False}

    def per_token(key: str, m: int = 1) -> float:  # one decoder layer's 7 GEMMs x layers, µs
        shapes = [("4096x4096", 4), ("11008x4096", 2), ("4096x11008", 1)]
        return e2e["layers"] * sum(n * g[(s, m)][key] for s, n in shapes) / 1000

    dense_ms, ours_ms = 1000 / b1["dense"], 1000 / b1["ours_2of4"]
    pre_ratio = [r["dense_gpu_us"] / r["ours_gpu_us"] for r in g.values() if r["m"] == 2048]
    small_ratio = [r["cusparselt_gpu_us"] / r["dense_gpu_us"] for r in g.values() if r["m"] in (16, 64)]
    lines += [
        "",
        "What the figures say, and what would close the gaps:",
        "",
        f"- **Prefill.** With plans made once per shape, cuSPARSELt runs the M = 2048 GEMMs "
        f"{min(pre_ratio):.2f}–{max(pre_ratio):.2f}× faster than "
        "cuBLAS, and eager calls cost what graph replays cost (stock torch 2:4 pays 0.5–2 ms of host set-up per "
        "call in eager mode, which is why it is far *slower* than dense in eager prefill). End to end the gain "
        "shrinks to "
        f"{d['prefill_speedup_bf16_2of4']:.2f}× because the rest is untouched: the 224 GEMMs of a 2048-token "
        f"prefill take {per_token('dense_gpu_us', 2048):.1f} ms dense and {per_token('ours_gpu_us', 2048):.1f} ms "
        f"ours (GPU times above), so {p['dense'] - per_token('dense_gpu_us', 2048):.1f} ms of the dense "
        f"{p['dense']:.1f} ms is attention, norms, rotary, lm_head and host work. Reaching 1.3× needs the GEMMs "
        f"{per_token('dense_gpu_us', 2048) / (p['dense'] / 1.3 - (p['dense'] - per_token('dense_gpu_us', 2048))):.2f}× "
        f"faster than cuBLAS (cuSPARSELt gives {min(pre_ratio):.2f}–{max(pre_ratio):.2f}×, the 2:4 ceiling is 2×) "
        "or that non-GEMM time cut: "
        "profiling it is the next step. Fusing q/k/v or gate/up would not help by these figures (the wider "
        "11008-row shape gains less than 4096×4096).",
        f"- **Decode, batch 1.** A dense token takes {dense_ms:.2f} ms, of which the 224 GEMMs take "
        f"{per_token('dense_gpu_us'):.2f} ms (GPU times above); ours {ours_ms:.2f} ms with GEMMs at "
        f"{per_token('ours_gpu_us'):.2f} ms. Our M = 1 Triton GEMV reaches only dense speed: "
        f"{g[('4096x4096', 1)]['ours_gpu_us']:.1f} µs for 4096×4096 against a 2:4 byte bound of "
        f"{g[('4096x4096', 1)]['bound_us_24_bytes']:.1f} µs — and the int4 kernel, which reads a third of those "
        f"bytes, takes the same {g[('4096x4096', 1)]['ours_int4_gpu_us']:.1f} µs. So it is bound by instructions "
        "and latency per 4-column group (presumably the per-element metadata loads, int16/bf16 bit casts and "
        "selects in Triton's layout; no profiler counters were read), not by memory. At the byte bound the GEMMs "
        "would take "
        f"{per_token('bound_us_24_bytes'):.2f} ms (bf16) and {per_token('bound_us_int4_bytes'):.2f} ms (int4), "
        f"i.e. about {dense_ms / (dense_ms - per_token('dense_gpu_us') + per_token('bound_us_24_bytes')):.2f}× and "
        f"{dense_ms / (dense_ms - per_token('dense_gpu_us') + per_token('bound_us_int4_bytes')):.2f}× end to end: "
        "the ~3 ms of non-GEMM kernels per token cap int4 below the 3× goal unless they are fused too. What would "
        "close the GEMM gap: a CUDA kernel with 16-byte vector loads of eight groups per thread, the metadata "
        "word kept in a register, x in shared memory and bit-op bf16 extraction, or the sparse tensor-core "
        "`mma.sp` instruction fed with metadata pre-shuffled into its fragment layout (Sparse-Marlin's design).",
        f"- **Decode, batch 16.** cuSPARSELt's small-M kernels are {min(small_ratio):.1f}–{max(small_ratio):.1f}× "
        "slower than cuBLAS (M = 16 and 64) and our Triton "
        "tile kernel (which expands the 2:4 tile in registers before a dense `tl.dot`) is slower still for the "
        "11008-wide shapes; the per-shape search picks the faster of the two "
        "(`end_to_end.paths` in bench/runtime.json). The `mma.sp` kernel above is the fix here too.",
        "- Kernel versions and their logs: bench/logs/ (v1: tile expansion with joins, M = 1 padded to 16; v2: "
        "per-column expansion, 3–10× slower; v3: cuSPARSELt everywhere; v4/v5: the M = 1 GEMV + path search).",
        "",
    ]
    return lines


def common_args(batch_size: int):
    """The arguments every SmolLM2/7B-shape benchmark takes."""
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--part", choices=["smollm2", "llama7b", "all"], default="all")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--eval-seqlen", type=int, default=2048)
    p.add_argument("--eval-max-windows", type=int)
    return p


def llama2_7b_shaped(layers: int, device):
    """A Llama-2-7B-shaped model (4096 / 11008, 32 heads, 32000 vocab) with `layers` decoder layers, random
    weights from seed 0, bf16, on `device` — speed benchmarks need the shapes, not trained weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    with torch.device(device):
        return LlamaForCausalLM(config).to(torch.bfloat16)


def run_meta() -> dict:
    """Date, command and machine of a benchmark run, stored beside its figures."""
    import datetime
    import os
    import platform
    import sys

    from compress.environment import environment

    gpu = environment()["cuda_device"] or "no GPU"
    return {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{gpu}, {os.cpu_count()} CPU cores, {platform.machine()}",
    }


def save(path: Path, results: dict) -> None:
    """Write a results file, then BENCHMARKS.md from all of them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    (ROOT / "BENCHMARKS.md").write_text(render())
    print(f"wrote {path} and BENCHMARKS.md")


def render() -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (bench/foundation.py, then bench/render.py); raw figures in bench/*.json.",
        "",
        "## Foundation (issue #2): SmolLM2-135M perplexity after pruning",
        "",
    ]
    gpu, cpu = ROOT / "bench/foundation.json", ROOT / "bench/foundation_cpu.json"
    if gpu.exists() and "smollm2_wiki_ppl" in json.loads(gpu.read_text()):
        lines += _smollm2(json.loads(gpu.read_text()), "GPU, paper protocol (128 × 2048 calibration)")
    if cpu.exists():
        lines += _smollm2(
            json.loads(cpu.read_text()),
            "CPU, reduced protocol (labelled: 32 × 1024 calibration, first 16 perplexity windows)",
        )
    if gpu.exists() and "llama2_7b_shape_wanda_2of4" in (d := json.loads(gpu.read_text())):
        r, run = d["llama2_7b_shape_wanda_2of4"], d["runs"]["llama7b"]
        t = r["driver_timings_s"]
        lines += [
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
            "Reading: the two forward passes over 128 × 2048 tokens per layer (statistics, then the next layer's "
            "inputs) are the compute floor (≈ 9 s); the output pass also computes ΔW·x for every Linear to report "
            "its output error (one more matmul per Linear, ≈ 5 s). Only one decoder layer (plus its dense copy for "
            "the error) and the 2 GiB of hidden states are on the GPU.",
            "",
        ]
    zs_gpu, zs_cpu = ROOT / "bench/zeroshot.json", ROOT / "bench/zeroshot_cpu.json"
    if zs_gpu.exists() or zs_cpu.exists():
        lines += ["## Zero-shot (issue #3): SmolLM2-135M on the seven tasks of the pruning papers", ""]
    if zs_gpu.exists():
        lines += _zeroshot(json.loads(zs_gpu.read_text()), "GPU, full validation sets")
    if zs_cpu.exists():
        lines += _zeroshot(json.loads(zs_cpu.read_text()), "CPU, reduced (labelled: example limit per task)")
    pr_gpu, pr_cpu = ROOT / "bench/pruning.json", ROOT / "bench/pruning_cpu.json"
    if pr_gpu.exists() or pr_cpu.exists():
        lines += _pruning(
            json.loads(pr_gpu.read_text()) if pr_gpu.exists() else None,
            json.loads(pr_cpu.read_text())
            if pr_cpu.exists() and "calibration" in json.loads(pr_cpu.read_text())
            else None,
        )
    rt = ROOT / "bench/runtime.json"
    if rt.exists():
        lines += _runtime(json.loads(rt.read_text()))
    lines += [
        "## Notes",
        "",
        "- SmolLM2-135M is a small, heavily trained model, so every pruning pattern costs far more perplexity "
        "than on LLaMA-7B; the ordering matches the Wanda paper: magnitude ≫ Wanda at every pattern, and "
        "for Wanda 50% unstructured < 4:8 < 2:4.",
        "- The embedded model is a Q4_1 GGUF dequantised on load; the `wiki` set is SQuAD's Wikipedia "
        "paragraphs, not WikiText-2, so the figures are not comparable to the papers' tables.",
        "- CPU and GPU rows differ in calibration size, dtype (fp32 vs bf16) and number of windows.",
        "- Zero-shot: SmolLM2-135M sits near chance on several tasks (RTE, WinoGrande, BoolQ, ARC-c), so "
        "differences there are within one or two standard errors; HellaSwag and ARC-e carry the signal "
        "(dense > Wanda 50% > Wanda 2:4 > magnitude 2:4). BoolQ *rises* after pruning because the dense "
        "model answers 'no' far more often than the 62% 'yes' base rate.",
        "- Pruning methods (GPU table): SparseGPT ≈ Wanda at 50% (55.9 vs 57.6) and far ahead at 60–70% and N:M "
        "(2:4: 120 vs 272), the papers' pattern. OWL lowers Wanda's 70% perplexity 1496 → 1063 (the paper's "
        "regime: high sparsity) and does not help at 50–60%.",
        "- DSnoT does not improve every init here, unlike on LLaMA-7B. What the rows show: (1) refining every layer "
        "hurts Wanda at 50–60% (57.6 → 59.8, 174.6 → 182.4) while the reference's default `skip: [mlp]` "
        "improves it at 60%, 70%, 4:8 and 2:4 (166.4, 1263, 106.7, 213.4) — the MLP refinement is what hurts on "
        "this model; (2) magnitude masks gain most (50%: 573 → 178), but at 70% the every-layer refinement "
        "diverges (4.3e6) while skip-MLP still helps (54 003); (3) `sparsegpt+dsnot` follows the reference's "
        "`--initial_method sparsegpt`: SparseGPT's one-shot saliency mask and the dense values, no OBS weight "
        "update, so it loses SparseGPT's reconstruction and lands between Wanda and SparseGPT (2:4: 197 vs 120 "
        "and 272). An earlier version refined SparseGPT-*updated* weights with DSnoT's dense-weight error model; "
        "that double-compensates and was worse (2:4: 184, 60%: 336); those rows are kept in pruning.json under "
        "`superseded`. DSnoT's objective is the per-row *mean* output error; on a small, heavily trained model "
        "matching the mean by swapping weights can cost more than it saves.",
        "- SparseGPT's 7B-shape time (419 s of method compute, scaled from 2 layers) is twice the paper's 203 s "
        "on an A100: the column loop runs one Python iteration per input column, as the reference does, and "
        "our H200 run is launch-bound there.",
        "",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    (ROOT / "BENCHMARKS.md").write_text(render())
