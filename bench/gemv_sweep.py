"""Decode-kernel sweep (GPU only): the CUDA 2:4 GEMV (compress/runtime/cuda_decode.py) against cuBLAS and the
Triton GEMV at M = 1..8 on the Llama-2-7B shapes, for every launch shape; correctness first (relative error
vs an fp32 matmul of the same masked, dequantised weights). Weights rotate over copies > 3x L2.

    python bench/gemv_sweep.py [--ms 1,2,4,8] [--json bench/logs/gemv_sweep.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.runtime import SHAPES, byte_bounds_us, copy_bandwidth, graph_rotated_us, rel_err, rotation_copies  # noqa: E402
from compress.runtime import cuda_decode, format24, triton_decode  # noqa: E402
from prune.config import NM  # noqa: E402
from prune.magnitude import magnitude_mask  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ms", default="1,2,4,8")
    p.add_argument("--json", type=Path, default=Path("bench/logs/gemv_sweep.json"))
    args = p.parse_args()
    ms = [int(m) for m in args.ms.split(",")]
    bw = copy_bandwidth()
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s", flush=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "bw": bw, "rows": []}
    for n, k in SHAPES:
        copies = rotation_copies(n, k)
        items = []
        for _ in range(copies):
            W = torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=g)
            keep = magnitude_mask(W, NM(2, 4))
            values, meta = format24.pack_24(W * keep, keep)
            qw, sc = format24.quantize_int4(values)
            items.append({"W": W * keep, "values": values, "meta": meta, "qweight": qw, "scales": sc})
        W4 = format24.unpack_24(format24.dequantize_int4(items[0]["qweight"], items[0]["scales"]), items[0]["meta"])
        for m in ms:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=g)
            ref = x.float() @ items[0]["W"].float().t()
            ref4 = x.float() @ W4.float().t()
            row = {"shape": f"{n}x{k}", "m": m}
            row["dense_us"] = graph_rotated_us(lambda it, x: F.linear(x, it["W"]), items, x)
            if m == 1:
                row["triton_us"] = graph_rotated_us(
                    lambda it, x: triton_decode.sparse24_matmul(x, it["values"], it["meta"]), items, x
                )
                row["triton_int4_us"] = graph_rotated_us(
                    lambda it, x: triton_decode.sparse24_int4_matmul(x, it["qweight"], it["scales"], it["meta"]),
                    items,
                    x,
                )
            for int4 in (False, True):
                tag = "int4" if int4 else "bf16"
                best = None
                for launch in cuda_decode.LAUNCHES:

                    def call(it, x, int4=int4, launch=launch):
                        w, s = (it["qweight"], it["scales"]) if int4 else (it["values"], None)
                        return cuda_decode.gemv(x, w, s, it["meta"], int4, launch)

                    y = call(items[0], x)
                    err = rel_err(y, ref4 if int4 else ref)
                    if not err < 1e-2:
                        print(f"CORRECTNESS FAILED {n}x{k} M={m} {tag} launch {launch}: rel err {err}", flush=True)
                        row[f"{tag}_fail_{launch}"] = err
                        continue
                    us = graph_rotated_us(call, items, x)
                    row[f"{tag}_{'x'.join(map(str, launch))}_us"] = us
                    row[f"{tag}_err"] = err
                    if best is None or us < best[1]:
                        best = (launch, us)
                if best:
                    row[f"{tag}_best"] = best
            bounds = byte_bounds_us(n, k, m, bw)
            row["bound24_us"], row["bound4_us"], row["bound_dense_us"] = bounds["24"], bounds["int4"], bounds["dense"]
            out["rows"].append(row)
            print(
                f"{n}x{k} M={m}: dense {row['dense_us']:.1f} (bound {row['bound_dense_us']:.1f}) | "
                f"bf16 best {row.get('bf16_best')} bound {row['bound24_us']:.1f} | "
                f"int4 best {row.get('int4_best')} bound {row['bound4_us']:.1f} | "
                f"triton {row.get('triton_us', float('nan')):.1f} / {row.get('triton_int4_us', float('nan')):.1f}",
                flush=True,
            )
            print("   " + " ".join(f"{kk}={v:.1f}" for kk, v in row.items() if kk.endswith("_us")), flush=True)
        items.clear()
        torch.cuda.empty_cache()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
