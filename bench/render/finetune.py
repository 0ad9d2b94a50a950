"""Finetune (issue 14): one-shot 2:4 and AST on SmolLM2-135M (bench/finetune.py)."""

from __future__ import annotations

LABELS = {
    "dense": "dense",
    "sparsegpt_2of4": "SparseGPT 2:4 one-shot",
    "wanda_2of4": "Wanda 2:4 one-shot",
    "ast_2of4": "SparseGPT 2:4 → AST",
    "ast_wanda_2of4": "Wanda 2:4 → AST",
}


def _f(x, fmt="{:.3f}") -> str:
    return "–" if x is None else fmt.format(x)


def finetune(d: dict) -> list[str]:
    v, run = d["variants"], d["run"]
    dense_ppl = v.get("dense", {}).get("wiki_ppl")
    goal = d["goal"]
    lines = [
        "## Finetune (issue 14): one-shot 2:4 and AST on SmolLM2-135M",
        "",
        f"Command: `{run['command']}` — machine: {run['machine']} — date: {run['date']}. Checkpoints from the "
        "packaged recipes (`dense`, `sparsegpt-2of4`, `wanda-2of4`, `sparsegpt-2of4-ast`, `wanda-2of4-ast`) through "
        f"the pipeline, {d['dtype']}; zero-shot with lm-eval on the embedded validation sets "
        "(full sets unless a limit is shown). Recovery = mean over the discriminating tasks (HellaSwag acc_norm, "
        "ARC-Easy acc, PIQA acc) of (acc − chance) / (dense acc − chance). "
        f"Goal: recovery ≥ {goal['recovery']} and wiki ppl ≤ {goal['wiki_ppl_over_dense']}× dense.",
        "",
        "| model | wiki ppl | × dense | recovery | HellaSwag acc_norm | ARC-Easy | PIQA | paper-7 mean acc | "
        "train tokens | train s | tokens/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in LABELS.items():
        e = v.get(key)
        if e is None:
            continue
        disc, p7 = e.get("discriminating", {}), e.get("paper7", {})
        ratio = e["wiki_ppl"] / dense_ppl if dense_ppl else None
        lines.append(
            f"| {label} | {e['wiki_ppl']:.2f} | {_f(ratio, '{:.2f}')} | {_f(e.get('recovery'))} | "
            f"{_f(disc.get('hellaswag'))} | {_f(disc.get('arc_easy'))} | {_f(disc.get('piqa'))} | "
            f"{_f(sum(p7.values()) / len(p7) if p7 else None)} | {e['train_tokens']:,} | {e['train_s']:.0f} | "
            f"{_f(e.get('tokens_per_s'), '{:,.0f}')} |"
        )
    p7_tasks = next((list(e["paper7"]) for e in v.values() if e.get("paper7")), [])
    if p7_tasks:
        lines += ["", "Paper-7 accuracies (acc):", "", "| model | " + " | ".join(p7_tasks) + " |"]
        lines.append("|---|" + "---:|" * len(p7_tasks))
        for key, label in LABELS.items():
            if v.get(key, {}).get("paper7"):
                lines.append(f"| {label} | " + " | ".join(f"{v[key]['paper7'][t]:.3f}" for t in p7_tasks) + " |")
    for key in ("ast_2of4", "ast_wanda_2of4"):
        e = v.get(key)
        if e and e.get("curve"):
            pts = ", ".join(f"{t / 1e6:.1f}M → {p:.2f}" for t, p in e["curve"])
            lines += ["", f"{LABELS[key]}: wiki ppl against training tokens: {pts}."]
        if e and e.get("data"):
            src = e["data"]["sources"]
            lines.append(
                f"Data ({LABELS[key]}): "
                + "; ".join(f"{n}: {s['tokens']:,} tokens, {s['epochs']:.2f} epochs" for n, s in src.items())
                + f"; held-out sets checked disjoint (32-token spans): {', '.join(e['data'].get('heldout_sets', []))}."
            )
    if d.get("note"):
        lines += ["", d["note"]]
    return lines + [""]
