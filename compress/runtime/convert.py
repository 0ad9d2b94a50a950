"""Checkpoint folder -> runtime model: `load_runtime_model` (generate, the benchmarks) and `pack` (the CLI command).

Above compress/loading.py, which itself reads packed folders through compress/runtime/pack.py and densifies them
with compress/runtime/model.py; kept apart from both so that no runtime module imports the loader that imports it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from compress.checkpoint_format import PACKED_24, SPARSE_24, folder_format
from compress.errors import UserError
from compress.export import check_output_dir, save_checkpoint, weight_files
from compress.loading import load
from compress.runtime.linear import Sparse24Linear
from compress.runtime.model import prepare, sparsify
from compress.runtime.pack import add_guard, quantization_config


def compressed_modules(folder: Path) -> set[str]:
    """Names of the modules an exported checkpoint stores in sparse-24-bitmask form (reads keys only)."""
    names = set()
    for f in weight_files(folder):
        try:
            with safe_open(f, framework="pt") as fh:
                names |= {k.removesuffix(".compressed") for k in fh.keys() if k.endswith(".compressed")}
        except (SafetensorError, OSError) as e:
            raise UserError(f"checkpoint file {f} is damaged or missing ({e}); re-export or re-download it") from None
    return names


def load_runtime_model(folder: str | Path, device: torch.device, dtype: torch.dtype | None = None, int4: bool = False):
    """(model with Sparse24Linear layers on `device`, tokenizer, names converted) from an exported folder
    (`sparse-24-bitmask`, ours or llm-compressor's, converted on load; `int4` quantises the kept values) or a packed
    one (used as is), through the one loader (compress/loading.py) and its checks."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; pass a checkpoint folder written by `python -m compress run`")
    fmt = folder_format(folder)  # one line for a garbage config.json or a format we cannot decode
    if fmt == PACKED_24:
        if int4:
            raise UserError(f"{folder} is already packed; --int4 applies when converting a sparse-24-bitmask folder")
        loaded = load(folder, dtype, runtime=True)
        done = [n for n, m in loaded.model.named_modules() if isinstance(m, Sparse24Linear)]
    else:
        names = compressed_modules(folder) if fmt == SPARSE_24 else set()
        if not names:
            raise UserError(f"{folder} holds no 2:4-compressed weights; export a 2:4 recipe first")
        loaded = load(folder, dtype)
        done = sparsify(loaded.model, names, int4=int4)
    model = loaded.model
    model.to(device)
    if device.type == "cuda":
        prepare(model)
    return model, loaded.tokenizer, done


def pack(folder: str | Path, out: str | Path, int4: bool = False, overwrite: bool = False) -> Path:
    """Convert an exported 2:4 checkpoint into the runtime format (bf16 or int4 kept values)."""
    out = Path(out)
    check_output_dir(out, overwrite)
    model, tokenizer, names = load_runtime_model(folder, torch.device("cpu"), int4=int4)
    for m in model.modules():
        if isinstance(m, Sparse24Linear):
            add_guard(m)
    return save_checkpoint(model, tokenizer, out, quantization_config=quantization_config(model), overwrite=overwrite)
