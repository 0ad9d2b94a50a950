"""CPU numerics (issue #12): mask agreement between CPU numerics settings (bench/cpu_numerics.py)."""

from __future__ import annotations


def cpu_numerics(d: dict) -> list[str]:
    """Mask agreement between CPU numerics settings (bench/cpu_numerics.py)."""
    m, s, v = d["meta"], d["setup"], d["variants"]
    lines = [
        "## CPU numerics (issue #12): does a CPU checkpoint depend on the machine?",
        "",
        f"Command: `{m['command']}` — machine: {m['machine']} — date: {m['date']}.",
        f"{s['model']}, {s['method']}, `olmo-mix` {s['nsamples']} × {s['seqlen']}, fp32; each variant in a fresh "
        "process. An AVX2-only machine is emulated by `MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2`; "
        "`pinned` is what `python -m compress` sets (compress/cpu_numerics.py).",
        "",
        "| variant A | variant B | mask entries that differ | first Linear that differs |",
        "|---|---|---:|---|",
    ]
    for p in d["pairs"]:
        share = f"{p['differ']:,} of {p['total']:,} ({p['differ'] / p['total']:.2%})"
        lines.append(f"| {p['a']} | {p['b']} | {share} | {p['first_layer_that_differs'] or '—'} |")
    lines += ["", "| variant | threads | ATen kernels | prune time (s) |", "|---|---:|---|---:|"]
    lines += [f"| {name} | {r['threads']} | {r['aten']} | {r['prune_s']:.1f} |" for name, r in v.items()]
    return lines + [""]
