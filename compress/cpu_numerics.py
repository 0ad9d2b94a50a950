"""Pinned CPU numerics, so that a checkpoint made on the CPU does not depend on which x86 machine made it.

On the CPU two libraries pick their kernels by instruction set: MKL (matmuls) and ATen's own vectorised
kernels (norms, softmax, reductions). Kernels for AVX2 and AVX-512 sum in different orders, the last bits of
the hidden states differ, and the mask choices at near-ties flip and cascade through the layers: measured on
SmolLM2 (Wanda 2:4, 8 x 512 calibration), an AVX2 machine and an AVX-512 machine disagree on 1.0% of mask
entries from layer 1 on, and a `make compress` gave wiki 238.7 on one and 243.5 on the other.
Pinning both to their AVX2 code paths (MKL's conditional numerical reproducibility, `MKL_CBWR`; ATen's
`ATEN_CPU_CAPABILITY`) made the AVX-512 machine reproduce the AVX2 machine's masks exactly (0 of 106M entries
differ). The variables must be set before torch loads, so the commands (`python -m compress`, `llm-compress`)
call `pin()` first, from compress/__init__.py (`invoked_as_command`); a value
the user already set is kept, and `LLM_COMPRESS_CPU_NUMERICS=native` turns the pinning off (faster on
AVX-512, machine-dependent results). CUDA kernels are not affected. bench/cpu_numerics.py measures it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PINNED = {"MKL_CBWR": "AVX2,STRICT", "ATEN_CPU_CAPABILITY": "avx2"}
SWITCH = "LLM_COMPRESS_CPU_NUMERICS"


def pin(environ=os.environ) -> dict[str, str]:
    """Set the pinning variables that are unset (unless SWITCH=native); returns the values now in effect."""
    if environ.get(SWITCH, "pinned") != "native":
        for key, value in PINNED.items():
            environ.setdefault(key, value)
    return {key: environ.get(key, "") for key in (*PINNED, SWITCH)}


def invoked_as_command(orig_argv: list[str] | None = None) -> bool:
    """Whether this process is `python -m compress ...` or the `llm-compress` console script (not a library
    import, whose process the package must not change)."""
    argv = list(sys.orig_argv if orig_argv is None else orig_argv)
    if any(a == "-mcompress" for a in argv) or any(
        a == "-m" and b == "compress" for a, b in zip(argv, argv[1:], strict=False)
    ):
        return True
    return any(Path(a).name == "llm-compress" for a in argv[:2])  # [python, script] when started by its shebang


def in_effect() -> dict[str, str]:
    """For the run report: the variables and the instruction set ATen actually uses."""
    import torch

    return {**{k: os.environ.get(k, "") for k in (*PINNED, SWITCH)}, "aten": torch.backends.cpu.get_cpu_capability()}
