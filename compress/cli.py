"""Command line: `python -m compress run --model M --recipe R --out DIR`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from compress.errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m compress", description="Compress an LLM: calibrate, prune, evaluate, export."
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a recipe on a model and write a checkpoint folder")
    r.add_argument("--model", default="smollm2-135m", help="alias, Hub id, local folder or .gguf file")
    r.add_argument("--recipe", default="recipes/wanda-2of4.yaml", help="YAML recipe (see compress/config.py)")
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
    return p


def _summary(report: dict, out: Path) -> str:
    lines = [f"wrote {out}"]
    for name, r in report.get("perplexity", {}).items():
        lines.append(
            f"  {name} perplexity: dense {r['dense']:.3f} -> compressed {r.get('compressed', float('nan')):.3f}"
            f"  ({r['windows']} windows of {r['seqlen']})"
        )
    if "summary" in report:
        s = report["summary"]
        lines.append(
            f"  {s['pruned_linears']} Linear layers pruned to {s['sparsity_of_pruned_linears']:.2%} sparsity, "
            f"mean relative output error {s['mean_rel_output_error']:.4f}"
        )
    lines.append(
        f"  format: {report['export']['format']}; stage times (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in report["timings_s"].items())
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        from compress.config import RunConfig, load_recipe, override
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
        report = run(
            cfg,
            args.out,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            log=lambda m: print(m, file=sys.stderr),
        )
        print(_summary(report, args.out))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
