"""Does a CPU checkpoint depend on the machine? Wanda 2:4 masks of SmolLM2 under several CPU numerics settings.

Each variant prunes SmolLM2-135M (Wanda 2:4, `olmo-mix`, 8 x 512 tokens, fp32) in a fresh process and saves
its masks; pairs are then compared entry by entry. A second machine is emulated on this one by restricting
MKL (`MKL_ENABLE_INSTRUCTIONS=AVX2`) and ATen (`ATEN_CPU_CAPABILITY=avx2`) to AVX2, which is what they pick on
an AVX2-only CPU. `pinned` = compress/cpu_numerics.py's setting (what `python -m compress` uses).
Writes bench/cpu_numerics.json; `python -m bench.render` puts it into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from compress.cpu_numerics import PINNED  # noqa: E402

AVX2_MACHINE = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
NATIVE = {"LLM_COMPRESS_CPU_NUMERICS": "native"}
VARIANTS = {  # name -> (environment, threads)
    "native": (NATIVE, 2),
    "native_avx2_machine": ({**NATIVE, **AVX2_MACHINE}, 2),
    "native_1_thread": (NATIVE, 1),
    "pinned": (PINNED, 2),
    "pinned_avx2_machine": ({**PINNED, **AVX2_MACHINE}, 2),
    "pinned_1_thread": (PINNED, 1),
}
PAIRS = [
    ("native", "native_avx2_machine"),
    ("native", "native_1_thread"),
    ("pinned", "pinned_avx2_machine"),
    ("pinned", "pinned_1_thread"),
    ("native", "pinned"),
]

CHILD = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
sys.path.insert(0, sys.argv[3])
from safetensors.torch import save_file
from prune.stage import PruneConfig
from compress.data import calibration_windows, load_calibration_corpus
from compress.models import load_model
from compress.pipeline import prune_model
model, tok, _ = load_model("smollm2-135m", torch.float32)
windows = calibration_windows(load_calibration_corpus("olmo-mix"), tok, int(sys.argv[4]), int(sys.argv[5]), 0)
t0 = time.perf_counter()
prune_model(model, windows, PruneConfig("wanda", "2:4"), torch.device("cpu"), progress=False)
seconds = time.perf_counter() - t0
masks = {n: (m.weight != 0).contiguous() for n, m in model.named_modules()
         if isinstance(m, torch.nn.Linear) and ".layers." in n}
save_file(masks, sys.argv[2], metadata={"prune_s": str(seconds), "aten": torch.backends.cpu.get_cpu_capability()})
"""


def run_variant(name: str, folder: Path, nsamples: int, seqlen: int) -> dict:
    env, threads = VARIANTS[name]
    child_env = {k: v for k, v in os.environ.items() if k not in (*PINNED, *AVX2_MACHINE, *NATIVE)}
    child_env.update(env)
    out = folder / f"{name}.safetensors"
    cmd = [sys.executable, "-c", CHILD, str(threads), str(out), str(ROOT), str(nsamples), str(seqlen)]
    subprocess.run(cmd, env=child_env, check=True, capture_output=True)
    from safetensors import safe_open

    with safe_open(out, framework="pt") as f:
        meta = f.metadata()
    return {"env": env, "threads": threads, "prune_s": round(float(meta["prune_s"]), 1), "aten": meta["aten"]}


def compare(a: Path, b: Path) -> dict:
    from safetensors.torch import load_file

    ma, mb = load_file(a), load_file(b)
    diff = {n: int((ma[n] != mb[n]).sum()) for n in ma}
    total = sum(t.numel() for t in ma.values())
    first = next((n for n in ma if diff[n]), None)
    return {"differ": sum(diff.values()), "total": total, "first_layer_that_differs": first}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--nsamples", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "cpu_numerics.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        variants = {}
        for name in VARIANTS:
            variants[name] = run_variant(name, folder, args.nsamples, args.seqlen)
            print(name, variants[name], flush=True)
        pairs = []
        for a, b in PAIRS:
            r = {"a": a, "b": b, **compare(folder / f"{a}.safetensors", folder / f"{b}.safetensors")}
            pairs.append(r)
            print(r, flush=True)
    from bench.render import run_meta, save

    save(
        args.json,
        {
            "meta": run_meta(),
            "setup": {"model": "smollm2-135m", "method": "wanda 2:4", "nsamples": args.nsamples, "seqlen": args.seqlen},
            "variants": variants,
            "pairs": pairs,
        },
    )


if __name__ == "__main__":
    main()
