"""calibrate -> prune -> (quantize, finetune: later) -> evaluate -> export, as a handful of calls."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from compress.card import write_card
from compress.config import PruneConfig, RunConfig, to_dict
from compress.data import calibration_windows, load_calibration_corpus, perplexity_text
from compress.devices import resolve_device
from compress.environment import environment, peak_memory
from compress.errors import UserError
from compress.export import check_output_dir, save_checkpoint
from compress.layerwise import LayerwiseResult, run_layerwise
from compress.models import context_length, decoder_layers, load_model, resolve_dtype
from compress.resume import LayerwiseCheckpoint, run_key
from eval.perplexity import perplexity, token_windows
from prune import NM, make_stats, prune_weight
from prune.owl import outlier_ratio, owl_sparsities
from prune.stats import ActNormSq
from prune.wanda import wanda_scores


class Timer(dict):
    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        yield
        self[stage] = round(time.perf_counter() - t0, 3)


def prunable_linears(model: nn.Module, cfg: PruneConfig) -> dict[str, nn.Linear]:
    """Linear modules inside decoder layers that the recipe does not `ignore` (lm_head never is one)."""
    layer_ids = {id(m) for layer in decoder_layers(model) for m in layer.modules()}
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and id(m) in layer_ids and not any(re.fullmatch(p, name) for p in cfg.ignore)
    }


def check_prunable(linears: dict[str, nn.Linear], cfg: PruneConfig) -> None:
    pattern = cfg.spec.pattern
    if isinstance(pattern, NM):
        for name, m in linears.items():
            if m.in_features % pattern.m:
                raise UserError(
                    f"{name} has {m.in_features} in-features, not divisible by M={pattern.m} of pattern {pattern}; "
                    f"leave it dense with prune.ignore: ['{re.escape(name)}']"
                )


def prune_model(
    model: nn.Module,
    windows: torch.Tensor,
    cfg: PruneConfig,
    device: torch.device,
    batch_size: int = 1,
    progress: bool = True,
    measure_error: bool = True,
    checkpoint: LayerwiseCheckpoint | None = None,
) -> LayerwiseResult:
    """Prune every targeted Linear layer by layer with the recipe's method; returns per-Linear metrics."""
    targets = prunable_linears(model, cfg)
    check_prunable(targets, cfg)
    per_linear = owl_methods(model, windows, cfg, targets, device, batch_size, progress) if cfg.owl else {}

    def method_for(name: str):
        return per_linear.get(name) or cfg.method_for(name)

    def step(idx: int, linears: dict[str, nn.Linear], stats: dict) -> dict[str, dict]:
        metrics = {}
        for name, lin in linears.items():
            try:
                pruned, _ = prune_weight(method_for(name), lin.weight.data, stats[name])
            except ValueError as e:  # e.g. a Hessian that no damping makes positive definite
                raise UserError(f"{name}: {e}") from None
            lin.weight.data.copy_(pruned)
            metrics[name] = {"shape": list(pruned.shape), "sparsity": float((pruned == 0).float().mean())}
        return metrics

    return run_layerwise(
        model,
        list(windows.split(batch_size)),
        step,
        device=device,
        make_stats=lambda name, lin: make_stats(method_for(name), lin.in_features, device),
        targets=lambda name, lin: name in targets,
        measure_error=measure_error,
        progress=progress,
        checkpoint=checkpoint,
    )


def owl_methods(model, windows, cfg: PruneConfig, targets, device, batch_size, progress) -> dict:
    """OWL: one pass over the dense model for each layer's Wanda-score outlier ratio, then a per-Linear spec
    with that layer's sparsity (Yin et al. 2024, Alg. 1)."""
    ratios: dict[int, float] = {}
    names: dict[int, list[str]] = {}

    def measure(idx, linears, stats):
        scores = [wanda_scores(lin.weight.data, stats[n].value) for n, lin in linears.items()]
        ratios[idx] = outlier_ratio(scores, cfg.owl.M)
        names[idx] = list(linears)
        return {}

    run_layerwise(
        model,
        list(windows.split(batch_size)),
        measure,
        device=device,
        make_stats=lambda name, lin: ActNormSq(lin.in_features, device),
        targets=lambda name, lin: name in targets,
        measure_error=False,
        progress=progress,
    )
    layers = sorted(ratios)
    sparsities = owl_sparsities([ratios[i] for i in layers], cfg.spec.pattern.sparsity, cfg.owl.lam)
    return {
        n: dataclasses.replace(cfg, sparsity=s).method_for(n)
        for i, s in zip(layers, sparsities, strict=True)
        for n in names[i]
    }


def evaluate_perplexity(model, tokenizer, cfg, device, progress=True) -> dict[str, dict]:
    seqlen = min(cfg.seqlen, context_length(model) or cfg.seqlen)
    out = {}
    model.to(device)
    try:
        for name in cfg.perplexity:
            ids = tokenizer(perplexity_text(name), return_tensors="pt").input_ids[0]
            windows = token_windows(ids, seqlen, cfg.max_windows)
            out[name] = {
                "ppl": perplexity(model, windows, device, progress=progress),
                "seqlen": seqlen,
                "windows": len(windows),
            }
    finally:
        model.to("cpu")
    return out


def run(cfg: RunConfig, out: Path, overwrite: bool = False, progress: bool = True, log=print) -> dict:
    """The whole job; returns the report (also written to `out/report.json`)."""
    out = Path(out)
    check_output_dir(out, overwrite)  # before any work: never lose an existing checkpoint
    recipe = cfg.recipe
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(recipe.dtype, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timer = Timer()
    report: dict = {"config": to_dict(cfg), "environment": environment(), "device": str(device)}

    corpus = None
    if recipe.prune is not None:  # before the model: a bad calibration file fails in a second
        with timer("calibration_data"):
            corpus = load_calibration_corpus(recipe.calibration.dataset)
    with timer("load_model"):
        model, tokenizer, source = load_model(cfg.model, dtype)
    report["model"] = {
        "source": source.describe(),
        "class": type(model).__name__,
        "dtype": str(dtype),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if recipe.prune is not None:  # validate shapes before the long part
        check_prunable(prunable_linears(model, recipe.prune), recipe.prune)

    windows, checkpoint = None, None
    if recipe.prune is not None:
        cal = recipe.calibration
        seqlen = min(cal.seqlen, context_length(model) or cal.seqlen)
        with timer("calibration_windows"):
            windows = calibration_windows(corpus, tokenizer, cal.nsamples, seqlen, cal.seed)
        report["calibration"] = {"dataset": cal.dataset, "nsamples": cal.nsamples, "seqlen": seqlen, "seed": cal.seed}
        key = run_key(cfg.model, to_dict(recipe), str(dtype), windows)
        checkpoint = LayerwiseCheckpoint(out.with_name(f".{out.name}.partial"), key, cfg.checkpoint_every_s)
        if checkpoint.resumed:
            log(f"resuming from {checkpoint.folder}: layers before {checkpoint.next_layer} are done")

    ppl: dict[str, dict] = {}
    if recipe.eval.perplexity:
        if checkpoint is not None and "dense_perplexity" in checkpoint.state["extra"]:
            ppl = checkpoint.state["extra"]["dense_perplexity"]
        else:
            log(f"perplexity of the dense model on {', '.join(recipe.eval.perplexity)}")
            with timer("eval_dense"):
                for name, r in evaluate_perplexity(model, tokenizer, recipe.eval, device, progress).items():
                    ppl[name] = {"dense": r["ppl"], "seqlen": r["seqlen"], "windows": r["windows"]}
            if checkpoint is not None:  # a resumed run need not evaluate the dense model again
                checkpoint.put_extra("dense_perplexity", ppl)

    compressed_24: set[str] = set()
    if recipe.prune is not None:
        log(
            f"pruning: {recipe.prune.method} {recipe.prune.spec.pattern} on {device}, "
            f"{cal.nsamples} x {seqlen} tokens of {cal.dataset}"
        )
        with timer("prune"):
            result = prune_model(model, windows, recipe.prune, device, cal.batch_size, progress, checkpoint=checkpoint)
        report["layers"] = result.metrics
        report["prune_timings_s"] = result.timings
        pruned = list(result.metrics.values())
        numel = sum(m["shape"][0] * m["shape"][1] for m in pruned)
        report["summary"] = {
            "pruned_linears": len(pruned),
            "sparsity_of_pruned_linears": sum(m["sparsity"] * m["shape"][0] * m["shape"][1] for m in pruned) / numel,
            "mean_rel_output_error": sum(m["rel_output_error"] for m in pruned) / len(pruned),
        }
        if recipe.prune.spec.pattern == NM(2, 4):
            compressed_24 = set(result.metrics)

    if recipe.eval.perplexity:
        log("perplexity of the compressed model")
        with timer("eval_compressed"):
            for name, r in evaluate_perplexity(model, tokenizer, recipe.eval, device, progress).items():
                ppl[name]["compressed"] = r["ppl"]
    report["perplexity"] = ppl

    report["export"] = {
        "format": "sparse-24-bitmask" if compressed_24 else "dense",
        "compressed_modules": len(compressed_24),
    }
    report["timings_s"] = timer
    report["memory"] = peak_memory(device)
    dense_linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in compressed_24]
    with timer("export"):
        save_checkpoint(
            model,
            tokenizer,
            out,
            compress_24_modules=compressed_24,
            ignore=dense_linears if compressed_24 else [],
            extra_files={"report.json": json.dumps(report, indent=2) + "\n"},
            overwrite=overwrite,
        )
    # export time is known only now: rewrite the report in the finished folder
    report["timings_s"] = dict(timer)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_card(out)
    if checkpoint is not None:
        checkpoint.remove()
    return report
