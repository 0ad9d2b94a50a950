"""The one way weights are loaded: `load(name, dtype)`, used by run, eval/compare, generate/pack and push.

The route follows config.json's `quantization_config` (compress/checkpoint_format.py), never our report.json:
  dense, GGUF        -> transformers' from_pretrained with output_loading_info: missing, unexpected or
                        shape-mismatched tensors are refused (tied weights and computed buffers excepted);
  sparse-24-bitmask  -> compress.export.read_state_dict + build_model: bit-exact, ours or llm-compressor's
                        (transformers with compressed-tensors >= 0.20 would leave those Linears random);
  pack-quantized, llm-compress-quant -> the same reader, quantized weights decoded (compress/quant_checkpoint.py:
                        compressed-tensors' own decompressor for pack-quantized);
  llm-compress-2of4  -> compress.runtime.pack.load_packed; decoded to plain nn.Linear weights (bf16 values
                        exactly, int4 as the dequantised weight the runtime computes with) unless `runtime` (generate,
                        pack) asks to keep the Sparse24Linear layers;
  anything else      -> one line naming the format and what is supported.
A Hub id whose config.json has a quantization_config is fetched with huggingface_hub.snapshot_download and takes
the local-folder route. Every loaded model is then checked: nothing left on the meta device, every weight finite.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from compress import sources
from compress.checkpoint_format import (
    DENSE,
    OURS_QUANT,
    PACK_QUANTIZED,
    PACKED_24,
    SPARSE_24,
    config_dict,
    folder_format,
    weight_format,
)
from compress.errors import UserError
from compress.load_checks import (
    non_persistent_buffers,
    refuse_incomplete,
    refuse_meta,
    refuse_non_finite,
    some,
    tied_targets,
)
from compress.sources import ModelSource, resolve_model

# what a compressed Hub checkpoint needs on disk: config, weights, tokenizer (not e.g. Llama 3's original/*.pth)
HUB_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.tiktoken", "*.txt"]
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.json")


@dataclass
class Loaded:
    model: nn.Module  # on CPU, eval mode
    tokenizer: object | None  # None when a local folder has no tokenizer files (callers that need one refuse)
    source: ModelSource
    format: str  # checkpoint_format.DENSE | SPARSE_24 | PACKED_24


def load(name: str | Path, dtype: torch.dtype | None, *, runtime: bool = False) -> Loaded:
    """Load any model we support (alias, Hub id, local folder, GGUF file), refusing with one line a format we cannot
    decode and any load that is not exactly the stored weights. dtype None keeps the stored dtype. `runtime`: a
    packed folder keeps its Sparse24Linear layers."""
    source = resolve_model(str(name))
    online = source.kind != "hub" or sources.hub_reachable()
    folder = Path(source.location) if source.kind == "local" else None
    if source.kind == "hub":
        folder = _hub_snapshot_if_compressed(source, online)
    fmt = DENSE if folder is None else weight_format(config_dict(folder), str(name))
    if fmt in (SPARSE_24, PACK_QUANTIZED, OURS_QUANT):
        model, tokenizer = _decode_compressed(folder, dtype)
    elif fmt == PACKED_24:
        model, tokenizer = _load_packed(folder, dtype, runtime)
    else:
        model, tokenizer = _from_pretrained(source, dtype, online)
    where = source.describe()
    refuse_meta(model, where)
    refuse_non_finite(model, where)
    return Loaded(model.eval(), tokenizer, source, fmt)


def load_checkpoint(folder: str | Path, dtype: torch.dtype | None = None):
    """(model on CPU in eval mode, tokenizer or None) from a checkpoint folder, through the one loader
    (`load`: format from config.json, weights restored bit-exactly, incomplete or non-finite refused)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; pass a checkpoint folder written by `python -m compress run`")
    loaded = load(folder, dtype)
    return loaded.model, loaded.tokenizer


def check_format(name: str) -> None:
    """Refuse, before any weight is hashed or read, a local folder whose config.json is garbage or whose weight
    format cannot be decoded (Hub ids are checked when they load)."""
    source = resolve_model(name)
    if source.kind == "local":
        folder_format(Path(source.location))


def _decode_compressed(folder: Path, dtype: torch.dtype | None):
    from compress.export import build_model, read_config, read_state_dict

    config, _ = read_config(folder)
    qc = config_dict(folder).get("quantization_config")  # as stored: transformers may rewrite it
    return build_model(folder, config, read_state_dict(folder, qc), dtype)


def _load_packed(folder: Path, dtype: torch.dtype | None, runtime: bool):
    from compress.runtime.model import densify
    from compress.runtime.pack import load_packed

    model, tokenizer, _ = load_packed(folder, dtype)
    if not runtime:  # run/eval/push see a plain model: nn.Linear holding the weight the runtime computes with
        densify(model)
    return model, tokenizer


def _hub_snapshot_if_compressed(source: ModelSource, online: bool) -> Path | None:
    """Local snapshot of a Hub model whose config.json has a quantization_config, else None (plain from_pretrained).
    The config comes first, so a format we cannot decode is refused before its weights are downloaded."""
    import huggingface_hub

    kwargs = {} if online else {"local_files_only": True}
    try:
        config_folder = huggingface_hub.snapshot_download(source.location, allow_patterns=["config.json"], **kwargs)
    except Exception as e:  # noqa: BLE001 - every Hub failure becomes one actionable line
        raise _load_error(source, online, e) from None
    config = config_dict(Path(config_folder))
    if not config.get("quantization_config"):
        return None
    weight_format(config, source.describe())
    try:
        return Path(huggingface_hub.snapshot_download(source.location, allow_patterns=HUB_FILES, **kwargs))
    except Exception as e:  # noqa: BLE001
        raise _load_error(source, online, e) from None


def _from_pretrained(source: ModelSource, dtype: torch.dtype | None, online: bool):
    """transformers' own loader (dense weights, GGUF), refusing a load that left tensors random or unused."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    if not online:
        kwargs["local_files_only"] = True  # no network: the local Hugging Face cache only
    wants_tokenizer = source.kind != "local" or any((Path(source.location) / f).exists() for f in TOKENIZER_FILES)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs) if wants_tokenizer else None
        model, info = AutoModelForCausalLM.from_pretrained(
            source.location,
            **({"dtype": dtype} if dtype is not None else {}),
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # report mismatches through our one line, not transformers' traceback
            **kwargs,
        )
    except Exception as e:  # noqa: BLE001 - every loader failure becomes one actionable line
        raise _load_error(source, online, e) from None
    tied, computed = tied_targets(model), non_persistent_buffers(model)
    missing = set(info["missing_keys"])
    refuse_incomplete(
        source.describe(),
        missing=[k for k in missing if k not in computed and not (k in tied and tied[k] not in missing)],
        unexpected=[k for k in info["unexpected_keys"] if k not in computed],
        mismatched=info["mismatched_keys"],
    )
    if info.get("error_msgs"):
        raise UserError(f"{source.describe()} did not load cleanly (errors {some(info['error_msgs'])})")
    return model, tokenizer


def _load_error(source: ModelSource, online: bool, e: Exception) -> UserError:
    reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    if source.kind == "hub":
        hub = "the Hub" if online else "the Hub (unreachable: no network), then the local cache"
        return UserError(
            f"could not load {source.describe()} ({reason}). Tried: alias table, local folder "
            f"./{source.location} (absent), {hub}. Fix: check the id; for gated models (Llama) accept "
            "the license and run `hf auth login`; offline, set HF_HUB_OFFLINE=1 with a cache in HF_HOME "
            "that holds it, or pass a local folder or .gguf file"
        )
    return UserError(f"could not load {source.describe()} ({reason})")
