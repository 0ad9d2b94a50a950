"""2:4 runtime benchmark (issue #5), GPU only: per-GEMM table and end-to-end Llama-2-7B-shaped prefill/decode
for dense cuBLAS, stock torch 2:4 (`to_sparse_semi_structured`) and ours (bf16 and int4 2:4).

Every variant's output is checked against an fp32 matmul of the same masked (dequantised) weights before it is
timed. GEMM timings rotate over enough weight copies that no weight is re-read from L2. Writes
bench/runtime.json (after every section) and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.render import llama2_7b_shaped, run_meta, save  # noqa: E402
from compress.runtime.linear import DECODE_MAX_M, Sparse24Linear, choose_paths  # noqa: E402
from compress.runtime.model import compile_forward, prepare, sparsify  # noqa: E402
from compress.runtime.timing import event_time_us as bench_us  # noqa: E402
from compress.runtime.timing import graph_time_us  # noqa: E402
from prune.config import NM  # noqa: E402
from prune.magnitude import magnitude_mask  # noqa: E402

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]  # (out N, in K)
MS = [1, 16, 64, 512, 2048, 8192]
L2_BYTES = 60 * 2**20
DENSE_FLOPS = 790e12  # bf16 matrix rate measured on this machine kind (KINDS.md)
nan = float("nan")


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    y = y.float()
    if not torch.isfinite(y).all():
        return float("inf")
    return float((y - ref).norm() / ref.norm())


def dense_mm(w, x):
    return F.linear(x, w)


def module_mm(module, x):
    return module(x)


def rotated_us(fn, items: list, x: torch.Tensor) -> float:
    """Microseconds per call of fn(item, x), cycling over `items` (distinct weights, together > L2)."""
    return bench_us(lambda: [fn(it, x) for it in items]) / len(items)


def graph_rotated_us(fn, items: list, x: torch.Tensor) -> float:
    """GPU microseconds per call of fn(item, x) over `items`, replayed from a CUDA graph."""
    return graph_time_us(lambda: [fn(it, x) for it in items]) / len(items)


def rotation_copies(n: int, k: int) -> int:
    """Distinct (N, K) bf16 weights to cycle through so that one rotation is larger than 3x the L2 cache."""
    return max(2, int(3 * L2_BYTES // (2 * n * k)) + 1)


def byte_bounds_us(n: int, k: int, m: int, bw: float) -> dict:
    """Microseconds to move each format's bytes (weights + x + y) at copy bandwidth `bw`."""
    act = 2 * m * k + 2 * m * n
    return {
        "dense": (2 * n * k + act) / bw * 1e6,
        "24": (n * k * 1.125 + act) / bw * 1e6,  # bf16 values + 2-bit positions
        "int4": (n * k * (0.25 + 0.125 + 1 / 64) + act) / bw * 1e6,  # nibbles + positions + scales
    }


def copy_bandwidth() -> float:
    """Device-to-device copy, bytes read + written per second."""
    a = torch.empty(2 * 2**30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    us = bench_us(lambda: b.copy_(a), reps=20)
    return 2 * a.numel() / (us * 1e-6)


def gemm_table(results: dict, bw: float, out: Path, shapes=SHAPES, ms=MS, section: str = "gemm") -> None:
    from torch.sparse import to_sparse_semi_structured

    rows = results.setdefault(section, [])
    g = torch.Generator(device="cuda").manual_seed(0)
    for n, k in shapes:
        copies = rotation_copies(n, k)
        dense, stock, ours, ours4 = [], [], [], []
        for _ in range(copies):
            W = torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=g)
            keep = magnitude_mask(W, NM(2, 4))
            W = W * keep
            lin = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
            lin.weight.data = W
            dense.append(W)
            stock.append(to_sparse_semi_structured(W))
            sp = Sparse24Linear.from_linear(lin, keep)
            sp.prepare_gpu()
            ours.append(sp)
            sp4 = Sparse24Linear.from_linear(lin, keep, int4=True)
            sp4.prepare_gpu()
            ours4.append(sp4)
        W4 = ours4[0].dense_weight().float()
        small = [m for m in ms if m <= DECODE_MAX_M]
        report = choose_paths(torch.nn.ModuleList(ours + ours4), ms=small, per_key=copies)
        for m in ms:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=g)
            ref = x.float() @ dense[0].float().t()
            ref4 = x.float() @ W4.t()
            row = {"shape": f"{n}x{k}", "m": m}
            row["rel_err"] = rel_err(ours[0](x), ref)
            row["rel_err_int4"] = rel_err(ours4[0](x), ref4)
            row["rel_err_dense"] = rel_err(F.linear(x, dense[0]), ref)
            try:
                row["rel_err_stock"] = rel_err(F.linear(x, stock[0]), ref)
            except Exception as e:  # noqa: BLE001
                row["rel_err_stock"] = None
                row["stock_error"] = str(e).splitlines()[0][:160]
            errs = [row["rel_err"], row["rel_err_int4"], row["rel_err_dense"]]
            if m in small:  # every path either model may take at this M (those the search timed)
                row["mma_launch_us"] = report[(n, k, False, m)]["mma_launch"]  # the kernel's launch-shape search
                row["mma_launch_us_int4"] = report[(n, k, True, m)]["mma_launch"]
                for p in report[(n, k, False, m)]["us"]:
                    row[f"rel_err_{p}"] = rel_err(ours[0].run_path(x, p), ref)
                    row[f"rel_err_int4_{p}"] = rel_err(ours4[0].run_path(x, p), ref4)
                    errs += [row[f"rel_err_{p}"], row[f"rel_err_int4_{p}"]]
            if not all(e < 2e-2 for e in errs):
                print(f"CORRECTNESS FAILED {row}", flush=True)
                row["timed"] = False
                rows.append(row)
                continue
            # eager: what a plain PyTorch forward pays, host overhead included
            row["dense_us"] = rotated_us(dense_mm, dense, x)
            if row.get("rel_err_stock") is not None:
                row["stock_us"] = rotated_us(dense_mm, stock, x)
            row["ours_us"] = rotated_us(module_mm, ours, x)
            # GPU time: the same calls replayed from a CUDA graph (as in graph-captured decoding)
            row["dense_gpu_us"] = graph_rotated_us(dense_mm, dense, x)
            if row.get("rel_err_stock") is not None:
                row["stock_gpu_us"] = graph_rotated_us(dense_mm, stock, x)
            row["ours_gpu_us"] = graph_rotated_us(module_mm, ours, x)
            row["ours_path"] = ours[0].path(m)
            row["ours_int4_us"] = rotated_us(module_mm, ours4, x)
            row["ours_int4_gpu_us"] = graph_rotated_us(module_mm, ours4, x)
            row["ours_int4_path"] = ours4[0].path(m)
            if m in small:
                for int4 in (False, True):
                    for p, us in report[(n, k, int4, m)]["us"].items():
                        row[f"{p}{'_int4' if int4 else ''}_gpu_us"] = us
            row.update({f"bound_us_{f}_bytes": us for f, us in byte_bounds_us(n, k, m, bw).items()})
            row["flop_bound_us_dense"] = 2 * m * n * k / DENSE_FLOPS * 1e6
            rows.append(row)
            print(
                f"{n}x{k} M={m:5d} | eager dense {row['dense_us']:7.1f} stock {row.get('stock_us', nan):7.1f} "
                f"ours {row['ours_us']:7.1f} | gpu dense {row['dense_gpu_us']:7.1f} "
                f"stock {row.get('stock_gpu_us', nan):7.1f} ours {row['ours_gpu_us']:7.1f} ({row['ours_path']}) "
                f"int4 {row.get('ours_int4_gpu_us', nan):7.1f} ({row['ours_int4_path']}) "
                f"mma {row.get('mma_gpu_us', nan):7.1f} int4 mma {row.get('mma_int4_gpu_us', nan):7.1f} "
                f"cslt {row.get('cusparselt_gpu_us', nan):7.1f} | bound24 {row['bound_us_24_bytes']:5.1f} us",
                flush=True,
            )
        del dense, stock, ours, ours4
        torch.cuda.empty_cache()
        out.write_text(json.dumps(results, indent=2) + "\n")


def llama7b(layers: int):
    model = llama2_7b_shaped(layers, torch.device("cuda")).eval()
    for layer in model.model.layers:  # real 2:4 masks (magnitude) on every decoder Linear
        for m in layer.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.data *= magnitude_mask(m.weight.data, NM(2, 4))
    return model


def to_stock(model):
    from torch.sparse import to_sparse_semi_structured

    for layer in model.model.layers:
        for m in layer.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight = torch.nn.Parameter(to_sparse_semi_structured(m.weight.data), requires_grad=False)
    return model


@torch.inference_mode()
def prefill_ids(tokens: int) -> torch.Tensor:
    """The benchmark's prompt: `tokens` random ids, batch 1 (seeded)."""
    return torch.randint(0, 32000, (1, tokens), device="cuda", generator=torch.Generator("cuda").manual_seed(1))


def started_decoder(model, batch: int, context: int, steps: int, graphs: bool = True):
    """The runtime's StaticDecoder on a seeded random `context`-token prompt, past 3 warm-up steps (positions
    advance as in real decoding) and with room for `steps` more."""
    from compress.runtime.decoder import StaticDecoder

    dec = StaticDecoder(model, context + steps + 8, graphs=graphs, log=lambda m: print(m, flush=True))
    ids = torch.randint(0, 32000, (batch, context), device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    dec.start(ids)
    for _ in range(3):
        dec.next()
    torch.cuda.synchronize()
    return dec


@torch.inference_mode()  # ids are inference tensors: a compiled forward outside this mode would save them for grad
def prefill_ms(model, tokens: int) -> float:
    ids = prefill_ids(tokens)
    return bench_us(lambda: model(ids, use_cache=False), reps=5) / 1000


@torch.inference_mode()
def prefill_graph_ms(model, tokens: int) -> float:
    """A `tokens` prefill replayed from a CUDA graph (captured after two warm-up calls on a side stream, as
    torch.compile's reduce-overhead mode does): the forward's GPU time without the host's launch work."""
    from compress.runtime.decoder import capture

    ids = prefill_ids(tokens)
    graph, _ = capture(lambda: [model(ids, use_cache=False) for _ in range(2)], lambda: model(ids, use_cache=False))
    ms = bench_us(graph.replay, reps=5) / 1000
    del graph
    torch.cuda.empty_cache()
    return ms


@torch.inference_mode()
def prefill_profile(model, tokens: int = 2048, top: int = 25) -> dict:
    """Where a prefill's GPU time goes: torch.profiler over one prefill (after a warm-up), CUDA kernels grouped
    by name, the `top` largest by total time (ms), plus the total of all kernels and the wall time."""
    from torch.profiler import ProfilerActivity, profile

    ids = prefill_ids(tokens)
    model(ids, use_cache=False)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        model(ids, use_cache=False)
        torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) * 1000
    return {"wall_ms": wall, **kernel_times(prof, top)}


def kernel_times(prof, top: int, per: int = 1) -> dict:
    """CUDA kernels of a torch.profiler run grouped by name, ms per `per` (e.g. per decode step): the `top`
    largest and the total of all."""
    kernels = {}
    for ev in prof.key_averages():
        us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if us and ev.count:
            kernels[ev.key[:120]] = {"ms": us / 1000 / per, "calls": ev.count / per}
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1]["ms"])
    return {"kernels_total_ms": sum(v["ms"] for v in kernels.values()), "top": dict(ranked[:top])}


@torch.inference_mode()
def decode_profile(model, batch: int = 1, context: int = 128, steps: int = 16, top: int = 25) -> dict:
    """Where one graph-replayed decode step's GPU time goes: torch.profiler over `steps` steps of the
    StaticDecoder (after a warm-up), kernels grouped by name, ms per step; `step_ms` is the measured wall time per
    step around the profiled steps (profiler on)."""
    from torch.profiler import ProfilerActivity, profile

    dec = started_decoder(model, batch, context, steps)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            dec.next()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) * 1000 / steps
    return {"step_ms": wall, "batch": batch, "mode": dec.mode, **kernel_times(prof, top, per=steps)}


def decode_tok_s(model, batch: int, context: int = 128, steps: int = 64, graphs: bool = True) -> tuple[float, str]:
    """Greedy decode tokens/s (batch x timed steps over their time) after a `context` prefill, through the
    runtime's StaticDecoder (static KV cache; one step replayed from a CUDA graph when `graphs`)."""
    dec = started_decoder(model, batch, context, steps, graphs)
    t0 = time.perf_counter()
    for _ in range(steps - 8):
        dec.next()
    torch.cuda.synchronize()
    return batch * (steps - 8) / (time.perf_counter() - t0), dec.mode


def measure(model, name: str, into: dict, batches=(1, 16), prefill_graph: bool = False) -> None:
    """Prefill ms (also replayed from a CUDA graph when `prefill_graph`) and decode tok/s at `batches` of one
    model into `into` (a mode's section); clears the section's `earlier` marks (figures kept by --update from an
    earlier kernel version) of what it re-measures."""
    earlier = into.get("earlier", {})
    prefills = [("prefill_ms", prefill_ms, "")]
    if prefill_graph:
        prefills.append(("prefill_graph_ms", prefill_graph_ms, ", CUDA graph"))
    for key, run, label in prefills:
        try:
            into.setdefault(key, {})[name] = run(model, 2048)
            earlier.pop(f"{key}/{name}", None)
            print(f"  prefill {name}{label}: {into[key][name]:.1f} ms", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"  prefill {name}{label} failed: {str(e)[:300]}", flush=True)
            traceback.print_exc()
    for batch in batches:
        try:
            tps, mode = decode_tok_s(model, batch)
            into.setdefault("decode_tok_s", {}).setdefault(f"batch{batch}", {})[name] = tps
            earlier.pop(f"decode_tok_s/batch{batch}/{name}", None)
            into.setdefault("decode_mode", {})[f"{name}/batch{batch}"] = mode
            print(f"  decode {name} batch {batch}: {tps:.1f} tok/s ({mode})", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"  decode {name} batch {batch} failed: {str(e)[:300]}", flush=True)
            traceback.print_exc()


def end_to_end(
    results: dict,
    layers: int,
    modes: list[str],
    out: Path,
    only: set[str] | None = None,
    profile=False,
    batches=(1, 16),
    prefill_graph=False,
) -> None:
    """Each model runs eagerly first (forward as written, decode step replayed from a CUDA graph), then with
    `compile_forward` (torch.compile of the whole forward, same for dense and ours) in mode `compiled`."""
    e2e = results.setdefault("end_to_end", {})
    e2e.update({"layers": layers, "prefill_tokens": 2048})
    dense = llama7b(layers)
    variants = {"dense": dense}
    wanted = only or {"ours_2of4", "ours_int4_2of4", "stock_2of4"}  # dense is built always (the reference)
    for name, int4 in (("ours_2of4", False), ("ours_int4_2of4", True)):
        if name not in wanted:
            continue
        ours = copy.deepcopy(dense)
        sparsify(ours, int4=int4)
        prepare(ours)
        variants[name] = ours
        rep = choose_paths(ours, ms=(1, 16))  # the one-time per-shape path search, at the decode batches
        e2e.setdefault("paths", {})[name] = {
            f"{k[0]}x{k[1]} M={k[3]}": {"chosen": v["chosen"], **v["us"]} for k, v in rep.items()
        }
        e2e.pop("released_gib", None)  # (before issue 16 the bench freed unused forms; there is one form now)
    print(f"paths: {json.dumps(e2e.get('paths'))}", flush=True)
    if "stock_2of4" in wanted:
        variants["stock_2of4"] = to_stock(copy.deepcopy(dense))
    ids = torch.randint(0, 32000, (1, 64), device="cuda", generator=torch.Generator("cuda").manual_seed(3))
    with torch.inference_mode():
        ref = dense(ids).logits.float()
        e2e["logits_rel_err"] = e2e.get("logits_rel_err", {}) | {
            k: rel_err(v(ids).logits, ref) for k, v in variants.items() if k not in ("dense", "ours_int4_2of4")
        }
    print(f"logits rel err vs dense: {e2e['logits_rel_err']}", flush=True)
    results["memory_gib"] = results.get("memory_gib", {}) | {
        k: sum(b.numel() * b.element_size() for b in list(v.parameters()) + list(v.buffers())) / 2**30
        for k, v in variants.items()
        if k != "stock_2of4"
    }
    for name, model in variants.items():
        if only and name not in only:
            continue
        if "eager" in modes:
            print(f"{name}, eager:", flush=True)
            measure(model, name, e2e, batches, prefill_graph)  # eager figures stay at the top level of end_to_end
            out.write_text(json.dumps(results, indent=2) + "\n")
        if "compiled" in modes and name != "stock_2of4":  # torch.compile cannot trace the stock sparse tensor
            print(f"{name}, compiled:", flush=True)
            t0 = time.perf_counter()
            compile_forward(model)
            with torch.inference_mode():
                err = rel_err(model(ids).logits, ref) if name != "ours_int4_2of4" else None
            comp = e2e.setdefault("compiled", {})
            comp.setdefault("logits_rel_err", {})[name] = err
            measure(model, name, comp, batches, prefill_graph)
            comp.setdefault("compile_and_measure_s", {})[name] = time.perf_counter() - t0
            if profile:
                for kind, run, unit, scale in (
                    ("prefill", prefill_profile, "ms", 1),
                    ("decode", decode_profile, "us", 1e3),
                ):
                    prof = comp.setdefault(f"{kind}_profile", {})[name] = run(model)
                    walls = ", ".join(f"{k} {prof[k]:.3f}" for k in ("wall_ms", "step_ms") if k in prof)
                    print(f"  {kind} profile {name}: {walls}, kernels {prof['kernels_total_ms']:.3f} ms", flush=True)
                    for kname, v in list(prof["top"].items())[:12]:
                        print(f"    {v['ms'] * scale:8.2f} {unit} {v['calls']:5.0f}x {kname}", flush=True)
            out.write_text(json.dumps(results, indent=2) + "\n")


def summarise(results: dict) -> None:
    """Headline figures: from the compiled mode when it was measured (the fastest setting for dense and ours
    alike), else from the eager mode; `headline_mode` says which."""
    e2e = results.get("end_to_end", {})
    src = e2e["compiled"] if e2e.get("compiled", {}).get("decode_tok_s") else e2e
    results["headline_mode"] = "compiled" if src is not e2e else "eager"
    d = src.get("decode_tok_s", {}).get("batch1", {})
    p = src.get("prefill_ms", {})
    results["decode_tok_s"] = {k: d.get(k) for k in ("dense", "stock_2of4", "ours_2of4", "ours_int4_2of4")}
    stock_eager = e2e.get("decode_tok_s", {}).get("batch1", {}).get("stock_2of4")
    if results["decode_tok_s"]["stock_2of4"] is None and stock_eager:  # torch.compile cannot trace it
        results["decode_tok_s"]["stock_2of4"] = stock_eager
        results["stock_2of4_mode"] = "eager (torch.compile cannot trace the stock sparse tensor)"
    if d.get("dense") and d.get("ours_2of4"):
        results["decode_speedup_bf16_2of4"] = d["ours_2of4"] / d["dense"]
    if d.get("dense") and d.get("ours_int4_2of4"):
        results["decode_speedup_int4_2of4"] = d["ours_int4_2of4"] / d["dense"]
    if p.get("dense") and p.get("ours_2of4"):
        results["prefill_speedup_bf16_2of4"] = p["dense"] / p["ours_2of4"]
    results["speedups"] = {}  # both modes, against dense in the same mode
    for mode, sec in (("eager", e2e), ("compiled", e2e.get("compiled", {}))):
        pre, dec = sec.get("prefill_ms", {}), sec.get("decode_tok_s", {})
        row = {}
        for name in ("stock_2of4", "ours_2of4", "ours_int4_2of4"):
            if pre.get("dense") and pre.get(name):
                row[f"prefill_{name}"] = pre["dense"] / pre[name]
            for b in ("batch1", "batch16"):
                if dec.get(b, {}).get("dense") and dec.get(b, {}).get(name):
                    row[f"decode_{b}_{name}"] = dec[b][name] / dec[b]["dense"]
        results["speedups"][mode] = row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=32, help="decoder layers of the 7B-shaped model")
    p.add_argument("--skip-gemm", action="store_true")
    p.add_argument("--skip-e2e", action="store_true")
    p.add_argument("--shapes", default="", help="GEMM table shapes NxK,... (default: the 7B layer shapes); e.g. "
                   "12288x4096,22016x4096 for fused q/k/v and gate/up")  # fmt: skip
    p.add_argument("--ms", default="", help="GEMM table token counts M,... (default 1,16,64,512,2048,8192)")
    p.add_argument("--profile", action="store_true", help="profile a compiled prefill and 16 decode steps per model")
    p.add_argument("--modes", default="eager,compiled", help="end-to-end modes: eager, compiled or both")
    p.add_argument("--variants", default="", help="end-to-end models to measure (default all): dense,ours_2of4,...")
    p.add_argument("--batches", default="1,16", help="end-to-end decode batch sizes ('' for none)")
    p.add_argument("--prefill-graph", action="store_true", help="also time the prefill replayed from a CUDA graph")
    p.add_argument("--update", action="store_true", help="keep the sections of an existing --json not re-run")
    p.add_argument("--json", type=Path, default=Path("bench/runtime.json"))
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/runtime.py needs a CUDA GPU (run it on the GPU machine)")
    from compress.runtime.cusparselt import backend

    results = json.loads(args.json.read_text()) if args.update and args.json.exists() else {}
    results.pop("notes", None)  # notes describe the file's previous runs
    commands = results.get("run", {}).get("commands", [])
    results.update({"run": run_meta(), "device": torch.cuda.get_device_name(0), "torch": torch.__version__})
    results["run"]["commands"] = [*commands, results["run"]["command"]] if args.update else [results["run"]["command"]]
    results["prefill_backend"] = type(backend()).__name__
    bw = copy_bandwidth()
    results["copy_bandwidth_tb_s"] = bw / 1e12
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s; prefill backend {results['prefill_backend']}", flush=True)
    if not args.skip_gemm:
        section = "gemm_extra" if args.shapes else "gemm"  # extra shapes never replace the main table
        results[section] = []
        results.setdefault("section_dates", {})[section] = results["run"]["date"]
        try:
            shapes = [tuple(int(v) for v in sh.split("x")) for sh in args.shapes.split(",")] if args.shapes else SHAPES
            ms = [int(v) for v in args.ms.split(",")] if args.ms else MS
            gemm_table(results, bw, args.json, shapes, ms, section)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
    if not args.skip_e2e:
        try:
            only = set(args.variants.split(",")) if args.variants else None
            batches = tuple(int(b) for b in args.batches.split(",") if b)
            end_to_end(
                results, args.layers, args.modes.split(","), args.json, only, args.profile, batches, args.prefill_graph
            )
        except Exception:  # noqa: BLE001
            traceback.print_exc()
    summarise(results)
    save(args.json, results)
    print(json.dumps({k: v for k, v in results.items() if k not in ("gemm", "end_to_end")}, indent=1))


if __name__ == "__main__":
    main()
