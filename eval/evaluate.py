"""Evaluate a model or checkpoint folder: zero-shot (lm-eval) and perplexity, with a results cache.

Results are cached under <cache>/results/v2/ per (weights fingerprint, task, limit, lm-eval version, task
source), so re-running `compare` is instant; changed weights change the fingerprint and miss the cache.
The fingerprint of a local folder or file is the sha256 of its weight files (whoever wrote the folder); of a Hub
model, of its loaded tensors. Models load through compress.loading (via `load_model`), which refuses formats it
cannot decode and incomplete or non-finite loads, so every cached result comes from the stored weights.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch

from compress.assets import cache_dir, sha256_file
from compress.config import EvalConfig
from compress.errors import UserError
from compress.export import INDEX_FILE, weight_files
from compress.loading import check_format
from compress.models import load_model
from compress.sources import hub_reachable, resolve_model
from eval.lm_tasks import PAPER_TASKS, check_tasks, hub_task_manager, offline_task_manager

# v1 (no version folder) holds results of loads that could leave compressed Linears random (compressed-tensors
# >= 0.20 with transformers' from_pretrained): never read them again. Bump when a loader fix changes results.
CACHE_VERSION = "v2"
TASK_SOURCES = ("auto", "embedded", "hub")


@dataclass
class Evaluated:
    name: str
    model: str
    fingerprint: str
    zeroshot: dict[str, dict] = field(default_factory=dict)
    perplexity: dict[str, float] = field(default_factory=dict)
    size_bytes: int = 0
    parameters: int = 0
    sparsity: float = 0.0
    cached: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def is_checkpoint_folder(path: Path) -> bool:
    """A folder written by `python -m compress run` (it has report.json beside its safetensors). Says who wrote the
    folder (its card may be rewritten), not how to load it: loading follows config.json (compress/loading.py)."""
    return path.is_dir() and (path / "report.json").exists()


def _weights_on_disk(model: str) -> list[Path]:
    source = resolve_model(model)
    if source.kind == "gguf":
        return [Path(source.location) / source.gguf_file]
    if source.kind == "local":
        folder = Path(source.location)
        if (folder / "model.safetensors").exists() or (folder / INDEX_FILE).exists():
            return weight_files(folder)  # what the index names, not every *.safetensors lying around
        return sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return []


def fingerprint(model: str) -> str | None:
    """sha256 over the weight files (None for Hub models: fingerprinted after loading)."""
    files = _weights_on_disk(model)
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(sha256_file(f).encode())
    return h.hexdigest()[:20]


def tensors_fingerprint(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


def load_for_eval(model: str, dtype: torch.dtype):
    """(model, tokenizer) through the one loader, whoever wrote the folder (report.json or not)."""
    m, tok, _ = load_model(model, dtype)
    return m, tok


def _cache_file(fp: str, key: str) -> Path:
    return cache_dir() / "results" / CACHE_VERSION / fp / f"{key}.json"


def _read(fp: str, key: str):
    f = _cache_file(fp, key)
    return json.loads(f.read_text()) if f.exists() else None


def _write(fp: str, key: str, value) -> None:
    f = _cache_file(fp, key)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".part")
    tmp.write_text(json.dumps(value))
    tmp.replace(f)


def resolve_task_source(source: str) -> str:
    if source not in TASK_SOURCES:
        raise UserError(f"unknown task source {source!r}; allowed: {', '.join(TASK_SOURCES)}")
    if source == "auto":
        return "hub" if hub_reachable() else "embedded"
    return source


def evaluate(
    name: str,
    model: str,
    *,
    tasks: list[str] = PAPER_TASKS,
    limit: int | None = None,
    perplexity: EvalConfig | None = None,
    device: torch.device,
    dtype: torch.dtype,
    batch_size: int = 8,
    task_source: str = "embedded",
    log=print,
) -> Evaluated:
    """Zero-shot scores (and perplexity) of one model or checkpoint, from the cache where possible."""
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be a positive number of examples per task, got {limit}; omit it for full sets")
    tasks = check_tasks(list(tasks), offline=task_source == "embedded")
    t0 = time.perf_counter()
    lm_eval_version = metadata.version("lm_eval")
    task_key = {t: f"zeroshot-{t}-limit{limit or 'all'}-lmeval{lm_eval_version}-{task_source}" for t in tasks}
    ppl_key = {}
    if perplexity is not None:
        ppl_key = {
            d: f"ppl-{d}-seqlen{perplexity.seqlen}-windows{perplexity.max_windows or 'all'}-{dtype}"
            for d in perplexity.perplexity
        }
    check_format(model)  # a garbage config.json or a format we cannot decode: one line, before any hashing
    fp = fingerprint(model)
    loaded = None
    if fp is None:  # Hub model: the tensors are the fingerprint
        loaded = load_for_eval(model, dtype)
        fp = tensors_fingerprint(loaded[0])
    result = Evaluated(name=name, model=model, fingerprint=fp)
    meta = _read(fp, "meta")
    todo_tasks = [t for t in tasks if _read(fp, task_key[t]) is None]
    todo_ppl = [d for d in ppl_key if _read(fp, ppl_key[d]) is None]
    if todo_tasks or todo_ppl or meta is None:
        if loaded is None:
            log(f"{name}: loading {model}")
            loaded = load_for_eval(model, dtype)
        m, tok = loaded
        if meta is None:
            params = sum(p.numel() for p in m.parameters())
            zeros = sum(int((p == 0).sum()) for p in m.parameters())
            size = sum(f.stat().st_size for f in _weights_on_disk(model))
            meta = {"parameters": params, "sparsity": zeros / params, "size_bytes": size}
            _write(fp, "meta", meta)
        if todo_tasks:
            from eval.zeroshot import zero_shot

            tm = offline_task_manager() if task_source == "embedded" else hub_task_manager()
            log(f"{name}: zero-shot {', '.join(todo_tasks)} (limit {limit or 'none'}) on {device}")
            scores = zero_shot(m, tok, todo_tasks, tm, device=device, limit=limit, batch_size=batch_size)
            for t in todo_tasks:
                _write(fp, task_key[t], scores[t])
        if todo_ppl:
            from compress.pipeline import evaluate_perplexity

            cfg = EvalConfig(tuple(todo_ppl), perplexity.seqlen, perplexity.max_windows)
            for d, r in evaluate_perplexity(m, tok, cfg, device, progress=False).items():
                _write(fp, ppl_key[d], r)
    result.cached = [t for t in tasks if t not in todo_tasks] + [f"ppl:{d}" for d in ppl_key if d not in todo_ppl]
    result.zeroshot = {t: _read(fp, task_key[t]) for t in tasks}
    result.perplexity = {d: _read(fp, ppl_key[d])["ppl"] for d in ppl_key}
    result.parameters, result.sparsity, result.size_bytes = meta["parameters"], meta["sparsity"], meta["size_bytes"]
    result.wall_s = time.perf_counter() - t0
    return result
