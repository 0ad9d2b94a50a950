"""Interop (issue 13): other readers of our sparse-24-bitmask folders (bench/interop.py)."""

from __future__ import annotations


def interop(d: dict) -> list[str]:
    """Other readers of our sparse-24-bitmask folders (bench/interop.py): transformers 4.57, compressed-tensors 0.14."""
    runs = d["runs"]
    after = runs.get("after") or next(iter(runs.values()))
    side, main = after["versions"]["side"], after["versions"]["main"]
    lines = [
        "## Interop (issue 13): other readers load our sparse-24-bitmask folders exactly",
        "",
        f"Command: `{after['command']}` — machine: {after['machine']['cpu_count']} CPU cores, no GPU — date: "
        f"{after['date_utc'][:10]}. Side environment (created by the script): transformers {side['transformers']}, "
        f"compressed-tensors {side['compressed-tensors']} (the last release whose ModelCompressor decompresses "
        f"sparse-24-bitmask), llmcompressor {side.get('llmcompressor', '-')}; ours: transformers "
        f"{main['transformers']}, compressed-tensors {main['compressed-tensors']}. Readers: "
        "`AutoModelForCausalLM.from_pretrained(folder)` and `ModelCompressor.decompress`; compared with our loader: "
        f"every tensor bit-exact, and max |Δ| of the logits on {after['token_ids_shape'][0]} × "
        f"{after['token_ids_shape'][1]} fixed token ids.",
        "",
    ]
    head = (
        "| folder | "
        + " | ".join(
            f"{label}: from_pretrained weights / logits max abs diff | {label}: ModelCompressor" for label in runs
        )
        + " |"
    )
    lines += [head, "|---|" + "---|---|" * len(runs)]

    def cells(case: dict | None) -> str:
        if case is None:
            return " | "
        fp, mc = case.get("from_pretrained", {}), case.get("model_compressor", {})
        if fp.get("ok"):
            a = f"{'bit-exact' if fp['weights_bit_exact'] else 'DIFFER'} / {fp['logits_max_abs_diff']:.3g}"
        else:
            a = f"failed: {fp.get('error', '')[:60]}"
        b = ("bit-exact" if mc.get("weights_bit_exact") else "DIFFER") if mc.get("ok") else mc.get("error", "")[:40]
        return f"{a} | {b}"

    for name in after["cases"]:
        lines.append(f"| {name} | " + " | ".join(cells(r["cases"].get(name)) for r in runs.values()) + " |")
    lines += [""] + [f"Note ({label}): {r['note']}" for label, r in runs.items() if r.get("note")]
    lines += [
        "",
        "Reading: before, compressed-tensors 0.14 refused our config (a stray top-level `format` made it parse a "
        "quantization config) and transformers 4.57 read only transformers 5's `rope_parameters`, falling back to "
        "rope base 10000, so the logits were wrong although every weight was right. The export now writes "
        "llm-compressor's `quantization_config` key for key and the 4.x rope keys beside `rope_parameters`; "
        "`tests/fixtures/llmcompressor-2of4` is a folder written by llm-compressor itself, read bit-exactly by our "
        "loader in the tests.",
        "",
    ]
    return lines
