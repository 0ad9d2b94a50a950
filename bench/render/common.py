"""What every benchmark script shares: its arguments, the Llama-2-7B-shaped model, run metadata."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def common_args(batch_size: int):
    """The arguments every SmolLM2/7B-shape benchmark takes."""
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--part", choices=["smollm2", "llama7b", "all"], default="all")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--eval-seqlen", type=int, default=2048)
    p.add_argument("--eval-max-windows", type=int)
    return p


def llama2_7b_shaped(layers: int, device):
    """A Llama-2-7B-shaped model (4096 / 11008, 32 heads, 32000 vocab) with `layers` decoder layers, random
    weights from seed 0, bf16, on `device` — speed benchmarks need the shapes, not trained weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    with torch.device(device):
        return LlamaForCausalLM(config).to(torch.bfloat16)


def run_meta() -> dict:
    """Date, command and machine of a benchmark run, stored beside its figures."""
    import datetime
    import os
    import platform
    import shlex
    import sys

    from compress.cpu_numerics import in_effect
    from compress.environment import environment

    gpu = environment()["cuda_device"] or "no GPU"
    return {
        "date": datetime.date.today().isoformat(),
        "command": shlex.join(["python", *sys.argv]),
        "machine": f"{gpu}, {os.cpu_count()} CPU cores, {platform.machine()}",
        "cpu_numerics": in_effect(),  # pinned (bench/numerics.py) or native, and the instruction set ATen uses
    }
