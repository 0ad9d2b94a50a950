"""Greedy generation from an exported 2:4 checkpoint on the compressed weights (`python -m compress generate`)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from compress.errors import UserError


def generate(
    folder: str | Path,
    prompt: str,
    max_new_tokens: int = 32,
    device: torch.device | None = None,
    int4: bool = False,
    log=print,
    fast: bool = False,
    compile: bool = False,
) -> dict:
    """Load `folder` with Sparse24Linear layers on `device` and greedily continue `prompt`.

    On a GPU the layers run our kernels (the per-shape path search runs once first); elsewhere the pure-torch
    reference path, which computes exactly what the dense-decompressed model computes. `fast`: the runtime's
    own loop (static KV cache, each step replayed from a CUDA graph on a GPU — what `make bench-runtime` times)
    instead of transformers' `generate`; `compile` (implies `fast`): torch.compile the forward first."""
    from compress.runtime.convert import load_runtime_model
    from compress.runtime.linear import Sparse24Linear, choose_paths

    device = device or torch.device("cpu")
    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, tokenizer, names = load_runtime_model(folder, device, dtype, int4=int4)
    if tokenizer is None:
        raise UserError(f"{folder} has no tokenizer files; export it with `python -m compress run`")
    if device.type == "cuda":
        choose_paths(model, ms=(1,))
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    t0 = time.perf_counter()
    if fast or compile:
        from compress.runtime.decoder import greedy

        new = greedy(model, ids, max_new_tokens, tokenizer.eos_token_id, compile=compile, log=log)[0]
    else:
        with torch.inference_mode():
            out = model.generate(
                ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
            )
        new = out[0, ids.shape[1] :]
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    n_int4 = sum(1 for m in model.modules() if isinstance(m, Sparse24Linear) and m.int4)
    log(f"{len(names)} Linear layers computing on 2:4 weights ({n_int4} with int4 values), device {device}")
    return {"text": tokenizer.decode(new, skip_special_tokens=True), "tokens": new.tolist(), "wall_s": wall}
