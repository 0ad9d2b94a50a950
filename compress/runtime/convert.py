"""Checkpoint folder -> runtime model: `load_runtime_model` (generate, the benchmarks) and `pack` (the CLI command).

Above compress/loading.py, which itself reads packed folders through compress/runtime/pack.py and densifies them
with compress/runtime/model.py; kept apart from both so that no runtime module imports the loader that imports it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from compress.checkpoint_format import OURS_QUANT, PACK_QUANTIZED, PACKED_24, SPARSE_24, config_dict, folder_format
from compress.errors import UserError
from compress.export import check_output_dir, save_checkpoint, weight_files
from compress.loading import load
from compress.runtime.format24 import GROUP
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


def int4_scales(folder: Path) -> dict[str, torch.Tensor]:
    """The per-group scales of a pack-quantized checkpoint whose grid is the runtime's int4 one (symmetric 4-bit,
    group 128), by module name; UserError naming the grid otherwise."""
    from compress.quant_format import spec_from_quantization_config

    qc = config_dict(folder).get("quantization_config") or {}
    spec = spec_from_quantization_config(qc)
    if not (spec.bits == 4 and spec.symmetric and spec.strategy == "group" and spec.group_size == GROUP):
        grid = f"{spec.bits}-bit {spec.strategy} {spec.group_size if spec.strategy == 'group' else ''}".rstrip()
        raise UserError(
            f"{folder} holds {grid}{'' if spec.symmetric else ' asymmetric'} codes; the runtime's int4 layout holds "
            f"symmetric 4-bit codes in groups of {GROUP}: quantize with bits: 4, group_size: {GROUP}, symmetric: "
            "true, or drop --int4 (the runtime then computes bf16 2:4 on the decoded weights)"
        )
    scales = {}
    for f in weight_files(folder):
        with safe_open(f, framework="pt") as fh:
            for k in fh.keys():
                if k.endswith(".weight_scale"):
                    scales[k.removesuffix(".weight_scale")] = fh.get_tensor(k)
    return scales


def load_runtime_model(folder: str | Path, device: torch.device, dtype: torch.dtype | None = None, int4: bool = False):
    """(model with Sparse24Linear layers on `device`, tokenizer, names converted) from an exported folder
    (`sparse-24-bitmask`, ours or llm-compressor's, converted on load; `int4` quantises the kept values by rounding
    to nearest), a quantized 2:4 one (pack-quantized: `int4` packs its own codes and scales exactly, so GPTQ's
    values are what the kernels compute with; any quantized folder: bf16 2:4 of the decoded weights), or a packed
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
    elif fmt in (PACK_QUANTIZED, OURS_QUANT):
        if int4 and fmt == OURS_QUANT:
            raise UserError(
                f"{folder} holds {OURS_QUANT} codes (3-bit, lookup-table or QuEST grids), which the runtime's int4 "
                "layout cannot hold; drop --int4 (bf16 2:4 on the decoded weights)"
            )
        scales = int4_scales(folder) if int4 else None
        loaded = load(folder, dtype)
        done = sparsify(loaded.model, None, int4=int4, scales=scales)
        if not done:
            raise UserError(f"{folder} holds no 2:4 sparse weights; quantize a 2:4 recipe's output")
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
    rounding = "the checkpoint's codes" if folder_format(Path(folder)) == PACK_QUANTIZED else "nearest"
    qc = quantization_config(model, rounding)
    return save_checkpoint(model, tokenizer, out, quantization_config=qc, overwrite=overwrite)
