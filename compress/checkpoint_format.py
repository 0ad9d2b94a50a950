"""How a model folder stores its weights, decided from config.json's `quantization_config` before any weight is read.

Formats we load (the names `weight_format` returns):
  "dense"              no quantization_config: plain tensors, loaded by transformers' from_pretrained (then checked);
  "sparse-24-bitmask"  compressed-tensors whose sparsity_config.format is sparse-24-bitmask (or dense), without
                       quantization: decoded by compress.export.read_state_dict, bit-exactly, whoever wrote it;
  "llm-compress-2of4"  the runtime's packed format (compress/runtime/pack.py);
  "pack-quantized"     compressed-tensors int weight-only quantization (ours, llm-compressor's W4A16/W8A16, with or
                       without 2:4 metadata), decoded with compressed-tensors' own decompressor;
  "llm-compress-quant" our quantization layouts (3-bit grids, SqueezeLLM tables, QuEST codes: quant_checkpoint.py).
Everything else is refused with one line naming the format: transformers with compressed-tensors >= 0.20 no longer
decompresses compressed-tensors checkpoints, so a plain from_pretrained leaves every compressed Linear randomly
initialised (perplexity 1e15, exit 0), and other quantizers (gptq, awq, ...) replace Linear layers we prune.
Pure functions on the parsed JSON; the only file read is config.json itself. Not our report.json: checkpoints
written by llm-compressor, pulled from the Hub or with report.json deleted must take the same route as ours.
"""

from __future__ import annotations

import json
from pathlib import Path

from compress.errors import UserError

DENSE = "dense"
SPARSE_24 = "sparse-24-bitmask"
PACKED_24 = "llm-compress-2of4"
PACK_QUANTIZED = "pack-quantized"
OURS_QUANT = "llm-compress-quant"
SUPPORTED = (
    "supported: dense weights (no quantization_config), compressed-tensors sparse-24-bitmask (ours or "
    "llm-compressor's), compressed-tensors pack-quantized int weight-only (2, 4, 8 bits), "
    f"{OURS_QUANT} and {PACKED_24} (`python -m compress pack`)"
)
# compressed-tensors keys that, when non-empty, change what the stored tensors mean
_CT_QUANTIZATION_KEYS = ("config_groups", "kv_cache_scheme", "transform_config", "moe_sparsity_config")


def parse_config(path: Path) -> dict:
    """config.json as a dict; one line naming the file when it is not a JSON object."""
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is broken: not a valid config ({str(e)[:120]}); restore or re-export it") from None
    if not isinstance(data, dict):
        kind = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(data), "null")
        raise UserError(f"{path} is broken: not a valid config (a JSON {kind}, not an object); restore or re-export it")
    return data


def config_dict(folder: Path) -> dict:
    """The folder's config.json, checked to be a transformers config (a JSON object with a model_type)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise UserError(f"{folder} has no config.json; pass a Hugging Face model folder or a checkpoint folder")
    data = parse_config(path)
    if not isinstance(data.get("model_type"), str) or not data["model_type"]:
        raise UserError(f"{path} is broken: not a valid config (no model_type); restore or re-export it")
    return data


def _describe(qc: dict) -> str:
    method = qc.get("quant_method")
    if method != "compressed-tensors":
        return f"quant_method {method!r}"
    parts = []
    if qc.get("config_groups"):
        parts.append(f"quantization format {qc.get('format')!r} with config_groups {sorted(qc['config_groups'])}")
    for key in _CT_QUANTIZATION_KEYS[1:]:
        if qc.get(key):
            parts.append(f"{key}")
    sparsity = (qc.get("sparsity_config") or {}).get("format")
    if sparsity not in (None, "dense", SPARSE_24):
        parts.append(f"sparsity format {sparsity!r}")
    if not parts:
        parts.append(f"quantization format {qc.get('format')!r}")
    return "compressed-tensors " + ", ".join(parts)


def weight_format(config: dict, where: str) -> str:
    """DENSE, SPARSE_24, PACKED_24, PACK_QUANTIZED or OURS_QUANT for a parsed config.json; UserError (one line) for
    what we cannot decode."""
    qc = config.get("quantization_config")
    if qc is None or qc == {}:
        return DENSE
    if not isinstance(qc, dict):
        raise UserError(f"{where}: quantization_config is not a JSON object; {SUPPORTED}")
    method = qc.get("quant_method")
    if method in (PACKED_24, OURS_QUANT):
        return method
    if method == "compressed-tensors" and qc.get("format") == PACK_QUANTIZED and qc.get("config_groups"):
        from compress.quant_format import spec_from_quantization_config

        extra = [k for k in _CT_QUANTIZATION_KEYS[1:] if qc.get(k)]
        sparsity = (qc.get("sparsity_config") or {}).get("format")
        try:
            spec_from_quantization_config(qc)
        except ValueError as e:
            raise UserError(f"{where}: {e}; {SUPPORTED}") from None
        if not extra and sparsity in (None, "dense"):
            return PACK_QUANTIZED
    if method == "compressed-tensors":
        quantized = any(qc.get(k) for k in _CT_QUANTIZATION_KEYS)
        sparsity = (qc.get("sparsity_config") or {}).get("format")
        # top-level `format` is the quantization format; without config_groups only "dense" (or absent) is plain
        plain = qc.get("format") in (None, "dense", SPARSE_24)
        if not quantized and plain and sparsity in (None, "dense", SPARSE_24):
            return SPARSE_24  # (no sparsity at all: the same reader returns the plain tensors as stored)
    raise UserError(f"{where}: weights stored as {_describe(qc)} cannot be decoded here; {SUPPORTED}")


def folder_format(folder: Path) -> str:
    """weight_format of a local folder's config.json (also rejects a garbage config.json with one line)."""
    return weight_format(config_dict(folder), str(folder))
