"""GPU timing for the path and launch-shape searches (`linear.choose_paths`, `cuda_decode.tune`, `cuda_mma.tune`)
and the benchmarks: CUDA-event and CUDA-graph-replay microseconds, and the fastest of several candidates."""

from __future__ import annotations

import torch


def event_time_us(fn, reps: int = 50, warmup: int = 3) -> float:
    """Median microseconds of fn() between two CUDA events, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000)
    return sorted(times)[len(times) // 2]


def graph_time_us(fn, calls: int = 10, replays: int = 5) -> float:
    """GPU microseconds per fn() call: `calls` calls captured in one CUDA graph, median of `replays` replays
    (no host overhead in the figure, as in graph-replayed decoding); eager event timing if capture fails."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
        run = graph.replay
    except Exception:  # noqa: BLE001 - some paths cannot be captured; time them eagerly
        torch.cuda.synchronize()

        def run():
            for _ in range(calls):
                fn()

    return event_time_us(run, reps=replays, warmup=0) / calls


def fastest(candidates, run) -> tuple:
    """(the fastest candidate, {candidate: GPU µs of run(candidate)}) by `graph_time_us`; a candidate this
    device cannot run (RuntimeError, e.g. a launch shape needing too many registers) is skipped."""
    times = {}
    for c in candidates:
        try:
            times[c] = graph_time_us(lambda c=c: run(c))
        except RuntimeError:
            torch.cuda.synchronize()
    if not times:
        raise RuntimeError(f"none of {list(candidates)} ran on this device")
    return min(times, key=times.get), times
