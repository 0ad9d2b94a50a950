"""Pruning-method benchmark (issue #4): wiki perplexity of SmolLM2-135M for magnitude, Wanda, SparseGPT, each
alone and + DSnoT, at 50/60/70% unstructured, 4:8 and 2:4; OWL + Wanda (+ DSnoT) at 70%; and the time per
method on a Llama-2-7B-shaped model (GPU). Writes bench/pruning.json (after every cell) and BENCHMARKS.md.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.render import common_args, llama2_7b_shaped, run_meta, save  # noqa: E402
from compress.config import EvalConfig  # noqa: E402
from compress.data import calibration_windows, load_calibration_corpus  # noqa: E402
from compress.models import load_model, resolve_dtype  # noqa: E402
from compress.pipeline import evaluate_perplexity, prune_model, resolve_device  # noqa: E402
from prune.stage import DSnoTOptions, OWLOptions, PruneConfig  # noqa: E402

PATTERNS = {
    "50": ("unstructured", 0.5),
    "60": ("unstructured", 0.6),
    "70": ("unstructured", 0.7),
    "4of8": ("4:8", None),
    "2of4": ("2:4", None),
}


def configs():
    for method in ("magnitude", "wanda", "sparsegpt"):
        for dsnot in (False, True):
            name = method + ("+dsnot" if dsnot else "")
            for cell, (pattern, sparsity) in PATTERNS.items():
                yield name, cell, PruneConfig(method, pattern, sparsity, dsnot=DSnoTOptions() if dsnot else None)
    for dsnot in (False, True):
        for cell in ("50", "60", "70"):
            yield (
                ("owl+wanda" + ("+dsnot" if dsnot else "")),
                cell,
                PruneConfig(
                    "wanda",
                    "unstructured",
                    PATTERNS[cell][1],
                    dsnot=DSnoTOptions() if dsnot else None,
                    owl=OWLOptions(),
                ),
            )
    for method in ("magnitude", "wanda", "sparsegpt"):  # the reference's default: MLP projections keep the mask
        for cell, (pattern, sparsity) in PATTERNS.items():
            yield (
                method + "+dsnot-skipmlp",
                cell,
                PruneConfig(method, pattern, sparsity, dsnot=DSnoTOptions(skip=("mlp",))),
            )


def smollm2(args, device, results) -> None:
    dtype = resolve_dtype(args.dtype, device)
    base, tok, _ = load_model("smollm2-135m", dtype)
    eval_cfg = EvalConfig(("wiki",), args.eval_seqlen, args.eval_max_windows)
    windows = calibration_windows(load_calibration_corpus("olmo-mix"), tok, args.nsamples, args.seqlen, 0)
    ppl = results.setdefault("wiki_ppl", {})
    times = results.setdefault("prune_s_smollm2", {})
    ppl["dense"] = evaluate_perplexity(base, tok, eval_cfg, device, progress=False)["wiki"]["ppl"]
    print(f"dense wiki ppl {ppl['dense']:.3f}", flush=True)
    for name, cell, cfg in configs():
        if args.only and name not in args.only.split(","):
            continue
        if args.cells and cell not in args.cells.split(","):
            continue
        model = copy.deepcopy(base)
        t0 = time.perf_counter()
        prune_model(model, windows, cfg, device, args.batch_size, progress=False, measure_error=False)
        times.setdefault(name, {})[cell] = time.perf_counter() - t0
        ppl.setdefault(name, {c: None for c in PATTERNS})[cell] = evaluate_perplexity(
            model, tok, eval_cfg, device, progress=False
        )["wiki"]["ppl"]
        print(f"{name:18s} {cell:5s} wiki ppl {ppl[name][cell]:9.3f}  prune {times[name][cell]:.1f}s", flush=True)
        del model
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    results["calibration"] = {
        "dataset": "olmo-mix",
        "nsamples": args.nsamples,
        "seqlen": args.seqlen,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "dtype": str(dtype),
        "eval_windows": args.eval_max_windows or "all",
    }


def llama7b(args, device, results) -> None:
    layers = args.llama_layers
    base = llama2_7b_shaped(layers, device)  # random init on the GPU is fast; the model then lives on the CPU
    base.to("cpu").eval()
    windows = torch.randint(0, 32000, (128, 2048), generator=torch.Generator().manual_seed(0))
    out = results.setdefault("time_s_7b_shape", {})
    for name, cfg in [
        ("magnitude", PruneConfig("magnitude", "2:4")),
        ("wanda", PruneConfig("wanda", "2:4")),
        ("wanda+dsnot", PruneConfig("wanda", "2:4", dsnot=DSnoTOptions())),
        ("sparsegpt", PruneConfig("sparsegpt", "2:4")),
        ("sparsegpt+dsnot", PruneConfig("sparsegpt", "2:4", dsnot=DSnoTOptions())),
        ("owl+wanda", PruneConfig("wanda", "unstructured", 0.7, owl=OWLOptions())),  # OWL is unstructured-only
    ]:
        if args.only and name not in args.only.split(","):
            continue
        model = copy.deepcopy(base)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        r = prune_model(model, windows, cfg, device, args.batch_size, progress=False, measure_error=False)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        out[name] = {
            "measured_s": wall,
            "layers": layers,
            "estimated_32_layers_s": wall * 32 / layers,
            "step_s": r.timings["step_s"],
            "estimated_32_layers_step_s": r.timings["step_s"] * 32 / layers,
        }
        print(
            f"7B-shape {name:12s} {layers} layers {wall:.1f}s (step {r.timings['step_s']:.1f}s) "
            f"-> 32 layers ~{wall * 32 / layers:.0f}s",
            flush=True,
        )
        del model
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    p = common_args(batch_size=8)
    p.add_argument("--llama-layers", type=int, default=4, help="decoder layers timed (the rest extrapolated)")
    p.add_argument("--only", help="comma-separated method names, e.g. wanda,wanda+dsnot")
    p.add_argument("--cells", help="comma-separated cells, e.g. 60,70")
    p.add_argument("--json", type=Path, default=Path("bench/pruning.json"))
    args = p.parse_args()
    device = resolve_device(args.device)
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    meta = run_meta()
    previous = results.get("run", {})  # several invocations (one GPU call each) fill one results file
    meta["commands"] = previous.get("commands", []) + [f"{meta.pop('command')} ({meta['date']}, {meta['machine']})"]
    results["run"] = meta
    if args.part in ("smollm2", "all"):
        smollm2(args, device, results)
    if args.part in ("llama7b", "all") and device.type == "cuda":
        llama7b(args, device, results)
    save(args.json, results)


if __name__ == "__main__":
    main()
