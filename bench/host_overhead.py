"""Per-call host time of a Sparse24Linear against F.linear (issue 16: eager `generate` is slower than dense because
of the Python around our kernels). For each path at one shape and M:

- `eager_us`: wall time per call over back-to-back calls with no sync inside (one at the end), i.e. what an eager
  decode step pays per Linear when the host, not the GPU, is the bottleneck;
- `gpu_us`: the same call replayed from a CUDA graph (GPU time alone);
- `profile`: cProfile of the eager loop, the functions with the most own time per call (µs), which names the
  Python to remove.

    python bench/host_overhead.py [--shape 4096x11008] [--m 1] [--calls 2000] [--json bench/logs/host_overhead.json]

On a machine without CUDA it runs the CPU reference path and F.linear only (a smoke run of the script).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.render import run_meta  # noqa: E402
from compress.runtime.linear import Sparse24Linear  # noqa: E402
from prune.config import NM  # noqa: E402
from prune.magnitude import magnitude_mask  # noqa: E402


def eager_us(fn, calls: int, cuda: bool) -> float:
    fn()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / calls * 1e6


def profile(fn, calls: int, top: int = 12) -> dict:
    """{function: own µs per call} of the `top` functions with the most own time over `calls` calls."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    stats = pstats.Stats(prof).stats
    rows = sorted(((v[2], f"{Path(k[0]).name}:{k[1]} {k[2]}") for k, v in stats.items()), reverse=True)[:top]
    return {name: round(t / calls * 1e6, 2) for t, name in rows}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="4096x11008", help="N x K (out x in)")
    p.add_argument("--m", type=int, default=1)
    p.add_argument("--int4", action="store_true")
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--json", type=Path, default=Path("bench/logs/host_overhead.json"))
    args = p.parse_args()
    n, k = map(int, args.shape.split("x"))
    cuda = torch.cuda.is_available()
    dev, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n, bias=False)
    keep = magnitude_mask(lin.weight.data, NM(2, 4))
    lin.weight.data *= keep
    layer = Sparse24Linear.from_linear(lin, keep, int4=args.int4).to(dev, dtype)
    if cuda:
        layer.prepare_gpu()
    w = lin.weight.data.to(dev, dtype)
    x = torch.randn(args.m, k, device=dev, dtype=dtype)
    calls = {"dense F.linear": lambda: F.linear(x, w)}
    paths = (("mma",) if layer.mma and args.m <= 64 else ()) + ("cusparselt",) if cuda else ()
    for path in paths:
        calls[f"ours {path} (run_path)"] = lambda p=path: layer.run_path(x, p)
    calls["ours forward (path choice + kernel)"] = lambda: layer(x)
    out: dict = {"shape": [n, k], "m": args.m, "int4": args.int4, "device": dev, "run": run_meta(), "calls": {}}
    ref = F.linear(x.float(), layer.dense_weight().float())
    for name, fn in calls.items():
        err = float((fn().float() - ref).norm() / ref.norm())  # every call computes the layer before it is timed
        row = {"rel_err": err, "eager_us": eager_us(fn, args.calls, cuda), "profile": profile(fn, args.calls // 4)}
        if cuda:
            from compress.runtime.timing import graph_time_us

            row["gpu_us"] = graph_time_us(fn)
        out["calls"][name] = row
        print(f"{name}: eager {row['eager_us']:.1f} µs" + (f", GPU {row['gpu_us']:.1f} µs" if cuda else "")
              + f", rel err {err:.1e}", flush=True)  # fmt: skip
        for fname, us in list(row["profile"].items())[:6]:
            print(f"    {us:7.2f} µs  {fname}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
