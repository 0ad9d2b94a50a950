"""What cuSPARSELt's compressed form holds, byte by byte (issue 16, one resident weight form): the buffer that
cusparseLtSpMMACompress2 writes for our shim's descriptor (bf16, row-major (N, K), 2:4) is probed with weights
whose every kept value names its row or its kept index, and with random masks whose positions name the metadata
bits. The dumps are analysed offline (compress.runtime.cslt_layout is derived from them and checked against the
library bit for bit on the 7B shapes with `--check`).

    python bench/cslt_probe.py --out DIR [--masks 48] [--check]

Also records: the compressed size of the 7B shapes against 1.125 * N * K, whether the shim plans odd M unpadded
(and what a first call at a new M costs against a cached one), and torch's CUTLASS semi-structured GEMM against
cuBLAS and the shim at prefill M (can an sm80 `mma.sp` GEMM beat cuBLAS on this GPU?).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compress.runtime import format24  # noqa: E402
from compress.runtime.cslt_layout import random_keep  # noqa: E402
from compress.runtime.cusparselt import backend  # noqa: E402
from compress.runtime.timing import graph_time_us  # noqa: E402

SMALL = [(128, 256), (256, 256), (64, 512), (384, 192), (32, 128), (128, 1024)]
BIG = [(4096, 4096), (11008, 4096), (4096, 11008), (12288, 4096), (22016, 4096)]


def coded(keep: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """bf16 weight whose kept entries hold the bit patterns 0x0080 + code (finite normals), zeros elsewhere."""
    n, k = keep.shape
    W = torch.zeros(n, k, dtype=torch.int16)
    W[keep] = (0x0080 + code.reshape(-1)).to(torch.int16)
    return W.view(torch.bfloat16)


def probe_small(out: Path, masks: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    report = {}
    for n, k in SMALL:
        keep = random_keep(n, k, gen)
        rows = torch.arange(n)[:, None].expand(n, k // 2)
        cols = torch.arange(k // 2)[None, :].expand(n, k // 2)
        tensors = {"keep_codes": keep.to(torch.uint8)}
        for name, code in (("by_row", rows), ("by_index", cols)):
            tensors[name] = backend().compress(coded(keep, code).cuda()).cpu()
        for t in range(masks):
            km = random_keep(n, k, gen)
            W = torch.where(km, torch.ones(()), torch.zeros(())).to(torch.bfloat16)
            tensors[f"keep{t}"] = km.to(torch.uint8)
            tensors[f"buf{t}"] = backend().compress(W.cuda()).cpu()
        save_file({a: b.contiguous() for a, b in tensors.items()}, str(out / f"cslt_probe_{n}x{k}.safetensors"))
        report[f"{n}x{k}"] = {"bytes": tensors["by_row"].numel(), "nk": n * k}
        print(f"probe {n}x{k}: {tensors['by_row'].numel()} bytes (1.125*NK = {1.125 * n * k:.0f})", flush=True)
    return report


def locate_values(n: int, k: int, keep: torch.Tensor) -> dict:
    """Where cuSPARSELt puts each kept value: the buffer coded by row and by kept index, decoded per slot."""
    rows = torch.arange(n, device="cuda")[:, None].expand(n, k // 2)
    cols = torch.arange(k // 2, device="cuda")[None, :].expand(n, k // 2)
    got = []
    for code in (rows, cols):
        W = torch.zeros(n, k, dtype=torch.int16, device="cuda")
        W[keep] = (0x0080 + code.reshape(-1)).to(torch.int16)
        got.append(backend().compress(W.view(torch.bfloat16))[: n * k].view(torch.int16).long() - 0x80)
    r, c = got
    slot = torch.arange(n * k // 2, device="cuda")
    out = {"valid": bool(((r >= 0) & (r < n) & (c >= 0) & (c < k // 2)).all())}
    bad = (r * (k // 2) + c != slot).nonzero()[:, 0]
    out["first_bad_slot"] = bad[:1].tolist()
    if len(bad):
        s0 = max(int(bad[0]) - 4, 0)
        out["decoded_from_first_bad"] = list(zip(r[s0 : s0 + 40].tolist(), c[s0 : s0 + 40].tolist(), strict=True))
        out["bad_count"] = len(bad)
        out["last_bad_slot"] = int(bad[-1])
        # the (row, index) of every 4096th slot: enough to see a tiling
        out["stride_samples"] = list(zip(r[::4096][:256].tolist(), c[::4096][:256].tolist(), strict=True))
    return out


def big_shapes(check: bool) -> dict:
    gen = torch.Generator().manual_seed(1)
    report = {}
    for n, k in BIG:
        keep = random_keep(n, k, gen).cuda()
        # kept values away from 0 and +0.0 elsewhere: with `randn * keep` (-0.0 where a negative value meets a False
        # mask) a few groups per matrix came back with other positions — the library then sees 3 nonzero bit
        # patterns in them (the likely cause; the coded probes, with +0.0 only, matched bit for bit)
        V = ((torch.rand(n, k, device="cuda") + 0.5) * torch.randn(n, k, device="cuda").sign()).bfloat16()
        W = torch.where(keep, V, torch.zeros((), dtype=V.dtype, device="cuda"))
        buf = backend().compress(W)
        values, meta = format24.pack_24(W, keep)
        head = buf[: n * k].view(torch.bfloat16).reshape(n, k // 2)
        same = head == values
        entry = {"bytes": buf.numel(), "ratio_to_nk": buf.numel() / (n * k), "values_rowmajor": bool(same.all())}
        if not same.all():
            entry["values_mismatch_frac"] = 1 - same.float().mean().item()
            entry["values_mismatch_rows"] = same.all(1).logical_not().nonzero()[:8, 0].tolist()
            entry["values_mismatch_first"] = same.logical_not().nonzero()[:8].tolist()
            entry["values_layout"] = locate_values(n, k, keep)
        if check:
            from compress.runtime.cslt_layout import meta_view, to_cslt, to_meta

            entry["derived_equal"] = bool(torch.equal(to_cslt(values, meta), buf))
            entry["derived_meta_equal"] = bool(torch.equal(to_meta(meta), meta_view(buf, n, k)))
            entry["meta_at_head_equal"] = bool(torch.equal(to_meta(meta), buf[: to_meta(meta).numel()]))
        report[f"{n}x{k}"] = entry
        print(f"big {n}x{k}: {entry}", flush=True)
    return report


def odd_m() -> dict:
    """Can the shim plan M not a multiple of 16, unpadded? And the first call's cost (plan + search)."""
    be = backend()
    n, k = 4096, 4096
    gen = torch.Generator().manual_seed(2)
    keep = random_keep(n, k, gen).cuda()
    W = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * keep
    buf = be.compress(W)
    report = {}
    for m in (2047, 1000, 100, 17, 2048):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        entry = {}
        try:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            y = be._matmul(buf, x, n)
            torch.cuda.synchronize()
            entry["first_ms"] = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            be._matmul(buf, x, n)
            torch.cuda.synchronize()
            entry["cached_ms"] = (time.perf_counter() - t0) * 1e3
            ref = x.float() @ W.float().t()
            entry["rel_err"] = float((y.float() - ref).norm() / ref.norm())
        except Exception as e:  # noqa: BLE001 - recorded
            entry["error"] = f"{type(e).__name__}: {e}"
            torch.cuda.synchronize()
        report[m] = entry
        print(f"odd m {m}: {entry}", flush=True)
    return report


def cutlass_vs_cublas() -> dict:
    """torch's CUTLASS semi-structured F.linear (sm80 mma.sp kernels) against cuBLAS and our shim."""
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    SparseSemiStructuredTensor._FORCE_CUTLASS = True
    be = backend()
    gen = torch.Generator().manual_seed(3)
    report = {}
    for n, k in [(4096, 11008), (11008, 4096), (4096, 4096)]:
        keep = random_keep(n, k, gen).cuda()
        W = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * keep
        buf = be.compress(W)
        for m in (64, 512, 2048):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            entry = {"cublas_us": graph_time_us(lambda x=x, W=W: torch.nn.functional.linear(x, W))}
            entry["cslt_us"] = graph_time_us(lambda x=x, buf=buf, n=n: be.matmul(buf, x, n))
            try:
                S = to_sparse_semi_structured(W)
                entry["cutlass_us"] = graph_time_us(lambda x=x, S=S: torch.nn.functional.linear(x, S))
            except Exception as e:  # noqa: BLE001 - recorded
                entry["cutlass_error"] = f"{type(e).__name__}: {e}"[:300]
            report[f"{n}x{k}_m{m}"] = entry
            print(f"gemm {n}x{k} m={m}: {entry}", flush=True)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--masks", type=int, default=48)
    p.add_argument("--check", action="store_true", help="check compress.runtime.cslt_layout against the library")
    p.add_argument("--only", default="small,big,odd,cutlass")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    parts = set(a.only.split(","))
    report = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    for name, fn in (("small", lambda: probe_small(a.out, a.masks)), ("big", lambda: big_shapes(a.check)),
                     ("odd", odd_m), ("cutlass", cutlass_vs_cublas)):  # fmt: skip
        if name in parts:
            try:
                report[name] = fn()
            except Exception as e:  # noqa: BLE001 - one part failing keeps the others
                report[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
                print(f"{name} failed: {e}", flush=True)
    (a.out / "cslt_probe.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
