"""Where a decode step of transformers' `generate` spends its time, dense vs our 2:4 layers (issue 16): the
torch.profiler over `generate` at batch 1 (eager, and with transformers' own compilation), the CUDA kernels that
ran (with their call counts: which path the Linears took) and the Python frames with the most CPU time.

    python bench/profile_generate.py [--layers 4] [--new 16] [--json bench/logs/profile_generate.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.render import run_meta  # noqa: E402
from bench.user_path import CONTEXT, build, prompt, variant  # noqa: E402


def top(events, key: str, n: int = 15) -> dict:
    rows = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:n]
    return {e.key[:120]: {"us": round(getattr(e, key), 1), "calls": e.count} for e in rows}


@torch.inference_mode()
def profile(model, compiled: bool, new: int) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof
    from transformers import StaticCache

    ids = prompt(model, 1, CONTEXT, seed=1)

    def call():
        cache = StaticCache(config=model.config, max_cache_len=CONTEXT + new + 8)
        model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, past_key_values=cache,
                       disable_compile=not compiled)  # fmt: skip

    call()
    call()
    torch.cuda.synchronize()
    with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        call()
        torch.cuda.synchronize()
    ev = p.key_averages()
    cuda = [e for e in ev if e.device_time_total > 0 and e.device_type == torch.autograd.DeviceType.CUDA]
    cpu = [e for e in ev if e.self_cpu_time_total > 0]
    return {
        "kernels": top(cuda, "device_time_total", 20),
        "cpu_self": top(cpu, "self_cpu_time_total", 20),
        "wall_cpu_us": round(sum(e.self_cpu_time_total for e in cpu), 1),
        "gpu_us": round(sum(e.device_time_total for e in cuda), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--new", type=int, default=16)
    p.add_argument("--variants", default="dense,ours_2of4,ours_int4_2of4")
    p.add_argument("--json", type=Path, default=Path("bench/logs/profile_generate.json"))
    a = p.parse_args()
    dense = build(a.layers, torch.device("cuda"))
    out = {"run": run_meta(), "layers": a.layers, "new_tokens": a.new}
    for name in a.variants.split(","):
        model = variant(dense, name)
        for compiled in (False, True):
            r = out.setdefault(name, {})["compiled" if compiled else "eager"] = profile(model, compiled, a.new)
            mode = "compiled" if compiled else "eager"
            print(f"== {name} {mode}: cpu {r['wall_cpu_us']:.0f} us gpu {r['gpu_us']:.0f}", flush=True)
            for k, v in list(r["kernels"].items())[:8]:
                print(f"   gpu {v['us']:9.1f} us {v['calls']:5d}x {k}")
            for k, v in list(r["cpu_self"].items())[:10]:
                print(f"   cpu {v['us']:9.1f} us {v['calls']:5d}x {k}")
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
