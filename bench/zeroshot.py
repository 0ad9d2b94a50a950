"""Zero-shot benchmark (issue #3): SmolLM2-135M dense, Wanda 50%, Wanda 2:4, magnitude 2:4 on the seven tasks.

Each checkpoint is made by the real pipeline (`compress.pipeline.run`), then scored by `eval.evaluate`
(lm-eval on the embedded task files). GPU: full validation sets, 128 x 2048 calibration. CPU: pass
--limit 200 --nsamples 32 --seqlen 1024 (labelled in the results). Writes bench/zeroshot[_cpu].json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.render import run_meta, save  # noqa: E402
from compress.config import CalibrationConfig, EvalConfig, Recipe, RunConfig  # noqa: E402
from compress.environment import environment  # noqa: E402
from compress.models import resolve_dtype  # noqa: E402
from compress.pipeline import resolve_device, run  # noqa: E402
from eval.evaluate import evaluate  # noqa: E402
from eval.zeroshot import mean_acc  # noqa: E402
from prune.stage import PruneConfig  # noqa: E402

CHECKPOINTS = {
    "dense": None,
    "wanda_50": PruneConfig("wanda", "unstructured", 0.5),
    "wanda_2of4": PruneConfig("wanda", "2:4"),
    "magnitude_2of4": PruneConfig("magnitude", "2:4"),
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    p.add_argument("--limit", type=int)
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8, help="lm-eval batch size (and calibration batch size)")
    p.add_argument("--workdir", type=Path, default=Path("out/bench-zeroshot"))
    p.add_argument("--json", type=Path, default=Path("bench/zeroshot.json"))
    args = p.parse_args()
    device = resolve_device(args.device)
    dtype = resolve_dtype("auto", device)
    cal = CalibrationConfig("olmo-mix", args.nsamples, args.seqlen, 0, batch_size=args.batch_size)
    results = {}
    device_name = environment()["cuda_device"] or "cpu"  # once: environment() runs git
    for name, prune in CHECKPOINTS.items():
        folder = args.workdir / name
        if not folder.exists():
            recipe = Recipe(name=name, calibration=cal, stages=(prune,), eval=EvalConfig(perplexity=()))
            run(RunConfig("smollm2-135m", recipe, device=str(device)), folder, progress=False, log=print)
        r = evaluate(
            name,
            str(folder),
            limit=args.limit,
            device=device,
            dtype=dtype,
            batch_size=args.batch_size,
            task_source="embedded",
            log=print,
        )
        results[name] = {
            **{t: {k: v.get(k) for k in ("acc", "acc_norm", "acc_stderr")} for t, v in r.zeroshot.items()},
            "mean_acc": mean_acc(r.zeroshot),
            "limit": args.limit,
            "device": device_name,
            "wall_s": r.wall_s,
            "cached": bool(r.cached),
            "size_bytes": r.size_bytes,
            "sparsity": r.sparsity,
        }
        print(f"{name:16s} mean acc {results[name]['mean_acc']:.4f}  eval {r.wall_s:.0f}s", flush=True)
    out = {
        "checkpoints": results,
        "calibration": {"dataset": "olmo-mix", "nsamples": args.nsamples, "seqlen": args.seqlen},
        "dtype": str(dtype),
        "run": run_meta(),
    }
    save(args.json, out)


if __name__ == "__main__":
    main()
