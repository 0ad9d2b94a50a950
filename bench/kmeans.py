"""SqueezeLLM per-layer time (issue 15): our vectorised Fisher-weighted k-means and the whole dense-and-sparse
step, per Linear, at SmolLM2-135M's and Llama-2-7B's shapes, on this machine's CPU and (if any) GPU.

    python bench/kmeans.py [--device cpu,cuda] [--shapes smollm2,llama2-7b] [--bits 3,4] [--json PATH]

Synthetic inputs (no weights needed for a timing): W ~ N(0, 0.02²) with heavy-tailed outliers (Student-t, 3
degrees of freedom), Fisher ~ W-independent squared Gaussians, seeded. The reference (SqueezeAILab/SqueezeLLM
`quantization/nuq.py`) runs sklearn KMeans once per output row; for scale, one row's sklearn k-means at the same
settings is timed too (when sklearn is installed) and multiplied by the row count, labelled as an estimate.
Each figure is the median of `--repeats` runs after one warm-up; CUDA timings synchronise around the call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.render import run_meta, save  # noqa: E402
from compress.runtime.timing import event_time_us  # noqa: E402
from quant.dense_sparse import DenseSparseSpec, dense_and_sparse, weighted_kmeans_1d  # noqa: E402

SHAPES = {  # name -> {module: (out, in)} (one decoder layer's distinct Linear shapes)
    "smollm2": {"q_proj": (576, 576), "k_proj": (192, 576), "gate_proj": (1536, 576), "down_proj": (576, 1536)},
    "llama2-7b": {"q_proj": (4096, 4096), "gate_proj": (11008, 4096), "down_proj": (4096, 11008)},
}
LAYER_COUNTS = {  # module -> how many of its shape one decoder layer holds
    "smollm2": {"q_proj": 2, "k_proj": 2, "gate_proj": 2, "down_proj": 1},  # q,o / k,v / gate,up / down
    "llama2-7b": {"q_proj": 4, "gate_proj": 2, "down_proj": 1},  # q,k,v,o / gate,up / down
}
ITERS = 50  # the reference's KMeans max_iter


def inputs(shape: tuple[int, int], device: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    W = (torch.distributions.StudentT(3.0).sample(shape) * 0.02).clamp(-1, 1)  # fp16-safe
    F = torch.randn(shape).pow(2)
    return W.to(device), F.to(device)


def timed(fn, device: str, repeats: int) -> float:
    """Median seconds of fn() over `repeats` calls after one warm-up (CUDA events on the GPU)."""
    if device == "cuda":
        return event_time_us(fn, reps=repeats, warmup=1) / 1e6
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def sklearn_row_s(cols: int, bits: int) -> float | None:
    """Seconds of one row of the reference's per-row sklearn KMeans (n_init=auto, max_iter=50, sample weights)."""
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        return None
    W, F = inputs((4, cols), "cpu", 1)
    km = KMeans(n_clusters=2**bits, random_state=0, n_init="auto", max_iter=ITERS)
    times = []
    for i in range(4):  # row 0 warms sklearn up (imports, thread pools); the median of rows 1-3 is kept
        x, w = W[i].double().numpy().reshape(-1, 1), F[i].double().numpy()
        t0 = time.perf_counter()
        km.fit(x, sample_weight=w)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--bits", default="3,4")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=Path("bench/kmeans.json"))
    args = p.parse_args()
    res: dict = {"kmeans_s": {}, "dense_sparse_s": {}, "layer_s": {}, "sklearn_estimate_s": {}}
    for device in args.device.split(","):
        for shape_name in args.shapes.split(","):
            for bits in map(int, args.bits.split(",")):
                key = f"{device}/{shape_name}/w{bits}"
                spec = DenseSparseSpec(bits=bits, iters=ITERS)
                layer = 0.0
                for mod, shape in SHAPES[shape_name].items():
                    W, F = inputs(shape, device, 0)
                    km = timed(lambda W=W, F=F, s=spec: weighted_kmeans_1d(W, F, s.k, ITERS), device, args.repeats)
                    ds = timed(lambda W=W, F=F, s=spec: dense_and_sparse(W, F, s), device, args.repeats)
                    res["kmeans_s"].setdefault(key, {})[mod] = round(km, 4)
                    res["dense_sparse_s"].setdefault(key, {})[mod] = round(ds, 4)
                    layer += ds * LAYER_COUNTS[shape_name][mod]
                    print(f"{key} {mod} {shape}: kmeans {km:.3f} s, dense-and-sparse {ds:.3f} s", flush=True)
                    del W, F
                res["layer_s"][key] = round(layer, 3)
                if device == "cpu":
                    est = {}
                    for mod, (rows, cols) in SHAPES[shape_name].items():
                        one = sklearn_row_s(cols, bits)
                        if one is not None:
                            est[mod] = round(one * rows, 1)
                    if est:
                        res["sklearn_estimate_s"][f"{shape_name}/w{bits}"] = est
    res["shapes"] = {n: {m: f"{o} × {i}" for m, (o, i) in SHAPES[n].items()} for n in args.shapes.split(",")}
    res["run"] = {**run_meta(), "command": "python " + " ".join(sys.argv), "iters": ITERS}
    save(args.json, res)


if __name__ == "__main__":
    main()
