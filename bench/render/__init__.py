"""Write BENCHMARKS.md from the results files in bench/ (`save` does it after every benchmark run; by hand:
`python -m bench.render`). One module per benchmark renders its section from its JSON, notes included."""

from __future__ import annotations

import json
from pathlib import Path

from bench.render import (
    checks,
    cpu_numerics,
    driver_speed,
    finetune,
    foundation,
    interop,
    pruning,
    quant,
    runtime,
    zeroshot,
)
from bench.render.common import ROOT, common_args, llama2_7b_shaped, run_meta

__all__ = ["ROOT", "common_args", "llama2_7b_shaped", "main", "render", "run_meta", "save"]


def _read(name: str) -> dict | None:
    path = ROOT / "bench" / name
    return json.loads(path.read_text()) if path.exists() else None


def render() -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (bench/foundation.py, then bench/render/); raw figures in bench/*.json.",
        "",
        "## Foundation (issue #2): SmolLM2-135M perplexity after pruning",
        "",
    ]
    gpu, cpu = _read("foundation.json"), _read("foundation_cpu.json")
    if gpu and "smollm2_wiki_ppl" in gpu:
        lines += foundation.smollm2(gpu, "GPU, paper protocol (128 × 2048 calibration)")
    if cpu:
        lines += foundation.smollm2(
            cpu, "CPU, reduced protocol (labelled: 32 × 1024 calibration, first 16 perplexity windows)"
        )
    if gpu and "llama2_7b_shape_wanda_2of4" in gpu:
        lines += foundation.llama7b(gpu)
    zs_gpu, zs_cpu = _read("zeroshot.json"), _read("zeroshot_cpu.json")
    if zs_gpu or zs_cpu:
        lines += ["## Zero-shot (issue #3): SmolLM2-135M on the seven tasks of the pruning papers", ""]
    if zs_gpu:
        lines += zeroshot.zeroshot(zs_gpu, "GPU, full validation sets")
    if zs_cpu:
        lines += zeroshot.zeroshot(zs_cpu, "CPU, reduced (labelled: example limit per task)")
    pr_gpu, pr_cpu = _read("pruning.json"), _read("pruning_cpu.json") or {}
    if pr_gpu or pr_cpu:
        lines += pruning.pruning(pr_gpu, pr_cpu if "calibration" in pr_cpu else None)
    if ds := _read("driver_speed.json"):
        lines += driver_speed.driver_speed(ds)
    if ft := _read("finetune.json"):
        lines += finetune.finetune(ft)
    q_gpu, q_cpu = _read("quant.json"), _read("quant_cpu.json")
    if q_gpu or q_cpu:
        lines += quant.quant(q_gpu, q_cpu, _read("int4_codes.json"), (_read("kmeans.json"), _read("kmeans_cpu.json")))
    if cn := _read("cpu_numerics.json"):
        lines += cpu_numerics.cpu_numerics(cn)
    if io := _read("interop.json"):
        lines += interop.interop(io)
    if ck := _read("checks.json"):
        lines += checks.render(ck)
    if rt := _read("runtime.json"):
        lines += runtime.runtime(rt)
        lines += runtime.user_path(rt)
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
        *(pruning.notes(pr_gpu) if pr_gpu else []),
        "",
    ]
    return "\n".join(lines) + "\n"


def save(path: Path, results: dict) -> None:
    """Write a results file, then BENCHMARKS.md from all of them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    (ROOT / "BENCHMARKS.md").write_text(render())
    print(f"wrote {path} and BENCHMARKS.md")


def main() -> None:
    (ROOT / "BENCHMARKS.md").write_text(render())
