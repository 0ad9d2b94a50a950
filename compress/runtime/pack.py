"""The runtime's own checkpoint format: Sparse24Linear buffers stored as they are used (no dense weight on load).

`python -m compress pack --model DIR --out DIR2 [--int4]` converts a `sparse-24-bitmask` checkpoint; config.json
gets `quantization_config = {"quant_method": "llm-compress-2of4", ...}` documenting the layout (format24.LAYOUT),
the int4 scheme (symmetric, group 128, round to nearest — a later quantization stage fills the same layout
with better values) and which modules hold which format. `load_packed` rebuilds the model from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from compress.errors import UserError
from compress.export import check_output_dir, save_checkpoint, weight_files
from compress.runtime import format24
from compress.runtime.linear import Sparse24Linear

QUANT_METHOD = "llm-compress-2of4"
BUFFERS = ("meta", "values", "qweight", "scales", "bias")


def quantization_config(model) -> dict:
    mods = {n: m for n, m in model.named_modules() if isinstance(m, Sparse24Linear)}
    return {
        "quant_method": QUANT_METHOD,
        "version": 1,
        "sparsity": "2:4",
        "bf16_modules": sorted(n for n, m in mods.items() if not m.int4),
        "int4_modules": sorted(n for n, m in mods.items() if m.int4),
        "int4": {"bits": 4, "symmetric": True, "group_size": format24.GROUP, "rounding": "nearest"},
        "layout": format24.LAYOUT,
    }


def pack(folder: str | Path, out: str | Path, int4: bool = False, overwrite: bool = False) -> Path:
    """Convert an exported 2:4 checkpoint into the runtime format (bf16 or int4 kept values)."""
    from compress.runtime.model import load_runtime_model

    out = Path(out)
    check_output_dir(out, overwrite)
    model, tokenizer, names = load_runtime_model(folder, torch.device("cpu"), int4=int4)
    return save_checkpoint(model, tokenizer, out, quantization_config=quantization_config(model), overwrite=overwrite)


def is_packed(folder: Path) -> bool:
    cfg = folder / "config.json"
    if not cfg.exists():
        return False
    return json.loads(cfg.read_text()).get("quantization_config", {}).get("quant_method") == QUANT_METHOD


def load_packed(folder: str | Path, dtype: torch.dtype | None = None):
    """(model on CPU with Sparse24Linear layers, tokenizer, module names) from a packed folder."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    config = AutoConfig.from_pretrained(folder)
    qc = config.quantization_config
    del config.quantization_config
    if qc.get("version") != 1:
        raise UserError(f"{folder}: {QUANT_METHOD} version {qc.get('version')} is not supported; re-pack it")
    state = {}
    for f in weight_files(folder):
        try:
            with safe_open(f, framework="pt") as fh:
                state.update({k: fh.get_tensor(k) for k in fh.keys()})
        except (SafetensorError, OSError) as e:
            raise UserError(f"checkpoint file {f} is damaged or truncated ({e}); re-pack it") from None
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or config.dtype)
    names = qc["bf16_modules"] + qc["int4_modules"]
    for name in names:
        lin = model.get_submodule(name)
        kw = {b: state.pop(f"{name}.{b}") for b in BUFFERS if f"{name}.{b}" in state}
        n, k = lin.out_features, lin.in_features
        expect = {"meta": (n, k // 32), "values": (n, k // 2), "qweight": (n, k // 16), "scales": (n, k // 128)}
        for b, shape in expect.items():
            if b in kw and tuple(kw[b].shape) != shape:
                raise UserError(f"{folder}: {name}.{b} has shape {tuple(kw[b].shape)}, expected {shape}")
        if "meta" not in kw or (("values" in kw) == ("qweight" in kw and "scales" in kw)):
            raise UserError(f"{folder}: {name} lacks its 2:4 tensors (meta + values, or meta + qweight + scales)")
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, Sparse24Linear(k, n, **kw))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
        missing = [m for m in missing if not m.startswith("lm_head.")]
    missing = [m for m in missing if m.rpartition(".")[0] not in names]
    if missing or unexpected:
        raise UserError(f"{folder} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if dtype is not None:
        model.to(dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder) if (folder / "tokenizer_config.json").exists() else None
    return model.eval(), tokenizer, names
