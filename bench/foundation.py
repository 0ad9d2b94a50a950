"""Foundation benchmark (issue #2): `make bench` runs it; results go to bench/foundation.json + BENCHMARKS.md.

Parts:
  smollm2      wiki perplexity of SmolLM2-135M: dense; magnitude 50% / 2:4; Wanda 50% / 4:8 / 2:4,
               olmo-mix calibration (128 x 2048 on a GPU; on CPU pass --nsamples 32 --seqlen 1024).
  llama7b      Wanda 2:4 calibrate + prune of a Llama-2-7B-shaped model (random bf16 weights, random-token
               calibration) on CUDA: wall time and peak GPU memory (model creation excluded).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.numerics import pin_like_the_commands  # noqa: E402

pin_like_the_commands()  # before torch loads: the CPU figures are the machine-independent ones `make compress` gives

import copy  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from bench.render import common_args, llama2_7b_shaped, run_meta, save  # noqa: E402
from compress.config import EvalConfig  # noqa: E402
from compress.data import calibration_windows, load_calibration_corpus  # noqa: E402
from compress.environment import peak_memory  # noqa: E402
from compress.models import load_model, resolve_dtype  # noqa: E402
from compress.pipeline import evaluate_perplexity, prune_model, resolve_device  # noqa: E402
from prune.stage import PruneConfig  # noqa: E402

RECIPES = {
    "magnitude_50": PruneConfig("magnitude", "unstructured", 0.5),
    "magnitude_2of4": PruneConfig("magnitude", "2:4"),
    "wanda_50": PruneConfig("wanda", "unstructured", 0.5),
    "wanda_4of8": PruneConfig("wanda", "4:8"),
    "wanda_2of4": PruneConfig("wanda", "2:4"),
}


def smollm2(args, device: torch.device) -> dict:
    dtype = resolve_dtype(args.dtype, device)
    t0 = time.perf_counter()
    base, tok, _ = load_model("smollm2-135m", dtype)
    load_s = time.perf_counter() - t0
    eval_cfg = EvalConfig(("wiki",), args.eval_seqlen, args.eval_max_windows)
    t0 = time.perf_counter()
    dense = evaluate_perplexity(base, tok, eval_cfg, device, progress=False)["wiki"]
    ppl = {"dense": dense["ppl"]}
    timings = {"load_model_s": load_s, "eval_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    windows = calibration_windows(load_calibration_corpus("olmo-mix"), tok, args.nsamples, args.seqlen, 0)
    timings["calibration_data_s"] = time.perf_counter() - t0
    peak_gpu = {}
    for name, cfg in RECIPES.items():
        model = copy.deepcopy(base)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        prune_model(model, windows, cfg, device, args.batch_size, progress=False)
        timings[f"prune_{name}_s"] = time.perf_counter() - t0
        if device.type == "cuda":
            peak_gpu[name] = torch.cuda.max_memory_allocated(device) / 1024**3
        ppl[name] = evaluate_perplexity(model, tok, eval_cfg, device, progress=False)["wiki"]["ppl"]
        print(f"{name:16s} wiki ppl {ppl[name]:.3f}  prune {timings[f'prune_{name}_s']:.1f}s", flush=True)
        del model
    return {
        "smollm2_wiki_ppl": ppl,
        "calibration": {
            "dataset": "olmo-mix",
            "nsamples": args.nsamples,
            "seqlen": args.seqlen,
            "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        },
        "smollm2_eval": {"seqlen": dense["seqlen"], "windows": dense["windows"], "dtype": str(dtype)},
        "smollm2_timings": timings,
        # process peak RSS (includes the dense copy kept for the other recipes); peak GPU memory while pruning
        "smollm2_memory": {
            "peak_rss_gib": peak_memory(torch.device("cpu"))["peak_rss_gib"],
            "peak_gpu_gib_prune": peak_gpu or None,
        },
    }


def llama7b_shape(args, device: torch.device) -> dict:
    assert device.type == "cuda", "the Llama-2-7B-shaped benchmark needs a CUDA device"
    t0 = time.perf_counter()
    model = llama2_7b_shaped(32, device)  # random init on the GPU is fast; the model then lives on the CPU
    model.to("cpu").eval()
    create_s = time.perf_counter() - t0
    config = model.config
    windows = torch.randint(0, config.vocab_size, (128, 2048), generator=torch.Generator().manual_seed(0))
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base_alloc = torch.cuda.memory_allocated(device)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = prune_model(
        model,
        windows,
        PruneConfig("wanda", "2:4"),
        device,
        args.batch_size,
        progress=False,
        measure_error=not args.no_error,
    )
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated(device) - base_alloc) / 1024**3
    layer_gib = sum(p.numel() * p.element_size() for p in model.model.layers[0].parameters()) / 1024**3
    act_gib = windows.numel() * config.hidden_size * 2 / 1024**3
    sp = [m["sparsity"] for m in result.metrics.values()]
    print(
        f"llama2-7b-shape wanda 2:4: calibrate+prune {wall:.1f}s, peak GPU {peak:.2f} GiB "
        f"(one layer {layer_gib:.2f} GiB, hidden states {act_gib:.2f} GiB), sparsity {min(sp):.4f}-{max(sp):.4f}"
    )
    print("  driver phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()))
    return {
        "llama2_7b_shape_wanda_2of4": {
            "calibrate_prune_s": wall,
            "peak_gpu_gb": peak,
            "device": torch.cuda.get_device_name(0),
            "batch_size": args.batch_size,
            "model_creation_s": create_s,
            "one_layer_gib": layer_gib,
            "hidden_states_gib": act_gib,
            "measure_error": not args.no_error,
            "driver_timings_s": result.timings,
        }
    }


def main() -> None:
    p = common_args(batch_size=1)
    p.add_argument("--no-error", action="store_true", help="skip the per-Linear output-error measurement")
    p.add_argument("--json", type=Path, default=Path("bench/foundation.json"))
    args = p.parse_args()
    device = resolve_device(args.device)
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    meta = run_meta()
    if args.part in ("smollm2", "all"):
        results.update(smollm2(args, device))
        results.setdefault("runs", {})["smollm2"] = meta
    if args.part in ("llama7b", "all") and device.type == "cuda":
        results.update(llama7b_shape(args, device))
        results.setdefault("runs", {})["llama7b"] = meta
    save(args.json, results)


if __name__ == "__main__":
    main()
