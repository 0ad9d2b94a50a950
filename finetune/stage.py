"""The `finetune` stage: AST (finetune/trainer.py) on the whole model, after a 2:4 prune stage.

    stages:
      - prune: {method: sparsegpt, pattern: "2:4"}
      - finetune:
          method: ast
          steps: 400                # and the other training keys of finetune/config.py
          data:
            sources: [olmo-mix]     # calibration corpora (compress/data.py names or .txt/.jsonl files)
            self_distill_texts: 0   # texts sampled from the dense teacher, added as the source `self-distill`
            self_distill_new_tokens: 512
            self_distill_batch: 64
            max_source_tokens: null # tokens read per source (null: all of it; C4 needs a number)
            heldout_tasks: [paper7, discriminating]   # zero-shot tasks whose texts must not be trained on

It starts from the masks the prune stage recorded, distils from the dense model (loaded again, `load_dense`),
checks that no text scored for perplexity or zero-shot is in the training windows (documents that share a
32-token span with one are dropped and counted), plans its memory and refuses a run that cannot fit, and writes
the final masks back into the records. The student is returned in the run's dtype.

SLoRB: its terms y += S · (x summed over groups of k inputs) are merged into the weights at the end
(W[r, j] += S[r, j // k]), so a SLoRB model is exported dense — compressed-tensors has no place for S, and a
separate tensor that a loader drops would be silently wrong.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from compress.errors import UserError
from compress.records import LinearRecord
from compress.schema import check_types, positive
from compress.stages import ModelStage, register
from finetune.config import ASTConfig
from finetune.data import check_disjoint, data_summary, dedup_texts, ngram_keys, pack_windows, self_distill_texts
from finetune.memory import check_fits, plan_memory, shape_from_model
from finetune.trainer import train_ast
from prune.config import NM

NGRAM = 32  # span length of the train/eval overlap check
SOURCES = ("olmo-mix", "c4", "wikitext2")  # compress/data.py load_calibration_corpus


@dataclass(frozen=True)
class FinetuneData:
    sources: tuple[str, ...] = ("olmo-mix",)
    self_distill_texts: int = 0
    self_distill_new_tokens: int = 512
    self_distill_batch: int = 64
    max_source_tokens: int | None = None
    heldout_tasks: tuple[str, ...] = ("paper7", "discriminating")  # zero-shot tasks (or sets) never trained on

    def __post_init__(self) -> None:
        check_types(self, "finetune.data")
        if not self.sources and not self.self_distill_texts:
            raise ValueError("finetune.data needs sources or self_distill_texts; e.g. sources: [olmo-mix]")
        for name in ("self_distill_new_tokens", "self_distill_batch"):
            positive(f"finetune.data.{name}", getattr(self, name))
        if self.self_distill_texts < 0:
            raise ValueError(f"finetune.data.self_distill_texts must be >= 0, got {self.self_distill_texts}")
        if self.max_source_tokens is not None:
            positive("finetune.data.max_source_tokens", self.max_source_tokens)
        for name in self.sources:
            if name not in SOURCES and not name.endswith((".txt", ".jsonl")):
                raise ValueError(
                    f"finetune.data.sources entry {name!r} is not one of {', '.join(SOURCES)} or a .txt/.jsonl file"
                )


@dataclass(frozen=True)
class FinetuneConfig(ASTConfig):
    data: FinetuneData = field(default_factory=FinetuneData)

    def check_after(self, earlier: tuple) -> None:
        """AST trains 2:4 masks: an earlier prune stage must produce them."""
        from prune.stage import PruneConfig
        from quant.stage import QuantConfig

        if any(isinstance(s, QuantConfig) for s in earlier):
            raise ValueError(
                "finetune after quant would train the quantized weights off their grid; put the quant stage after "
                "the finetune stage"
            )
        if not any(isinstance(s, PruneConfig) and s.spec.pattern == NM(2, 4) for s in earlier):
            raise ValueError(
                "finetune (AST) trains the 2:4 masks of an earlier prune stage; put "
                "{prune: {method: sparsegpt, pattern: '2:4'}} before it"
            )


def _documents(tokenizer, texts, limit: int | None) -> list[torch.Tensor]:
    """Token ids of each text followed by EOS, until `limit` tokens (None: all)."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    docs, total = [], 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + eos
        docs.append(torch.tensor(ids, dtype=torch.long))
        total += len(ids)
        if limit is not None and total >= limit:
            break
    return docs


def _drop_overlapping(docs: list[torch.Tensor], heldout: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], dict]:
    """Documents that share a NGRAM-token span (by rolling hash) with a held-out text are dropped, counted per
    held-out set; `check_disjoint` then confirms token by token on the packed windows. One `isin` over the keys of
    all documents at once (per document it would sort the held-out keys again every time)."""
    sets = {
        name: torch.unique(ngram_keys(ids.reshape(1, -1), NGRAM))
        for name, ids in heldout.items()
        if ids.numel() >= NGRAM
    }
    long = [i for i, d in enumerate(docs) if d.numel() >= NGRAM]
    hit_set: dict[int, str] = {}
    if sets and long:
        keys = [ngram_keys(docs[i].reshape(1, -1), NGRAM).flatten() for i in long]
        owner = torch.repeat_interleave(torch.tensor(long), torch.tensor([k.numel() for k in keys]))
        flat = torch.cat(keys)
        for name, k in sets.items():
            for i in owner[torch.isin(flat, k)].unique().tolist():
                hit_set.setdefault(i, name)
    kept = [d for i, d in enumerate(docs) if i not in hit_set]
    dropped: dict[str, int] = {}
    for name in hit_set.values():
        dropped[name] = dropped.get(name, 0) + 1
    return kept, dropped


@torch.no_grad()
def restore_pruned_values(model, teacher, masks: dict[str, torch.Tensor]) -> int:
    """Put the dense weights back at the pruned positions. The model computes W ⊙ M, so it starts as exactly the
    one-shot model (SparseGPT's updated kept weights included), but a mask recompute can bring a pruned weight back
    with its dense value, as in the reference, which trains from the dense weights (Huang et al. 2025, §3; AST
    `main.py` loads the dense checkpoint and masks in the forward). Returns the number of values restored."""
    dense = dict(teacher.named_modules())
    mods = dict(model.named_modules())
    n = 0
    for name, keep in masks.items():
        W, D = mods[name].weight.data, dense[name].weight.data
        pruned = ~keep.to(W.device)
        W[pruned] = D.to(W)[pruned]
        n += int(pruned.sum())
    return n


@register("finetune", FinetuneConfig, uses_calibration=False)
class FinetuneStage(ModelStage):
    def describe(self) -> str:
        c = self.config
        return f"{c.method}, {c.steps} steps of {c.tokens_per_step} tokens"

    def run(self) -> dict:
        ctx, cfg = self.ctx, self.config
        masks = {n: r.mask for n, r in ctx.records.items() if r.pattern == NM(2, 4)}
        if not masks:
            raise UserError("finetune (AST) found no 2:4 Linears in the records; run a 2:4 prune stage before it")
        model = ctx.model
        dtype = next(model.parameters()).dtype
        device = ctx.device

        plan = plan_memory(shape_from_model(model, set(masks)), cfg, device.type, teacher_dtype=dtype)
        available = _available_bytes(device)
        try:
            check_fits(plan, available)
        except ValueError as e:
            raise UserError(str(e)) from None

        teacher = ctx.load_dense()
        restored = restore_pruned_values(model, teacher, masks)
        try:
            windows, data = self._training_windows(teacher)
        except ValueError as e:  # a source shorter than one window, training text that is held out, ...
            raise UserError(str(e)) from None
        ctx.log(
            f"finetune data: {data['windows']} windows of {cfg.seqlen} tokens ("
            + ", ".join(f"{k} {v['tokens']:,} tokens, {v['epochs']:.2f} epochs" for k, v in data["sources"].items())
            + ")"
        )
        try:
            result = train_ast(
                model,
                teacher,
                masks,
                windows,
                cfg,
                device=device,
                state_dir=ctx.work_dir / "finetune" if ctx.work_dir is not None else None,
                evaluate=(lambda m: {k: v["ppl"] for k, v in ctx.evaluate(m).items()}) if ctx.evaluate else None,
                progress=ctx.progress,
                log=ctx.log,
            )
        except (ValueError, FloatingPointError) as e:
            raise UserError(str(e) if str(e).startswith("finetune:") else f"finetune: {e}") from None
        finally:
            del teacher
            if device.type == "cuda":
                torch.cuda.empty_cache()

        modules = dict(model.named_modules())
        if result.slorb is not None:  # merged: the Linears become dense (module docstring)
            for name, S in result.slorb.items():
                W = modules[name].weight.data
                W += S.to(W).repeat_interleave(cfg.slorb_k, dim=1)
                ctx.records[name] = LinearRecord(tuple(W.shape))
            for h in getattr(model, "_slorb_hooks", []):  # the term now lives in W: computing it twice is wrong
                h.remove()
            model._slorb_hooks = []
        else:
            for name, keep in result.masks.items():
                ctx.records[name].set_mask(NM(2, 4), keep)
                if result.codes is not None:  # QAT: the weights are on the QuEST grid, the record says so
                    ctx.records[name].quant = result.codes[name]
        model.to(device="cpu", dtype=dtype)
        metrics = dict(result.metrics)
        history = metrics.pop("loss_history")
        return {
            "summary": {
                "finetune_tokens": metrics["train_tokens"],
                "finetune_s": metrics["train_s"],
                "finetune_tokens_per_s": metrics["tokens_per_s"],
                "finetune_final_kl": metrics["final_kl"],
                **({"finetune_merged_slorb": True} if result.slorb is not None else {}),
                **({"finetune_qat": f"quest w{cfg.qat_bits}"} if result.codes is not None else {}),
            },
            "metrics": metrics,
            "loss_history": history[:: max(1, len(history) // 200)],
            "data": data,
            "memory_plan_gib": plan.gib(),
            "pruned_values_from_dense": restored,
            "memory_available_gib": round(available / 1024**3, 2),
        }

    def _training_windows(self, teacher) -> tuple[torch.Tensor, dict]:
        """Sources + self-distillation texts, deduplicated, held-out texts removed, packed into windows."""
        from compress.data import load_calibration_corpus

        ctx, cfg, d = self.ctx, self.config, self.config.data
        tok = ctx.tokenizer
        texts: dict[str, list[str]] = {}
        sampling_s = None
        for name in d.sources:
            texts[name] = list(load_calibration_corpus(name).texts)
        if d.self_distill_texts:
            prompts = [" ".join(t.split()[:8]) for src in texts.values() for t in src[:256]] or None
            ctx.log(f"finetune: {d.self_distill_texts} texts of {d.self_distill_new_tokens} tokens from the teacher")
            teacher.to(ctx.device)
            args = (d.self_distill_texts, d.self_distill_new_tokens, cfg.seed, ctx.device, d.self_distill_batch)
            cache = SelfDistillCache(ctx.work_dir, teacher, args, prompts)
            texts["self-distill"] = cache.load()
            if texts["self-distill"] is None:
                t0 = time.perf_counter()
                texts["self-distill"] = self_distill_texts(teacher, tok, *args, prompts=prompts)
                sampling_s = time.perf_counter() - t0  # planning figure: fresh text costs this much per run
                cache.save(texts["self-distill"])
            else:
                ctx.log(f"finetune: self-distillation texts from {cache.path} (same teacher, prompts and settings)")
        heldout = {
            name: torch.tensor(tok(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
            for name, text in ctx.heldout(d.heldout_tasks).items()
        }
        docs, report = {}, {"deduplicated": {}, "dropped_overlapping_heldout": {}, "heldout_sets": sorted(heldout)}
        if sampling_s is not None:  # None: none sampled, or read from the cache
            report["self_distill_sampling_s"] = round(sampling_s, 1)
        for name, src in texts.items():
            unique, removed = dedup_texts(src)
            report["deduplicated"][name] = removed
            kept, dropped = _drop_overlapping(_documents(tok, unique, d.max_source_tokens), heldout)
            report["dropped_overlapping_heldout"][name] = dropped
            docs[name] = kept
        packed = pack_windows(docs, cfg.seqlen, cfg.seed)
        check_disjoint(packed.windows, heldout, NGRAM)  # the guarantee, on exactly what is trained on
        report.update(data_summary(packed, cfg.steps, cfg.micro_batch, cfg.grad_accum, cfg.seed))
        return packed.windows, report


class SelfDistillCache:
    """The sampled texts kept in the run's work folder, so a run resumed in a later process (a GPU call cut at 10
    minutes) trains on the same windows; the trainer's checkpoint also refuses other data (`windows_sha256`).
    Keyed on everything the sampling depends on: the settings, prompts, device type, dtype and a fingerprint of
    the teacher (its config and input embedding matrix: cheap even for a 7B model, and a different checkpoint of
    the same architecture differs there)."""

    def __init__(self, work_dir, teacher, args: tuple, prompts: list[str] | None) -> None:
        emb = teacher.get_input_embeddings().weight.detach()
        h = hashlib.sha256(json.dumps([list(map(str, args)), prompts, teacher.config.to_json_string()]).encode())
        h.update(str(emb.dtype).encode())
        h.update(emb.float().cpu().contiguous().numpy().tobytes())
        self.key = h.hexdigest()
        self.path = None if work_dir is None else Path(work_dir) / "finetune" / "self-distill.json"

    def load(self) -> list[str] | None:
        if self.path is None or not self.path.is_file():
            return None
        data = json.loads(self.path.read_text())
        return data["texts"] if data.get("key") == self.key else None

    def save(self, texts: list[str]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": self.key, "texts": texts}))
        tmp.replace(self.path)  # atomic: a half-written cache is never read


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)
