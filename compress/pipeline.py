"""calibrate -> stages (prune, finetune; quantize later) -> evaluate -> export, as a handful of calls.

`run` reads top to bottom: load the calibration text and the model, evaluate the dense model, run the recipe's
stages in order (each kind registered by its package, compress/stages.py: layer-wise ones through the one driver,
the others with the whole model), evaluate the result, export what the stages recorded for each Linear.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from compress.card import write_card
from compress.checkpoint_format import SPARSE_24, folder_format
from compress.config import RunConfig, to_dict
from compress.data import calibration_windows, load_calibration_corpus, perplexity_text
from compress.devices import resolve_device
from compress.environment import environment, peak_memory
from compress.export import check_output_dir, read_masks_24, save_checkpoint
from compress.layerwise import LayerwiseResult, run_layerwise_stage
from compress.models import context_length, load_model, resolve_dtype
from compress.records import LinearRecord, Records, check_weight_matches, with_pattern
from compress.resume import LayerwiseCheckpoint, run_key
from compress.stages import LayerwiseStage, StageContext, kind_of
from eval.heldout import heldout_texts
from eval.perplexity import perplexity, token_windows
from prune.config import NM


class Timer(dict):
    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        yield
        self[stage] = round(time.perf_counter() - t0, 3)


def prune_model(model, windows, cfg, device, batch_size=1, progress=True, measure_error=True, checkpoint=None):
    """One prune stage on its own (tests, benchmarks): returns the driver's result; `.records` holds the masks."""
    records: Records = {}
    stage = kind_of(cfg).runner(cfg, StageContext(model, None, device, windows, records, batch_size, progress))
    result = run_layerwise_stage(
        stage,
        model,
        windows,
        device=device,
        batch_size=batch_size,
        measure_error=measure_error,
        progress=progress,
        checkpoint=checkpoint,
        records=records,
    )
    result.records = records
    return result


def evaluate_perplexity(model, tokenizer, cfg, device, progress=True, keep_device=False) -> dict[str, dict]:
    """Perplexity on each of `cfg.perplexity`; the model goes back to the CPU unless `keep_device`."""
    seqlen = min(cfg.seqlen, context_length(model) or cfg.seqlen)
    out = {}
    home = next(model.parameters()).device
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
        if not keep_device:
            model.to(home if home.type != "meta" else "cpu")
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
    if recipe.uses_calibration:  # before the model: a bad calibration file fails in a second
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

    windows, checkpoint = None, None
    if recipe.uses_calibration:
        cal = recipe.calibration
        seqlen = min(cal.seqlen, context_length(model) or cal.seqlen)
        with timer("calibration_windows"):
            windows = calibration_windows(corpus, tokenizer, cal.nsamples, seqlen, cal.seed)
        report["calibration"] = {"dataset": cal.dataset, "nsamples": cal.nsamples, "seqlen": seqlen, "seed": cal.seed}
        key = run_key(cfg.model, to_dict(recipe), str(dtype), windows)
        checkpoint = LayerwiseCheckpoint(out.with_name(f".{out.name}.partial"), key, cfg.checkpoint_every_s)
        if checkpoint.resumed:
            log(f"resuming from {checkpoint.folder}: layers before {checkpoint.next_layer} are done")

    records = checkpoint_records(source)
    ctx = StageContext(
        model,
        tokenizer,
        device,
        windows,
        records,
        batch_size=recipe.calibration.batch_size,
        progress=progress,
        log=log,
        work_dir=out.with_name(f".{out.name}.stages"),
        evaluate=lambda m: evaluate_perplexity(m, tokenizer, recipe.eval, device, progress=False, keep_device=True),
        load_dense=lambda: load_model(cfg.model, dtype)[0],
        heldout=lambda tasks: heldout_texts(tuple(recipe.eval.perplexity), tasks),
    )
    stages = [kind_of(c).runner(c, ctx) for c in recipe.stages]
    for stage in stages:  # validate shapes before the long part
        stage.precheck(model)

    ppl = dense_perplexity(model, tokenizer, recipe.eval, device, checkpoint, progress, log, timer)

    report["stages"], report["layers"], report["summary"] = [], {}, {}
    for i, stage in enumerate(stages):
        kind = kind_of(stage.config).name
        label = kind if kind not in timer else f"{kind}_{i}"
        log(f"stage {i + 1}/{len(stages)}: {kind} {stage.describe()} on {device}" + _calibration_note(stage, recipe))
        with timer(label):
            entry = run_stage(
                stage, ctx, checkpoint if i == _first_layerwise(stages) else None, recipe.calibration.output_error
            )
        report["stages"].append({"kind": kind, **entry})
        for name, m in entry.pop("layers", {}).items():
            report["layers"].setdefault(name, {}).update(m)
        report["summary"].update(entry.get("summary", {}))
        if "timings_s" in entry and kind == "prune" and "prune_timings_s" not in report:
            report["prune_timings_s"] = entry["timings_s"]

    if recipe.eval.perplexity:
        log("perplexity of the compressed model")
        with timer("eval_compressed"):
            for name, r in evaluate_perplexity(model, tokenizer, recipe.eval, device, progress).items():
                ppl[name]["compressed"] = r["ppl"]
    report["perplexity"] = ppl

    compressed_24 = with_pattern(records, NM(2, 4))
    quant_codes = {n: r.quant for n, r in records.items() if r.quant is not None}
    for name, module in model.named_modules():  # what is exported is what the records say
        if name in records:
            check_weight_matches(name, module.weight, records[name])
    report["export"] = export_summary(compressed_24, quant_codes)
    report["timings_s"] = timer
    report["memory"] = peak_memory(device)
    dense_linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in compressed_24]
    with timer("export"):
        save_checkpoint(
            model,
            tokenizer,
            out,
            masks_24={n: records[n].mask for n in compressed_24},
            ignore=dense_linears if compressed_24 else [],
            extra_files={"report.json": json.dumps(report, indent=2) + "\n"},
            overwrite=overwrite,
            quant_codes=quant_codes,
        )
    report["export"]["size_mb"] = round(sum(f.stat().st_size for f in out.glob("*.safetensors")) / 1e6, 3)
    # export time is known only now: rewrite the report in the finished folder
    report["timings_s"] = dict(timer)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_card(out)
    if checkpoint is not None:
        checkpoint.remove()
    shutil.rmtree(ctx.work_dir, ignore_errors=True)  # the stages' resume state (e.g. AST's) is spent
    return report


def export_summary(compressed_24: set[str], quant_codes: dict) -> dict:
    """The report's `export` entry: the format the records call for and how many Linears it compresses."""
    if quant_codes:
        from compress.quant_checkpoint import OURS, uses_pack_quantized

        fmt = "pack-quantized" if uses_pack_quantized(quant_codes) else OURS
        return {"format": fmt, "quantized_modules": len(quant_codes), "sparsity_24_modules": len(compressed_24)}
    return {"format": "sparse-24-bitmask" if compressed_24 else "dense", "compressed_modules": len(compressed_24)}


def checkpoint_records(source) -> Records:
    """A 2:4 checkpoint's masks as records: a later stage (quant) keeps its zeros, and the export writes them."""
    records: Records = {}
    if source.kind == "local" and folder_format(Path(source.location)) == SPARSE_24:
        for name, keep in read_masks_24(Path(source.location)).items():
            records[name] = LinearRecord(tuple(keep.shape))
            records[name].set_mask(NM(2, 4), keep)
    return records


def run_stage(stage, ctx: StageContext, checkpoint: LayerwiseCheckpoint | None, measure_error: bool = False) -> dict:
    """One stage: layer-wise ones through the driver (with the run's resume checkpoint), the others on the whole
    model. Returns the stage's report entry: summary, per-Linear metrics (`layers`), timings."""
    if isinstance(stage, LayerwiseStage):
        result: LayerwiseResult = run_layerwise_stage(
            stage,
            ctx.model,
            ctx.windows,
            device=ctx.device,
            batch_size=ctx.batch_size,
            measure_error=measure_error,
            progress=ctx.progress,
            checkpoint=checkpoint,
            records=ctx.records,
        )
        return {"summary": stage.summary(result.metrics), "layers": result.metrics, "timings_s": result.timings}
    return stage.run()


def _first_layerwise(stages) -> int | None:
    """Only the first layer-wise stage resumes from the layer-wise checkpoint (it describes one walk)."""
    return next((i for i, s in enumerate(stages) if isinstance(s, LayerwiseStage)), None)


def _calibration_note(stage, recipe) -> str:
    if not isinstance(stage, LayerwiseStage):
        return ""
    cal = recipe.calibration
    return f", {cal.nsamples} x {cal.seqlen} tokens of {cal.dataset}"


def dense_perplexity(model, tokenizer, cfg, device, checkpoint, progress, log, timer) -> dict[str, dict]:
    """The dense model's perplexity per eval set (kept in the resume checkpoint: a resumed run skips it)."""
    ppl: dict[str, dict] = {}
    if not cfg.perplexity:
        return ppl
    if checkpoint is not None and "dense_perplexity" in checkpoint.state["extra"]:
        return checkpoint.state["extra"]["dense_perplexity"]
    log(f"perplexity of the dense model on {', '.join(cfg.perplexity)}")
    with timer("eval_dense"):
        for name, r in evaluate_perplexity(model, tokenizer, cfg, device, progress).items():
            ppl[name] = {"dense": r["ppl"], "seqlen": r["seqlen"], "windows": r["windows"]}
    if checkpoint is not None:  # a resumed run need not evaluate the dense model again
        checkpoint.put_extra("dense_perplexity", ppl)
    return ppl
