"""Experiment for issue #5's prefill goal: cuSPARSELt operand layouts and split-K at prefill sizes.

Times, per shape and M, cuBLAS (F.linear) against cuSPARSELt plans in three operand layouts, each re-planned
after cusparseLtMatmulSearch either with the algorithm id alone (what the production shim did) or with the
split-K settings the search chose as well (bench/csrc/cslt_layouts.cpp says which layout is which). Every
variant's output is checked against the dense matmul of the same 2:4 weights before it is timed.

    python bench/cslt_layouts.py [--ms 2048,8192] [--json bench/logs/cslt_layouts.json]   (then BENCHMARKS.md)
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.render import run_meta, save  # noqa: E402
from compress.runtime.cusparselt import build_with_cusparselt  # noqa: E402
from compress.runtime.timing import graph_time_us  # noqa: E402
from prune.config import NM  # noqa: E402
from prune.magnitude import magnitude_mask  # noqa: E402

SRC = Path(__file__).with_name("csrc") / "cslt_layouts.cpp"
SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (12288, 4096), (22016, 4096)]


def load():
    so = build_with_cusparselt(SRC, "the layout experiment")
    so.lay_error.restype = ctypes.c_char_p
    return so


def check(so, rc, what):
    if rc:
        raise RuntimeError(f"{what}: {so.lay_error().decode()}")


def variant(so, W, x, layout: int, keep_split: int) -> dict:
    n, k = W.shape
    m = x.shape[0]
    size, buf = ctypes.c_size_t(), ctypes.c_size_t()
    check(so, so.lay_setup(n, k, m, layout, ctypes.byref(size), ctypes.byref(buf)), "setup")
    stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
    packed = torch.empty(size.value, dtype=torch.uint8, device="cuda")
    scratch = torch.empty(max(buf.value, 1), dtype=torch.uint8, device="cuda")
    check(so, so.lay_compress(ctypes.c_void_p(W.data_ptr()), ctypes.c_void_p(packed.data_ptr()),
                              ctypes.c_void_p(scratch.data_ptr()), stream), "compress")  # fmt: skip
    y = torch.empty(m, n, dtype=torch.bfloat16, device="cuda")
    work = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    ws, alg, split, mode, bufs = (ctypes.c_size_t(), ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_int())
    p = [ctypes.c_void_p(t.data_ptr()) for t in (packed, x, y, work)]
    check(so, so.lay_search(layout, keep_split, p[0], p[1], p[2], p[3], stream, ctypes.byref(ws), ctypes.byref(alg),
                            ctypes.byref(split), ctypes.byref(mode), ctypes.byref(bufs)), "search")  # fmt: skip
    assert ws.value <= work.numel(), ws.value

    def run():
        s = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        check(so, so.lay_matmul(layout, p[0], p[1], p[2], p[3], s), "matmul")

    run()
    torch.cuda.synchronize()
    ref = F.linear(x.float(), W.float())
    err = ((y.float() - ref).norm() / ref.norm()).item()
    if err > 1e-2:
        raise RuntimeError(f"layout {layout}: relative error {err:.3g}")
    us = graph_time_us(run, calls=20, replays=7)
    return {"us": us, "alg": alg.value, "split_k": split.value, "split_mode": mode.value, "rel_err": err}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ms", default="2048,8192")
    ap.add_argument("--json", type=Path, default=Path("bench/logs/cslt_layouts.json"))
    args = ap.parse_args()
    so = load()
    g = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for n, k in SHAPES:
        W = torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=g)
        W = (W * magnitude_mask(W, NM(2, 4))).contiguous()
        for m in [int(v) for v in args.ms.split(",")]:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=g)
            dense = graph_time_us(lambda x=x, W=W: F.linear(x, W), calls=20, replays=7)
            row = {"shape": f"{n}x{k}", "m": m, "dense_us": dense}
            for layout in (0, 1, 2):
                for keep in (0, 1):
                    try:
                        r = variant(so, W, x, layout, keep)
                        r["speedup"] = dense / r["us"]
                    except RuntimeError as e:
                        r = {"error": str(e)[:200]}
                    row[f"L{layout}{'s' if keep else ''}"] = r
            rows.append(row)
            cells = "  ".join(
                f"{key} {v['us']:.1f}us {v['speedup']:.2f}x a{v['alg']} k{v['split_k']}/{v['split_mode']}"
                if "us" in v else f"{key} ERR {v['error'][:60]}"
                for key, v in row.items() if key.startswith("L")
            )  # fmt: skip
            print(f"{n}x{k} M={m}: dense {dense:.1f}us  {cells}", flush=True)
    save(args.json, {"device": torch.cuda.get_device_name(), "run": run_meta(), "rows": rows})


if __name__ == "__main__":
    main()
