"""Quantization on SmolLM2-135M (issue 15): wiki perplexity, recovery, size on disk and time per method and grid,
on the dense model and on SparseGPT 2:4, each variant a real pipeline run whose checkpoint is evaluated from disk.

    python bench/quant.py [--device cuda] [--methods rtn,gptq] [--grids w4g64,w3g64,w4g32] [--zeroshot KEY,...]

Every variant is `python -m compress run` with a quant stage on one of two bases, themselves pipeline outputs:
`dense` (the SmolLM2 GGUF exported as safetensors, so each run loads in seconds) and `sparsegpt2of4` (SparseGPT
2:4 of it; a quant run on it reads the checkpoint's masks and keeps its zeros). SmolLM2's in-features 576 is not
a multiple of 128, so its grids are group 64 (and group 32, labelled: the GGUF source is already Q4_1 at group 32,
so a 4-bit group-32 grid partly re-finds the source's own grid). QuEST and SqueezeLLM have one scale or table per
output row, so their grids are the bit width alone. The JSON is written after every variant; a call
cut short keeps what is finished, and a rerun skips variants whose checkpoint exists and scores already scored
for that same checkpoint (`scores_of`: the sha256 of its report.json). `--score-workers N` scores zero-shot in N
spawned processes while the main process goes on building (lm-eval's request building is single-threaded
Python, so on a many-core GPU host N variants score in the time of one); the entries then carry
`score_workers`, since their build timings ran beside the scoring.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.render import run_meta, save  # noqa: E402
from compress.config import RunConfig, recipe_from_dict  # noqa: E402
from compress.environment import environment  # noqa: E402
from compress.models import resolve_dtype  # noqa: E402
from compress.pipeline import resolve_device, run  # noqa: E402
from eval.lm_tasks import DISCRIMINATING  # noqa: E402
from eval.zeroshot import recovery  # noqa: E402

GRIDS = {  # name -> quant settings: uniform grids (rtn, gptq), or bits alone (per-row tables and scales)
    "w4g64": {"bits": 4, "group_size": 64},
    "w3g64": {"bits": 3, "group_size": 64},
    "w4g32": {"bits": 4, "group_size": 32},
    "w4": {"bits": 4},
    "w3": {"bits": 3},
}
METHODS = {  # name -> (quant settings, its grids)
    "rtn": ({"method": "rtn"}, ("w4g64", "w3g64", "w4g32")),
    "gptq": ({"method": "gptq"}, ("w4g64", "w3g64", "w4g32")),
    # asymmetric (min-max, zero point) like the GGUF source's Q4_1: at w4g32 it can re-find the source's grid
    "rtn_asym": ({"method": "rtn", "symmetric": False}, ("w4g32",)),
    "quest": ({"method": "quest", "hadamard_block": 64}, ("w4", "w3")),
    "squeezellm_dense": ({"method": "squeezellm", "outlier_fraction": 0.0, "sensitive_fraction": 0.0}, ("w4", "w3")),
    "squeezellm_dense_sparse": ({"method": "squeezellm"}, ("w4", "w3")),
}
BASES = {"dense": [], "sparsegpt2of4": [{"prune": {"method": "sparsegpt", "pattern": "2:4"}}]}


def recipe(name: str, stages: list, cal: dict, seqlen: int, max_windows: int | None):
    return recipe_from_dict(
        {
            "name": name,
            "calibration": {"dataset": "olmo-mix", "seed": 0, **cal},
            "stages": stages,
            "eval": {"perplexity": ["wiki"], "seqlen": seqlen, "max_windows": max_windows},
        }
    )


def make(model: str, folder: Path, rec, device) -> dict:
    if not (folder / "report.json").exists():
        run(RunConfig(model, rec, device=str(device)), folder, progress=False, log=print)
    return json.loads((folder / "report.json").read_text())


def report_id(folder: Path) -> str:
    """Which build of a variant's checkpoint a set of scores belongs to (the report holds its timings)."""
    return hashlib.sha256((folder / "report.json").read_bytes()).hexdigest()[:16]


def zeroshot(folder: Path, device, dtype, batch_size: int, limit: int | None) -> dict:
    from eval.evaluate import evaluate

    r = evaluate(
        folder.name,
        str(folder),
        tasks=list(DISCRIMINATING),
        limit=limit,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        task_source="embedded",
        log=print,
    )
    return {t: {k: v.get(k) for k in ("acc", "acc_norm")} for t, v in r.zeroshot.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    p.add_argument("--work", type=Path, default=Path("out/bench-quant"))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--grids", default=",".join(GRIDS), help="grids to run, of each method's own")
    p.add_argument("--fisher-samples", type=int, default=100, help="SqueezeLLM Fisher windows (reference: 100)")
    p.add_argument("--bases", default=",".join(BASES))
    p.add_argument(
        "--zeroshot", default="", help="comma-separated variant keys (e.g. dense,gptq/w4g64) to score, or `all`"
    )
    p.add_argument(
        "--only", default="", help="comma-separated variant keys to run (default: every base x method x grid)"
    )
    p.add_argument("--limit", type=int, help="zero-shot examples per task (default: full validation sets)")
    p.add_argument("--batch-size", type=int, default=64, help="lm-eval batch size")
    p.add_argument("--score-workers", type=int, default=0, help="zero-shot in N processes beside the builds")
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--eval-max-windows", type=int, help="perplexity windows (default: all)")
    p.add_argument("--json", type=Path, default=Path("bench/quant.json"))
    p.add_argument(
        "--timings-from",
        type=Path,
        help="rewrite --json only: variants built beside zero-shot workers take the build timings of the same "
        "variant in this file when it was built alone (each then names that run in `timing_source`)",
    )
    args = p.parse_args()
    if args.timings_from:
        new = json.loads(args.json.read_text())
        n = uncontended_timings(new["variants"], json.loads(args.timings_from.read_text())["variants"])
        write(args.json, new["variants"], {k: v for k, v in new.items() if k != "variants"}, ran_here=False)
        print(f"{n} variants took their timings from {args.timings_from}")
        return
    device = resolve_device(args.device)
    dtype = resolve_dtype("auto", device)
    cal = {"nsamples": args.nsamples, "seqlen": args.seqlen}
    old = json.loads(args.json.read_text()) if args.json.exists() else {}
    variants = dict(old.get("variants", {}))
    meta = {
        "device": environment()["cuda_device"] or "cpu",
        "dtype": str(dtype),
        "calibration": cal,
        "eval_max_windows": args.eval_max_windows,
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        **({"score_workers": args.score_workers} if args.score_workers else {}),
    }
    wanted_zs = {k for k in args.zeroshot.split(",") if k}
    score_all = wanted_zs == {"all"}
    only = {k for k in args.only.split(",") if k}

    pool = (
        ProcessPoolExecutor(args.score_workers, mp_context=multiprocessing.get_context("spawn"))
        if args.score_workers
        else None
    )
    pending: dict[str, Future] = {}

    def scored(key: str, scores: dict, of: str) -> None:
        variants[key].update({"_scores": scores, "zeroshot_limit": args.limit, "scores_of": of})
        variants[key].pop("scores_source", None)
        write(args.json, variants, old)
        print(f"{key}: scored", flush=True)

    def collect(block: bool = False) -> None:
        for key, (fut, of) in list(pending.items()):
            if block or fut.done():
                scored(key, fut.result(), of)
                del pending[key]

    def record(key: str, folder: Path, report: dict, extra: dict) -> None:
        entry = {
            "wiki_ppl": report["perplexity"]["wiki"]["compressed"],
            "size_mb": round(report["export"]["size_mb"], 2),
            "time_s": report["timings_s"],
            "summary": report.get("summary", {}),
            **meta,
            **extra,
        }
        prev, of = variants.get(key, {}), report_id(folder)
        fresh = "_scores" in prev and prev.get("zeroshot_limit") == args.limit
        wanted = score_all or key in wanted_zs
        if fresh and (not wanted or prev.get("scores_of") == of):
            entry.update({k: prev[k] for k in ("_scores", "zeroshot_limit", "scores_of", "scores_source") if k in prev})
        variants[key] = entry
        print(f"{key}: wiki {entry['wiki_ppl']:.3f}, {entry['size_mb']} MB", flush=True)
        write(args.json, variants, old)
        if wanted and entry.get("scores_of") != of:
            if pool is None:
                scored(key, zeroshot(folder, device, dtype, args.batch_size, args.limit), of)
            else:
                pending[key] = (pool.submit(zeroshot, folder, device, dtype, args.batch_size, args.limit), of)
        collect()

    dense = args.work / "dense"
    rep = make("smollm2-135m", dense, recipe("dense", [], cal, args.seqlen, args.eval_max_windows), device)
    rep["perplexity"]["wiki"]["compressed"] = rep["perplexity"]["wiki"]["dense"]
    record("dense", dense, rep, {})
    for base in args.bases.split(","):
        base_folder = dense
        if BASES[base]:
            base_folder = args.work / base
            rep = make(
                str(dense), base_folder, recipe(base, BASES[base], cal, args.seqlen, args.eval_max_windows), device
            )
            record(base, base_folder, rep, {"prune_s": rep["timings_s"].get("prune")})
        for method in args.methods.split(","):
            settings, grids = METHODS[method]
            for grid in [g for g in args.grids.split(",") if g in grids]:
                key = f"{'' if base == 'dense' else base + '+'}{method}/{grid}"
                if only and key not in only:
                    continue
                folder = args.work / key.replace("/", "-").replace("+", "_")
                extra = {"fisher_samples": args.fisher_samples} if settings["method"] == "squeezellm" else {}
                stage = {"quant": {**settings, **GRIDS[grid], **extra}}
                rep = make(
                    str(base_folder), folder, recipe(key, [stage], cal, args.seqlen, args.eval_max_windows), device
                )
                record(
                    key,
                    folder,
                    rep,
                    {"quant_s": rep["timings_s"].get("quant"), "base": base, "method": method, "grid": grid},
                )
    collect(block=True)


def uncontended_timings(variants: dict, alone: dict) -> int:
    """Give each variant timed beside zero-shot workers (`score_workers`) the timings of the same variant (same
    base, method and grid: the same recipe) built alone in `alone`; its own contended timings stay under
    `time_s_beside_scoring`. Returns how many variants changed."""
    n = 0
    for key, e in variants.items():
        a = alone.get(key)
        if not e.get("score_workers") or a is None or a.get("score_workers") or "timing_source" in e:
            continue
        if "/" in key and any(a.get(f) != e.get(f) for f in ("base", "method", "grid")):
            continue
        e["time_s_beside_scoring"] = e["time_s"]
        e["time_s"] = a["time_s"]
        for f in ("quant_s", "prune_s"):
            if f in e:
                e[f] = a.get(f)
        e["timing_source"] = {"command": a["command"], "date": a["date"], "wiki_ppl": a["wiki_ppl"]}
        n += 1
    return n


def write(path: Path, variants: dict, old: dict, ran_here: bool = True) -> None:
    dense = variants.get("dense", {}).get("_scores")
    for entry in variants.values():
        if dense and "_scores" in entry:
            entry["recovery"] = round(recovery(entry["_scores"], dense, DISCRIMINATING), 4)
    table: dict = {"wiki_ppl": {}, "recovery": {}, "size_mb": {}, "time_s": {}}
    for key, e in variants.items():
        if "/" not in key:
            continue
        method, grid = key.split("/")
        table["wiki_ppl"].setdefault(method, {})[grid] = e["wiki_ppl"]
        table["size_mb"].setdefault(method, {})[grid] = e["size_mb"]
        table["time_s"].setdefault(method, {})[grid] = e.get("quant_s")
        if "recovery" in e:
            table["recovery"].setdefault(method, {})[grid] = e["recovery"]
    for k in ("dense", "sparsegpt2of4"):
        if k in variants:
            table["wiki_ppl"][k] = variants[k]["wiki_ppl"]
            table["size_mb"][k] = variants[k]["size_mb"]
            if "recovery" in variants[k]:
                table["recovery"][k] = variants[k]["recovery"]
    run = {**old.get("run", {}), **(run_meta() if ran_here else {})}  # rewriting a file keeps its machine
    save(path, {**old, **table, "variants": variants, "run": run})


if __name__ == "__main__":
    main()
