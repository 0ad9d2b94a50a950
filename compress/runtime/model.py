"""Turn a model's 2:4 Linear layers into `Sparse24Linear` (compute on the compressed form)."""

from __future__ import annotations

import torch
from torch import nn

from compress.errors import UserError
from compress.export import keep_mask_24
from compress.runtime.format24 import GROUP
from compress.runtime.linear import Sparse24Linear


def sparsify(
    model: nn.Module, names: set[str] | None = None, int4: bool = False, scales: dict[str, torch.Tensor] | None = None
) -> list[str]:
    """Replace Linear layers in `names` (default: every Linear whose weight is 2:4) in place; returns the names.

    int4: layers whose in-features are not a multiple of the group (128) stay bf16 2:4. `scales` (module name ->
    (N, K/128)): the weights already hold a quantization stage's codes on those scales; int4 then packs them
    exactly (a ValueError names a layer whose values are not on the grid) and layers without scales (not
    quantized in the checkpoint) stay bf16 rather than being rounded a second way."""
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
        q = int4 and module.in_features % GROUP == 0 and (scales is None or name in scales)
        try:
            new = Sparse24Linear.from_linear(module, keep, int4=q, scales=None if scales is None else scales.get(name))
        except ValueError as e:
            raise UserError(f"{name}: {e}") from None
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
        done.append(name)
    return done


def prepare(model: nn.Module) -> None:
    """On CUDA: turn every Sparse24Linear into its one resident form (cuSPARSELt's compressed form; int4: nibbles,
    scales and that form's metadata) and build the tensor-core kernel. Layer by layer, so the transient peak is
    one layer's conversion."""
    for m in model.modules():
        if isinstance(m, Sparse24Linear) and m.device.type == "cuda":
            m.prepare_gpu()


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
