"""`load_model` for the pipeline (compress/loading.py is the one loader behind it; model names resolve in
compress/sources.py), dtypes and the decoder-layer helpers."""

from __future__ import annotations

import re

import torch
from torch import nn

from compress.errors import UserError

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


def load_model(name: str, dtype: torch.dtype):
    """Load (model on CPU in eval mode, tokenizer, source) through the one loading entry point
    (compress/loading.py: format from config.json, decoded bit-exactly, refused when incomplete or non-finite).
    Layers move to the compute device one at a time."""
    from compress.loading import load

    loaded = load(name, dtype)
    if loaded.tokenizer is None:
        raise UserError(f"{loaded.source.describe()} has no tokenizer files; re-export the checkpoint or add them")
    return loaded.model, loaded.tokenizer, loaded.source


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder layers: the ModuleList with config.num_hidden_layers entries."""
    n = getattr(model.config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise UserError(f"could not find the decoder layers of {type(model).__name__}; unsupported architecture")


def decoder_linears(model: nn.Module, ignore: tuple[str, ...] = ()) -> dict[str, nn.Linear]:
    """Linear modules inside the decoder layers whose names match no `ignore` regex (re.fullmatch): what the
    prune and quant stages target (lm_head and the embeddings never are)."""
    layer_ids = {id(m) for layer in decoder_layers(model) for m in layer.modules()}
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and id(m) in layer_ids and not any(re.fullmatch(p, name) for p in ignore)
    }


def context_length(model: nn.Module) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)
