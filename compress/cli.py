"""Command line: `llm-compress run --model M --recipe R --out DIR` (also `python -m compress ...`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from compress.errors import Interrupted, UserError

NOTHING_KEPT = "nothing was kept; rerun the same command to start again"


PROG = "llm-compress"  # the console script; `python -m compress` passes its own name


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    from compress.config import DEFAULT_RECIPE

    p = argparse.ArgumentParser(prog=prog, description="Compress an LLM: calibrate, prune, evaluate, export.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a recipe on a model and write a checkpoint folder")
    r.add_argument("--model", default="smollm2-135m", help="alias, Hub id, local folder or .gguf file")
    r.add_argument(
        "--recipe",
        default=DEFAULT_RECIPE,
        help=f"a packaged recipe's name (`{prog} recipes` lists them) or a YAML file (schema: compress/config.py); "
        "an existing path wins (default: %(default)s)",
    )
    r.add_argument("--out", required=True, type=Path, help="output folder (must not exist unless --overwrite)")
    r.add_argument("--nsamples", type=int, help="calibration samples (overrides the recipe)")
    r.add_argument("--seqlen", type=int, help="calibration tokens per sample (overrides the recipe)")
    r.add_argument("--dtype", choices=["auto", "bfloat16", "float16", "float32"], help="overrides the recipe")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    r.add_argument("--eval-max-windows", type=int, help="perplexity on the first K windows only (CPU runs)")
    r.add_argument(
        "--checkpoint-every",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="save resumable state this often while pruning; rerun the same command to resume",
    )
    r.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")

    def eval_args(sp):
        sp.add_argument(
            "--tasks",
            default="paper7",
            help="comma-separated lm-eval task names and/or sets: paper7 (the papers' seven, default), "
            "discriminating (hellaswag, arc_easy, piqa: well above chance for a 135M model)",
        )
        sp.add_argument("--limit", type=int, help="examples per task (CPU runs); omit for the full sets")
        sp.add_argument("--task-source", default="auto", help="auto | embedded | hub (auto: hub when reachable)")
        sp.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
        sp.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
        sp.add_argument("--batch-size", type=int, default=8)
        sp.add_argument("--ppl", default="wiki", help="perplexity sets, comma-separated ('' to skip)")
        sp.add_argument("--ppl-seqlen", type=int, default=2048)
        sp.add_argument("--ppl-max-windows", type=int, help="first K perplexity windows only (CPU runs)")

    e = sub.add_parser("eval", help="zero-shot scores (lm-eval) and perplexity of one model or checkpoint")
    e.add_argument("--model", required=True, help="alias, Hub id, .gguf, model folder or checkpoint folder")
    e.add_argument("--out", type=Path, help="also write compare.md/.json/.png here")
    eval_args(e)
    c = sub.add_parser("compare", help="evaluate a dense model and checkpoints side by side; table + plot")
    c.add_argument("models", nargs="+", metavar="NAME=MODEL", help="the first is the dense baseline")
    c.add_argument("--out", type=Path, default=Path("out/compare"), help="folder for compare.md/.json/.png")
    eval_args(c)
    k = sub.add_parser("card", help="(re)write README.md of a checkpoint folder from its measured results")
    k.add_argument("--model-dir", required=True, type=Path)
    h = sub.add_parser("push", help="upload a checkpoint folder to the Hugging Face Hub")
    h.add_argument("--model-dir", required=True, type=Path)
    h.add_argument("--repo", required=True, help="owner/name")
    h.add_argument("--public", action="store_true", help="create a public repo (default: private)")
    h.add_argument("--dry-run", action="store_true", help="validate and list files; no network")
    g = sub.add_parser("generate", help="greedy generation from a 2:4 checkpoint, computing on the compressed form")
    g.add_argument("--model", required=True, type=Path, help="checkpoint folder written by `run` with a 2:4 recipe")
    g.add_argument("--prompt", required=True)
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (GPU: our kernels; CPU: reference)")
    g.add_argument("--int4", action="store_true", help="int4 kept values, group 128 (GPTQ's codes, else RTN)")
    g.add_argument("--fast", action="store_true", help="static KV cache, CUDA-graph decode steps (as benchmarked)")
    g.add_argument("--compile", action="store_true", help="torch.compile the forward first (implies --fast)")
    k2 = sub.add_parser("pack", help="convert a 2:4 checkpoint into the runtime's packed format (bf16 or int4)")
    k2.add_argument("--model", required=True, type=Path, help="2:4 checkpoint (sparse-24-bitmask, pack-quantized)")
    k2.add_argument("--out", required=True, type=Path)
    k2.add_argument("--int4", action="store_true", help="int4 kept values, group 128 (GPTQ's codes, else RTN)")
    k2.add_argument("--overwrite", action="store_true")
    sub.add_parser("recipes", help="list the packaged recipes (usable as --recipe NAME)")
    return p


def _recipes() -> str:
    from compress.config import RECIPES_DIR, packaged_recipes, recipe_description

    shipped = packaged_recipes()
    width = max(map(len, shipped), default=0)
    lines = [f"{name:<{width}}  {recipe_description(path)}" for name, path in shipped.items()]
    return "\n".join([*lines, f"(YAML files in {RECIPES_DIR}; copy one to make your own and pass its path)"])


def _summary(report: dict, out: Path) -> str:
    lines = [f"wrote {out}"]
    for name, r in report.get("perplexity", {}).items():
        lines.append(
            f"  {name} perplexity: dense {r['dense']:.3f} -> compressed {r.get('compressed', float('nan')):.3f}"
            f"  ({r['windows']} windows of {r['seqlen']})"
        )
    s = report.get("summary", {})
    if "pruned_linears" in s:
        lines.append(
            f"  {s['pruned_linears']} Linear layers pruned to {s['sparsity_of_pruned_linears']:.2%} sparsity"
            + (f", mean relative output error {s['mean_rel_output_error']:.4f}" if "mean_rel_output_error" in s else "")
        )
    if "finetune_tokens" in s:
        lines.append(f"  finetuned on {s['finetune_tokens']:,} tokens in {s['finetune_s']:.0f} s")
    lines.append(
        f"  format: {report['export']['format']}; stage times (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in report["timings_s"].items())
    )
    return "\n".join(lines)


def _run(args) -> None:
    from compress.config import RunConfig, load_recipe, override
    from compress.devices import resolve_device
    from compress.pipeline import run

    recipe = override(
        load_recipe(args.recipe),
        nsamples=args.nsamples,
        seqlen=args.seqlen,
        dtype=args.dtype,
        eval_max_windows=args.eval_max_windows,
    )
    cfg = RunConfig(
        model=args.model,
        recipe=recipe,
        device=args.device,
        recipe_path=str(args.recipe),
        checkpoint_every_s=args.checkpoint_every,
    )
    resolve_device(cfg.device)  # bad input fails here, in a second, not after the model has loaded
    report = run(cfg, args.out, overwrite=args.overwrite, progress=not args.no_progress, log=_log)
    print(_summary(report, args.out))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _evaluate_all(args, named: list[tuple[str, str]]):
    from compress.config import EvalConfig
    from compress.devices import resolve_device
    from compress.loading import check_format
    from compress.models import resolve_dtype
    from compress.sources import hub_reachable
    from eval.evaluate import evaluate, resolve_task_source
    from eval.lm_tasks import parse_task_spec

    tasks = parse_task_spec(args.tasks)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    source = resolve_task_source(args.task_source)
    if args.task_source == "hub" and not hub_reachable():  # "auto" has just checked and chosen
        raise UserError(
            "the Hugging Face Hub is unreachable, so --task-source hub cannot fetch the tasks; "
            "use --task-source embedded (the seven paper tasks ship with this package) or check your network"
        )
    ppl_sets = tuple(d.strip() for d in args.ppl.split(",") if d.strip())
    try:
        ppl = EvalConfig(ppl_sets, args.ppl_seqlen, args.ppl_max_windows) if ppl_sets else None
    except ValueError as e:
        raise UserError(str(e)) from None
    for _, model in named:  # a local folder we cannot decode is refused before any task data is fetched
        if Path(model).is_dir():
            check_format(model)
    results = [
        evaluate(
            name,
            model,
            tasks=tasks,
            limit=args.limit,
            perplexity=ppl,
            device=device,
            dtype=dtype,
            batch_size=args.batch_size,
            task_source=source,
            log=_log,
        )
        for name, model in named
    ]
    meta = {
        "limit": args.limit,
        "task_source": source,
        "device": str(device),
        "dtype": str(dtype),
        "ppl_seqlen": args.ppl_seqlen,
        "ppl_max_windows": args.ppl_max_windows,
        "wall_s": {r.name: round(r.wall_s, 1) for r in results},
    }
    return results, meta


def _compare(args, named: list[tuple[str, str]]) -> None:
    import json

    from compress.card import write_card
    from eval.compare import markdown, note, rows, write
    from eval.evaluate import is_checkpoint_folder

    results, meta = _evaluate_all(args, named)
    table = rows(results)
    md = markdown(table, note(meta))
    files = write(table, args.out, meta, md) if args.out is not None else {}
    print(md)
    for r, row in zip(results, table, strict=True):
        folder = Path(r.model)
        if is_checkpoint_folder(folder):  # measured scores go into the checkpoint's card
            payload = {"meta": meta, "row": row, "table_md": md}
            (folder / "zeroshot.json").write_text(json.dumps(payload, indent=2))
            write_card(folder, payload)
    if files:
        print("wrote " + ", ".join(str(f) for f in files.values()))
    print("cached: " + "; ".join(f"{r.name}: {len(r.cached)} results" for r in results))


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = _parser(prog).parse_args(argv)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        if args.cmd == "run":
            _run(args)
        elif args.cmd == "eval":
            _compare(args, [(Path(args.model).name or args.model, args.model)])
        elif args.cmd == "compare":
            named = []
            for item in args.models:
                name, sep, model = item.partition("=")
                named.append((name, model) if sep else (Path(item).name, item))
            _compare(args, named)
        elif args.cmd == "recipes":
            print(_recipes())
        elif args.cmd == "card":
            from compress.card import write_card

            print(f"wrote {write_card(args.model_dir)}")
        elif args.cmd == "generate":
            from compress.devices import resolve_device
            from compress.runtime.generate import generate

            device = resolve_device(args.device)
            r = generate(
                args.model, args.prompt, args.max_new_tokens, device, args.int4, _log,
                fast=args.fast, compile=args.compile,
            )  # fmt: skip
            print(r["text"])
            _log(f"{len(r['tokens'])} tokens in {r['wall_s']:.2f} s")
        elif args.cmd == "pack":
            from compress.runtime.convert import pack

            print(f"wrote {pack(args.model, args.out, int4=args.int4, overwrite=args.overwrite)}")
        elif args.cmd == "push":
            from compress.hub import push

            url = push(args.model_dir, args.repo, private=not args.public, dry_run=args.dry_run, log=print)
            print("dry run: nothing uploaded" if url is None else f"pushed: {url}")
    except Interrupted as e:  # before UserError, its base: the layer-wise driver kept a resume checkpoint
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"interrupted: {NOTHING_KEPT}", file=sys.stderr)
        return 130
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
