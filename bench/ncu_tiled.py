"""Nsight Compute input for issue 16's M = 16-64 gap: one 4096x4096 bf16 2:4 layer, the small-M kernel and the
tiled variant at M = 64 (and 32), each launched a few times, so `ncu --kernel-name regex:mma24` can read their
speed-of-light, occupancy and warp-stall sections.

    ncu --kernel-name regex:mma24 --launch-count 12 --section SpeedOfLight --section Occupancy \
        --section WarpStateStats --section LaunchStats python bench/ncu_tiled.py

(2026-12-02, H200, the build before the 128-register cap: bench/logs/runtime/ncu_tiled_m64_m32.txt)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compress.runtime.linear import Sparse24Linear  # noqa: E402
from prune.config import NM  # noqa: E402
from prune.magnitude import magnitude_mask  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(4096, 4096, bias=False).cuda().to(torch.bfloat16)
    keep = magnitude_mask(lin.weight.data, NM(2, 4))
    sp = Sparse24Linear.from_linear(lin, keep)
    sp.prepare_gpu()
    for m, shapes in ((64, [(8, 1), ("tiled", 8, 1, 4)]), (32, [(8, 2), ("tiled", 4, 1, 4)])):
        x = torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16)
        for shape in shapes:
            for _ in range(3):
                sp.run_path(x, "mma", shape)
    torch.cuda.synchronize()
    print("ran")


if __name__ == "__main__":
    main()
