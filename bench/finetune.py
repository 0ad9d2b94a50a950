"""Finetune benchmark (issue 14): SmolLM2-135M dense, SparseGPT 2:4 and Wanda 2:4 one-shot, and each after AST.

Every checkpoint is made by the real pipeline (`compress.pipeline.run` with the packaged recipes: dense,
sparsegpt-2of4, wanda-2of4, sparsegpt-2of4-ast, wanda-2of4-ast), then scored by `eval.evaluate` (lm-eval on
the embedded task files: the papers' seven tasks and the `discriminating` set). A finished checkpoint folder is
reused, so the run can be split over several GPU calls (each at most 10 minutes) with --variants; the AST
stage itself resumes from its checkpoint when a call is cut short. Writes bench/finetune.json.

    python bench/finetune.py --work /root/stage/ft --variants dense,sparsegpt_2of4   # then the others
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.render import run_meta, save  # noqa: E402
from compress.config import RunConfig, load_recipe, override  # noqa: E402
from compress.environment import environment  # noqa: E402
from compress.models import resolve_dtype  # noqa: E402
from compress.pipeline import resolve_device, run  # noqa: E402
from eval.evaluate import evaluate  # noqa: E402
from eval.lm_tasks import DISCRIMINATING, PAPER_TASKS  # noqa: E402
from eval.zeroshot import recovery  # noqa: E402
from finetune.stage import FinetuneConfig  # noqa: E402

VARIANTS = {
    "dense": "dense",
    "sparsegpt_2of4": "sparsegpt-2of4",
    "wanda_2of4": "wanda-2of4",
    "ast_2of4": "sparsegpt-2of4-ast",
    "ast_wanda_2of4": "wanda-2of4-ast",
    "ast_2of4_quest_w4": "sparsegpt-2of4-ast-quest-w4",  # AST with QuEST QAT of the kept weights (issue 15)
}
TASKS = list(dict.fromkeys((*PAPER_TASKS, *DISCRIMINATING)))


def recipe_for(name: str, steps: int | None, eval_every: int | None, self_distill: int | None = None):
    recipe = load_recipe(VARIANTS[name])
    stages = []
    for s in recipe.stages:
        if isinstance(s, FinetuneConfig):
            changes = {k: v for k, v in {"steps": steps, "eval_every": eval_every}.items() if v is not None}
            if "steps" in changes:
                changes["masked_decay_warmup"] = min(s.masked_decay_warmup, changes["steps"])
                changes["warmup_steps"] = min(s.warmup_steps, changes["steps"])
            if self_distill is not None:
                changes["data"] = dataclasses.replace(s.data, self_distill_texts=self_distill)
            s = dataclasses.replace(s, **changes)
        stages.append(s)
    return dataclasses.replace(recipe, stages=tuple(stages))


def finetune_entry(report: dict) -> dict:
    ft = next((s for s in report.get("stages", []) if s["kind"] == "finetune"), None)
    if ft is None:
        return {"train_tokens": 0, "train_s": 0.0, "tokens_per_s": None, "curve": []}
    m = ft["metrics"]
    return {
        "train_tokens": m["train_tokens"],
        "train_s": round(m["train_s"], 1),
        "tokens_per_s": round(m["tokens_per_s"]),
        "curve": [[tokens, ev.get("wiki")] for tokens, ev in m["curve"]],
        "data": ft["data"],
        "memory_plan_gib": ft["memory_plan_gib"],
        "final_kl": m["final_kl"],
        "mask_flips_last": m["mask_flips"][-1] if m["mask_flips"] else None,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    p.add_argument("--work", type=Path, default=Path("out/bench-finetune"))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, help="override the AST recipes' steps (warm-ups capped to it)")
    p.add_argument("--eval-every", type=int, help="override the AST recipes' eval_every (the ppl curve)")
    p.add_argument("--self-distill", type=int, help="override the AST recipes' number of self-distillation texts")
    p.add_argument("--limit", type=int, help="zero-shot examples per task (default: full validation sets)")
    p.add_argument("--batch-size", type=int, default=64, help="lm-eval batch size")
    p.add_argument("--no-zeroshot", action="store_true", help="only make the checkpoints (and their perplexity)")
    p.add_argument("--nsamples", type=int, help="calibration samples (default: the recipe's 128)")
    p.add_argument("--json", type=Path, default=Path("bench/finetune.json"))
    args = p.parse_args()
    device = resolve_device(args.device)
    dtype = resolve_dtype("auto", device)
    device_name = environment()["cuda_device"] or "cpu"
    old = json.loads(args.json.read_text()) if args.json.exists() else {}
    results = dict(old.get("variants", {}))
    for name in args.variants.split(","):
        folder = args.work / name
        recipe = override(recipe_for(name, args.steps, args.eval_every, args.self_distill), nsamples=args.nsamples)
        if not folder.exists():
            t0 = time.perf_counter()
            run(RunConfig("smollm2-135m", recipe, device=str(device)), folder, progress=True, log=print)
            print(f"{name}: checkpoint in {time.perf_counter() - t0:.0f} s", flush=True)
        report = json.loads((folder / "report.json").read_text())
        entry = {
            "recipe": VARIANTS[name],
            "wiki_ppl": report["perplexity"]["wiki"]["compressed"],
            "wiki_ppl_dense": report["perplexity"]["wiki"]["dense"],
            **finetune_entry(report),
            "device": device_name,
            "command": "python " + " ".join(sys.argv),
            "date": time.strftime("%Y-%m-%d"),
        }
        if not args.no_zeroshot:
            r = evaluate(
                name,
                str(folder),
                tasks=TASKS,
                limit=args.limit,
                device=device,
                dtype=dtype,
                batch_size=args.batch_size,
                task_source="embedded",
                log=print,
            )
            scores = {t: {k: v.get(k) for k in ("acc", "acc_norm")} for t, v in r.zeroshot.items()}
            entry["paper7"] = {t: scores[t]["acc"] for t in PAPER_TASKS}
            entry["discriminating"] = {t: scores[t][m] for t, m in DISCRIMINATING.items()}
            entry["zeroshot_limit"] = args.limit
            entry["zeroshot_wall_s"] = round(r.wall_s, 1)
            entry["_scores"] = scores
        results[name] = entry
        print(f"{name}: wiki {entry['wiki_ppl']:.3f}", flush=True)
        write(args.json, results, dtype, old)  # after every variant: a call cut short keeps what is finished


def write(path: Path, results: dict, dtype, old: dict) -> None:
    dense = results.get("dense", {}).get("_scores")
    for entry in results.values():
        if dense and "_scores" in entry:
            entry["recovery"] = round(recovery(entry["_scores"], dense, DISCRIMINATING), 4)
    out = {
        "variants": results,
        "curve": results.get("ast_2of4", {}).get("curve", []),
        "goal": {"recovery": 0.8, "wiki_ppl_over_dense": 1.3},
        "dtype": str(dtype),
        "run": {**old.get("run", {}), **run_meta()},
    }
    save(path, out)


if __name__ == "__main__":
    main()
