"""The runtime's own checkpoint format: Sparse24Linear buffers stored as they are used (no dense weight on load).

`python -m compress pack --model DIR --out DIR2 [--int4]` (compress/runtime/convert.py) converts a
`sparse-24-bitmask` checkpoint; config.json gets `quantization_config = {"quant_method": "llm-compress-2of4", ...}`
documenting the layout (format24.LAYOUT), the int4 scheme (symmetric, group 128; rounding "nearest", or "the
checkpoint's codes" when packed from a GPTQ/RTN pack-quantized 2:4 checkpoint, whose codes fill the layout
exactly) and which modules hold which format. `load_packed` rebuilds the model from it.

Version 2 adds a guard: every packed module also stores an empty `<module>.weight` (0 bytes). transformers
without this package does not know `llm-compress-2of4`, warns "Unknown quantization type ... we will skip the
quantization" and would otherwise build a plain model with *random* Linear weights; the guard's shape differs
from the dense weight's, so that load stops with transformers' size-mismatch error instead. With
`import compress`, compress/hf_quantizer.py builds the layers (guard included) and the load is exact.
"""

from __future__ import annotations

from pathlib import Path

import torch

from compress.checkpoint_format import PACKED_24, folder_format
from compress.errors import UserError
from compress.export import build_model, read_config, read_state_dict
from compress.runtime import format24
from compress.runtime.linear import Sparse24Linear

QUANT_METHOD = PACKED_24
VERSION = 2  # 1: no guard tensors (still read)
BUFFERS = ("meta", "values", "qweight", "scales", "bias")
GUARD = "weight"  # the empty guard tensor's name in each packed module (see above)


def add_guard(module: Sparse24Linear) -> None:
    """Give a packed layer its empty `weight` buffer (written by pack, loaded by from_pretrained)."""
    module.register_buffer(GUARD, torch.zeros(0, dtype=torch.uint8, device=module.meta.device))


def quantization_config(model, rounding: str = "nearest") -> dict:
    """rounding: how the int4 codes were made ("nearest": RTN at pack time; "the checkpoint's codes": a
    quantization stage's, e.g. GPTQ, packed exactly)."""
    mods = {n: m for n, m in model.named_modules() if isinstance(m, Sparse24Linear)}
    return {
        "quant_method": QUANT_METHOD,
        "version": VERSION,
        "sparsity": "2:4",
        "bf16_modules": sorted(n for n, m in mods.items() if not m.int4),
        "int4_modules": sorted(n for n, m in mods.items() if m.int4),
        "int4": {"bits": 4, "symmetric": True, "group_size": format24.GROUP, "rounding": rounding},
        "layout": format24.LAYOUT,
    }


def is_packed(folder: Path) -> bool:
    """Whether `folder` holds a packed checkpoint (one line, not a traceback, for a garbage config.json)."""
    return (Path(folder) / "config.json").exists() and folder_format(Path(folder)) == QUANT_METHOD


def load_packed(folder: str | Path, dtype: torch.dtype | None = None):
    """(model on CPU with Sparse24Linear layers, tokenizer, module names) from a packed folder."""
    folder = Path(folder)
    config, qc = read_config(folder)
    if qc.get("version") not in (1, VERSION):
        raise UserError(f"{folder}: {QUANT_METHOD} version {qc.get('version')} is not supported; re-pack it")
    lists = [qc.get("bf16_modules"), qc.get("int4_modules")]
    if not all(isinstance(x, list) and all(isinstance(n, str) for n in x) for x in lists):
        raise UserError(f"{folder}/config.json: {QUANT_METHOD} needs bf16_modules and int4_modules lists; re-pack it")
    state = read_state_dict(folder)
    names = lists[0] + lists[1]
    for name in names:  # the guards (version 2) are for other loaders; nothing reads them here
        guard = state.get(f"{name}.{GUARD}")
        if guard is not None and guard.numel() == 0:
            del state[f"{name}.{GUARD}"]

    def replace(model):
        for name in names:
            try:
                lin = model.get_submodule(name)
            except AttributeError:
                raise UserError(
                    f"{folder}: packed module {name} is not in the model of its config; re-pack it"
                ) from None
            kw = {b: state[f"{name}.{b}"] for b in BUFFERS if f"{name}.{b}" in state}
            n, k = lin.out_features, lin.in_features
            expect = format24.packed_shapes(n, k, int4=False) | format24.packed_shapes(n, k, int4=True)
            for b, shape in expect.items():
                if b in kw and tuple(kw[b].shape) != shape:
                    raise UserError(f"{folder}: {name}.{b} has shape {tuple(kw[b].shape)}, expected {shape}")
            if "meta" not in kw or (("values" in kw) == ("qweight" in kw and "scales" in kw)):
                raise UserError(f"{folder}: {name} lacks its 2:4 tensors (meta + values, or meta + qweight + scales)")
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, Sparse24Linear(k, n, **kw))

    model, tokenizer = build_model(folder, config, state, dtype, replace)
    return model, tokenizer, names
