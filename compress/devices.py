"""`--device` names: auto | cpu | cuda | cuda:N, checked against the CUDA devices this machine has."""

from __future__ import annotations

import re

import torch

from compress.errors import UserError

ACCEPTED = "auto, cpu, cuda, cuda:N"


def cuda_device_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def describe_cuda(count: int) -> str:
    """'this machine has 2 CUDA devices (cuda:0 to cuda:1)', for the error messages."""
    if count == 0:
        return "this machine has no CUDA device"
    if count == 1:
        return "this machine has 1 CUDA device (cuda:0)"
    return f"this machine has {count} CUDA devices (cuda:0 to cuda:{count - 1})"


def resolve_device(name: str) -> torch.device:
    """The torch device for a `--device` value (auto: the first CUDA device when there is one, else the CPU)."""
    text = name.strip().lower()
    count = cuda_device_count()
    if text == "auto":
        return torch.device("cuda" if count else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise UserError(f"unknown device {name!r}; use one of {ACCEPTED} ({describe_cuda(count)})")
    if count == 0:
        raise UserError(f"device {name!r} asked for, but {describe_cuda(count)}; use --device cpu (or auto)")
    if match[1] is not None and int(match[1]) >= count:
        raise UserError(
            f"device {name!r} asked for, but {describe_cuda(count)}; use cuda:N with N < {count}, cuda, auto or cpu"
        )
    return torch.device(text)
