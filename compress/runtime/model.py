"""Turn a model's 2:4 Linear layers into `Sparse24Linear` (compute on the compressed form)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from compress.checkpoint_format import PACKED_24, SPARSE_24, folder_format
from compress.errors import UserError
from compress.export import keep_mask_24, weight_files
from compress.runtime.format24 import GROUP
from compress.runtime.linear import Sparse24Linear


def sparsify(model: nn.Module, names: set[str] | None = None, int4: bool = False) -> list[str]:
    """Replace Linear layers in `names` (default: every Linear whose weight is 2:4) in place; returns the names.

    int4: layers whose in-features are not a multiple of the group (128) stay bf16 2:4."""
    done = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear) or (names is not None and name not in names):
            continue
        if module.in_features % 32:
            continue  # the metadata packs 16 positions per word
        try:
            keep = keep_mask_24(module.weight.data)
        except ValueError:
            if names is not None:
                raise UserError(f"{name} is listed as 2:4 but its weight is not 2:4 sparse") from None
            continue
        q = int4 and module.in_features % GROUP == 0
        new = Sparse24Linear.from_linear(module, keep, int4=q)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
        done.append(name)
    return done


def prepare(model: nn.Module) -> None:
    """On CUDA: build every Sparse24Linear's cuSPARSELt form (prefill path), its fragment-ordered copy (the
    tensor-core decode kernel) and the CUDA decode kernels."""
    for m in model.modules():
        if isinstance(m, Sparse24Linear) and m.meta.is_cuda:
            m.prepare_gpu()


def release_unused(model: nn.Module) -> int:
    """After `choose_paths`: free every Sparse24Linear's weight forms no call can reach (`release_unused` of
    each layer); returns the bytes freed."""
    return sum(m.release_unused() for m in model.modules() if isinstance(m, Sparse24Linear))


def compile_forward(model: nn.Module) -> nn.Module:
    """torch.compile the model's forward (static shapes: one graph per batch and length, e.g. prefill, decode).

    Element-wise work (norms, rotary, SiLU, residuals) is fused by Inductor; Sparse24Linear layers appear as the
    opaque `llm_compress::sparse24_mm` op and keep our kernels. Same call for a dense model, so the two compare
    like for like."""
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 16)
    model.forward = torch.compile(model.forward, dynamic=False)
    return model


def densify(model: nn.Module) -> list[str]:
    """The inverse of `sparsify`, in place: every Sparse24Linear becomes an nn.Linear holding the dense weight it
    computes with (bf16 kept values exactly; int4: the dequantised weight). Returns the names."""
    done = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, Sparse24Linear):
            continue
        weight = module.dense_weight()
        lin = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, device="meta")
        lin.weight = nn.Parameter(weight)
        if module.bias is not None:
            lin.bias = nn.Parameter(module.bias)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, lin)
        done.append(name)
    return done


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
    from compress.loading import load

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
