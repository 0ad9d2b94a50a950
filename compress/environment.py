"""What a run writes about where it ran: versions, machine, git commit, command line, time."""

from __future__ import annotations

import datetime
import os
import platform
import resource
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

from compress.cpu_numerics import in_effect

PACKAGES = ("torch", "transformers", "accelerate", "safetensors", "compressed-tensors", "numpy", "datasets", "gguf")


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True)
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def environment() -> dict:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": versions,
        "git_commit": _git_commit(),
        "cpu_numerics": in_effect(),
    }


def peak_memory(device: torch.device) -> dict:
    """Peak resident memory of this process and, on CUDA, peak memory allocated by torch (GiB)."""
    out = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}
    if device.type == "cuda":
        out["peak_gpu_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 1024**3
    return out
