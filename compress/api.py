"""`compress.load`: the one obvious way for a user to load what this package writes, as a transformers model.

    import compress
    model = compress.load("out/smollm2-135m-wanda-2of4")                      # plain nn.Linear, exact weights
    model = compress.load("you/smollm2-2of4", device="cuda", runtime=True)   # 2:4 layers on our kernels

Any folder, Hub id, alias or .gguf file the pipeline reads goes through compress/loading.py (format from
config.json; sparse-24-bitmask decoded bit-exactly whoever wrote it; incomplete, mis-shaped or non-finite loads
refused with one line). `runtime=True` computes on the compressed form: packed folders keep their Sparse24Linear
layers, sparse-24-bitmask folders have every 2:4 Linear converted on load (compress/runtime/model.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from compress.errors import UserError


def load(
    model: str | Path,
    *,
    device: str | torch.device = "cpu",
    runtime: bool = False,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """A transformers PreTrainedModel in eval mode on `device` (cpu | cuda | cuda:N | auto). dtype None keeps the
    stored dtype. Tokenizer: `transformers.AutoTokenizer.from_pretrained(model)` on the same name."""
    from compress import loading
    from compress.checkpoint_format import PACKED_24
    from compress.devices import resolve_device
    from compress.runtime.model import prepare, sparsify

    target = device if isinstance(device, torch.device) else resolve_device(str(device))
    loaded = loading.load(model, dtype, runtime=runtime)
    if runtime and loaded.format != PACKED_24 and not sparsify(loaded.model):
        raise UserError(
            f"{model} holds no 2:4 weights, so runtime=True has nothing to compute on; "
            "load it with runtime=False or pass a 2:4 checkpoint"
        )
    loaded.model.to(target)
    if runtime and target.type == "cuda":
        prepare(loaded.model)
    return loaded.model
