"""Training data for AST: packed token windows, texts sampled from the teacher, dedup, the train/eval disjointness
check and a summary for the run report. Token ids in, token ids out; tokenizers only where text is produced."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PackedWindows:
    """windows (N, seqlen) int64; source (N,) int64 index into `names` for each window."""

    windows: torch.Tensor
    source: torch.Tensor
    names: tuple[str, ...]

    def tokens_per_source(self) -> dict[str, int]:
        seqlen = self.windows.shape[1]
        counts = torch.bincount(self.source, minlength=len(self.names))
        return {name: int(c) * seqlen for name, c in zip(self.names, counts, strict=True)}


def pack_windows(token_ids_per_source: dict[str, list[torch.Tensor]], seqlen: int, seed: int) -> PackedWindows:
    """Per source: documents in a seeded order, concatenated (each should end with EOS), cut into non-overlapping
    windows of `seqlen` tokens (the last partial one dropped); then all windows in one seeded order."""
    g = torch.Generator().manual_seed(seed)
    windows, source = [], []
    names = tuple(token_ids_per_source)
    for i, name in enumerate(names):
        docs = token_ids_per_source[name]
        order = torch.randperm(len(docs), generator=g).tolist()
        stream = torch.cat([docs[j].reshape(-1).long() for j in order]) if docs else torch.zeros(0, dtype=torch.long)
        n = stream.numel() // seqlen
        if n == 0:
            raise ValueError(f"finetune data source {name!r} has {stream.numel()} tokens, fewer than seqlen {seqlen}")
        windows.append(stream[: n * seqlen].view(n, seqlen))
        source.append(torch.full((n,), i, dtype=torch.long))
    perm = torch.randperm(sum(w.shape[0] for w in windows), generator=g)
    return PackedWindows(torch.cat(windows)[perm], torch.cat(source)[perm], names)


def window_order(n_windows: int, count: int, seed: int) -> torch.Tensor:
    """The first `count` window indices of the training stream: one seeded permutation per epoch, concatenated.
    A pure function of its arguments, so a resumed run reads exactly the windows the uninterrupted one would."""
    g = torch.Generator().manual_seed(seed)
    epochs = -(-count // n_windows)
    return torch.cat([torch.randperm(n_windows, generator=g) for _ in range(epochs)])[:count]


@torch.no_grad()
def self_distill_texts(
    teacher,
    tokenizer,
    n_texts: int,
    max_new_tokens: int,
    seed: int,
    device: torch.device | str,
    batch_size: int,
    prompts: list[str] | None = None,
    prompt_tokens: int = 8,
) -> list[str]:
    """`n_texts` texts sampled from the teacher (temperature 1, no top-k/top-p truncation), each batch seeded with
    seed + batch index in a forked RNG (the caller's RNG state is left alone).

    Without prompts every text starts from the BOS token (EOS where the tokenizer has none); with prompts they are
    cut to their first `prompt_tokens` tokens and used in turn (one length: no padding needed)."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if prompts:
        # every prompt cut to its first `prompt_tokens` tokens (shorter ones skipped): one length, so full batches
        # need no padding. Batching by each prompt's own length split 512 texts into dozens of small batches and
        # took over 5 minutes on the H200 (measured 2026-12-01).
        cut = [ids[:prompt_tokens] for p in prompts if len(ids := list(tokenizer(p)["input_ids"])) >= prompt_tokens]
        if not cut:
            raise ValueError(f"self-distillation: no prompt has {prompt_tokens} tokens")
        encoded = [cut[i % len(cut)] for i in range(n_texts)]
    else:
        encoded = [[start] for _ in range(n_texts)]
    batches, by_len = [], {}
    for ids in encoded:
        by_len.setdefault(len(ids), []).append(ids)
    for group in by_len.values():
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    device = torch.device(device)
    texts = []
    for b, batch in enumerate(batches):
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed + b)
            ids = torch.tensor(batch, device=device)
            out = teacher.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.eos_token_id,
            )
        texts += [tokenizer.decode(row, skip_special_tokens=True) for row in out.cpu().tolist()]
    return texts


def dedup_texts(texts: list[str]) -> tuple[list[str], int]:
    """(texts with exact duplicates removed, first occurrence kept in order; number removed)."""
    seen, out = set(), []
    for text in texts:
        key = hashlib.sha256(text.encode("utf-8")).digest()
        if key not in seen:
            seen.add(key)
            out.append(text)
    return out, len(texts) - len(out)


# One polynomial hash mod 2^64 (int64 arithmetic wraps): distinct n-grams collide with probability about 2^-64 per
# pair; `check_disjoint` confirms every hit token by token, so a collision can cost a dropped document, never a miss.
_BASE = 1_000_003


def ngram_keys(rows: torch.Tensor, n: int) -> torch.Tensor:
    """(R, L) int64 tokens -> (R, L - n + 1) int64 keys of every n-gram inside a row (equal n-grams, equal keys)."""
    L = rows.shape[1] - n + 1
    h = torch.zeros(rows.shape[0], L, dtype=torch.long)
    for j in range(n):
        h = h * _BASE + rows[:, j : j + L] + 1
    return h


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().long().cpu()
    return t.reshape(1, -1) if t.dim() == 1 else t.reshape(-1, t.shape[-1])


def check_disjoint(
    train_windows: torch.Tensor, eval_token_ids: dict[str, torch.Tensor], ngram: int = 32, chunk: int = 256
) -> None:
    """ValueError naming the evaluation set when any `ngram`-token n-gram of its texts appears in a training window.

    train_windows (N, seqlen) int64; each eval set a 1-D token stream or (rows, L) texts. Texts scored for
    perplexity or zero-shot must never be trained on. Rolling hashes of both sides, then `torch.isin`; a hash hit
    is confirmed by comparing the tokens, so a collision never raises."""
    train = _as_rows(train_windows)
    if train.shape[1] < ngram:
        return
    for name, ids in eval_token_ids.items():
        rows = _as_rows(ids)
        if rows.shape[1] < ngram:
            continue
        keys = ngram_keys(rows, ngram)  # (R, L')
        flat = keys.flatten()
        sorted_keys, where = torch.sort(flat)
        for start in range(0, train.shape[0], chunk):
            part = train[start : start + chunk]
            tk = ngram_keys(part, ngram)
            hit = torch.isin(tk, sorted_keys)
            for r, c in hit.nonzero().tolist():
                i = int(torch.searchsorted(sorted_keys, tk[r, c]))
                while i < flat.numel() and sorted_keys[i] == tk[r, c]:
                    er, ec = divmod(int(where[i]), keys.shape[1])
                    if torch.equal(rows[er, ec : ec + ngram], part[r, c : c + ngram]):
                        raise ValueError(
                            f"finetune data overlaps evaluation set {name!r}: a {ngram}-token span of its text "
                            f"{er} (offset {ec}) is in training window {start + r} (offset {c}); "
                            "remove that text from the training sources"
                        )
                    i += 1


def data_summary(packed: PackedWindows, steps: int, micro_batch: int, grad_accum: int, seed: int) -> dict:
    """Tokens per source and the epochs a run of `steps` makes over each (the trainer's `window_order`)."""
    seqlen = packed.windows.shape[1]
    used = steps * micro_batch * grad_accum
    order = window_order(packed.windows.shape[0], used, seed)
    seen = torch.bincount(packed.source[order], minlength=len(packed.names))
    have = torch.bincount(packed.source, minlength=len(packed.names))
    return {
        "seqlen": seqlen,
        "windows": packed.windows.shape[0],
        "train_tokens": used * seqlen,
        "sources": {
            name: {"tokens": int(have[i]) * seqlen, "epochs": float(seen[i] / have[i])}
            for i, name in enumerate(packed.names)
        },
    }
