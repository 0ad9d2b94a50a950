"""Per-device scratch buffers that only grow: the int4 prefill's compressed form (linear.scratch) and the tiled
kernel's split-K workspace (cuda_mma.reserve). Grown at prepare time, so a call inside a CUDA graph capture finds
one big enough; used in stream order (two streams on one GPU at once are not supported)."""

from __future__ import annotations

import torch


def grown(store: dict[int, torch.Tensor], device: torch.device, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """store[device.index], replaced by a new uninitialised buffer of `numel` when it is missing or smaller."""
    have = store.get(device.index)
    if have is None or have.numel() < numel:
        have = store[device.index] = torch.empty(numel, dtype=dtype, device=device)
    return have
