"""GPTQ codes in the runtime's int4 2:4 layout (issue 15), GPU only: a Llama-2-7B-shaped model (fewer layers) with
real 2:4 masks, its kept weights quantized two ways into the same layout, decode tok/s of both side by side.

  rtn   the runtime's own round to nearest at conversion (compress/runtime/model.py sparsify, int4=True);
  gptq  our GPTQ (quant/gptq.py: symmetric 4-bit, group 128, the 2:4 mask fixed, scales rounded to bf16), each
        Linear on the Hessian of synthetic correlated inputs, then packed EXACTLY as `load_runtime_model` packs a
        GPTQ pack-quantized checkpoint (Sparse24Linear.from_linear with the checkpoint's scales: format24.pack_int4,
        which refuses any value that is not code * scale).

Both run the same kernels on buffers of the same shapes, so the decode rates should agree; the check is that
they do, and that the GPTQ layer really holds GPTQ's values (its output error on fresh inputs from the same
distribution is below RTN's, and its dequantised weight is GPTQ's weight bit for bit).

    python bench/int4_codes.py --layers 8 --json bench/int4_codes.json
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.render import run_meta, save  # noqa: E402
from bench.runtime import decode_tok_s, llama7b  # noqa: E402
from compress.export import keep_mask_24  # noqa: E402
from compress.runtime.linear import Sparse24Linear, choose_paths  # noqa: E402
from compress.runtime.model import prepare, sparsify  # noqa: E402
from quant.gptq import gptq_quantize  # noqa: E402
from quant.primitives import QuantSpec  # noqa: E402

DEVICE = "cuda"  # the benchmark runs on the GPU (a CPU smoke test may set "cpu")
SPEC = QuantSpec(bits=4, strategy="group", group_size=128, symmetric=True)


def inputs(k: int, tokens: int, seed: int, sample: int = 0) -> torch.Tensor:
    """Correlated, heavy-tailed layer inputs (tokens, k) of one distribution per `seed` (per-channel log-normal
    scales plus a rank-8 shared part); `sample` draws other tokens from the same distribution."""
    g = torch.Generator(DEVICE).manual_seed(seed)
    scale = torch.randn(k, device=DEVICE, generator=g).exp()
    mix = torch.randn(8, k, device=DEVICE, generator=g)
    g.manual_seed(1_000_003 * (sample + 1) + seed)
    low = torch.randn(tokens, 8, device=DEVICE, generator=g) @ mix
    return torch.randn(tokens, k, device=DEVICE, generator=g) * scale + low


def output_error(W_q: torch.Tensor, W: torch.Tensor, X: torch.Tensor) -> float:
    return float(((W_q.float() - W.float()) @ X.t()).norm() / (W.float() @ X.t()).norm())


def gptq_model(dense, tokens: int) -> tuple[torch.nn.Module, dict]:
    model = copy.deepcopy(dense)
    info, seed, t0 = {"output_error": {}}, 0, time.perf_counter()
    for li, layer in enumerate(model.model.layers):
        for name, lin in list(layer.named_modules()):
            if not isinstance(lin, torch.nn.Linear):
                continue
            seed += 1
            X = inputs(lin.in_features, tokens, seed)
            H = 2 * X.t() @ X / tokens
            keep = keep_mask_24(lin.weight.data)
            W = lin.weight.data
            r = gptq_quantize(W.float(), H, SPEC, keep=keep, scale_dtype=torch.bfloat16)
            lin.weight.data = r.W.to(W.dtype)
            new = Sparse24Linear.from_linear(lin, keep, int4=True, scales=r.scale.to(W.dtype))
            assert torch.equal(new.dense_weight(), r.W.to(W.dtype)), name  # GPTQ's values, bit for bit
            if li == 0:  # GPTQ vs RTN of the same weight on fresh inputs of the same distribution
                X2 = inputs(lin.in_features, tokens, seed, sample=1)
                W_rtn = _rtn_weight(W.clone(), keep)
                info["output_error"][name] = {"gptq": output_error(r.W, W, X2), "rtn": output_error(W_rtn, W, X2)}
            parent, _, child = name.rpartition(".")
            setattr(layer.get_submodule(parent) if parent else layer, child, new)
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    info["gptq_s"] = time.perf_counter() - t0
    return model, info


def _rtn_weight(W: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=False, device=W.device, dtype=W.dtype)
    lin.weight.data = W
    return Sparse24Linear.from_linear(lin, keep, int4=True).dense_weight()


def ratios(results: dict) -> dict:
    """GPTQ / RTN mean decode rate per batch, over the runs replayed from a CUDA graph (a run whose capture failed
    decodes eagerly, which measures the fallback, not the kernels)."""
    out = {}
    for b, v in results["decode_tok_s"].items():
        modes = results["decode_mode"][b]
        mean = {n: [t for t, m in zip(v[n], modes[n], strict=True) if m == "cuda-graph"] for n in ("rtn", "gptq")}
        if all(mean.values()):
            out[b] = (sum(mean["gptq"]) / len(mean["gptq"])) / (sum(mean["rtn"]) / len(mean["rtn"]))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--tokens", type=int, default=2048, help="synthetic calibration tokens per Linear")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--json", type=Path, default=Path("bench/int4_codes.json"))
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/int4_codes.py needs a CUDA GPU")
    torch.manual_seed(0)
    dense = llama7b(args.layers)
    results = {"run": run_meta(), "device": torch.cuda.get_device_name(0), "layers": args.layers}
    gptq, info = gptq_model(dense, args.tokens)
    results.update(info)
    print(f"gptq: {info['gptq_s']:.1f} s; output error layer 0: {info['output_error']}", flush=True)
    rtn = copy.deepcopy(dense)
    sparsify(rtn, int4=True)
    del dense
    results["decode_tok_s"], results["weight_bytes"] = {}, {}
    for name, model in (("rtn", rtn), ("gptq", gptq)):
        prepare(model)
        choose_paths(model, ms=tuple(int(b) for b in args.batches.split(",")))
        results["weight_bytes"][name] = sum(b.numel() * b.element_size() for b in model.buffers())
    for rep in range(2):  # interleaved, twice: drift of the machine shows as disagreement between repeats
        for name, model in (("rtn", rtn), ("gptq", gptq)):
            for b in args.batches.split(","):
                tps, mode = decode_tok_s(model, int(b))
                results["decode_tok_s"].setdefault(f"batch{b}", {}).setdefault(name, []).append(tps)
                results.setdefault("decode_mode", {}).setdefault(f"batch{b}", {}).setdefault(name, []).append(mode)
                print(f"{name} batch {b} run {rep}: {tps:.1f} tok/s ({mode})", flush=True)
    results["ratio_gptq_over_rtn"] = {
        b: (sum(v["gptq"]) / len(v["gptq"])) / (sum(v["rtn"]) / len(v["rtn"]))
        for b, v in results["decode_tok_s"].items()
    }
    print(results["ratio_gptq_over_rtn"], flush=True)
    save(args.json, results)


if __name__ == "__main__":
    main()
