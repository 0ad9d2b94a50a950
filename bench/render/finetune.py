"""Finetune (issue 14): one-shot 2:4 and AST on SmolLM2-135M (bench/finetune.py)."""

from __future__ import annotations

import math

FIT_WINDOW = (0.2, 0.65)  # fraction of the run's tokens: after the warm-up transient, before the cosine tail

LABELS = {
    "dense": "dense",
    "sparsegpt_2of4": "SparseGPT 2:4 one-shot",
    "wanda_2of4": "Wanda 2:4 one-shot",
    "ast_2of4": "SparseGPT 2:4 → AST",
    "ast_wanda_2of4": "Wanda 2:4 → AST",
    "ast_2of4_quest_w4": "SparseGPT 2:4 → AST + QuEST-QAT w4 (issue 15)",
}


def _f(x, fmt="{:.3f}") -> str:
    return "–" if x is None else fmt.format(x)


def tokens_to_reach(curve: list, target: float, floor: float = 0.0, window=FIT_WINDOW) -> tuple[float, float] | None:
    """Least-squares fit of log(ppl − floor) = a + s·log(tokens) on the curve points whose tokens lie in `window`
    (fractions of the last point's tokens); returns (tokens where the fit reaches `target`, s), or None when fewer
    than three points qualify or the fit does not fall. floor = dense ppl: the excess over dense decays as a power
    law; floor = 0: a power law in ppl itself (optimistic: it ignores that 2:4 cannot beat dense)."""
    end = curve[-1][0]
    pts = [
        (math.log(t), math.log(p - floor)) for t, p in curve if window[0] * end <= t <= window[1] * end and p > floor
    ]
    if len(pts) < 3 or target <= floor:  # two points always fit; a third is the least test of the law
        return None
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    if slope >= 0:
        return None
    return math.exp(mx + (math.log(target - floor) - my) / slope), slope


def finetune(d: dict) -> list[str]:
    v, run = d["variants"], d["run"]
    dense_ppl = v.get("dense", {}).get("wiki_ppl")
    goal = d["goal"]
    lines = [
        "## Finetune (issue 14): one-shot 2:4 and AST on SmolLM2-135M",
        "",
        "Commands (each row's is in bench/finetune.json): "
        + "; ".join(f"`{c}`" for c in dict.fromkeys(e.get("command", run["command"]) for e in v.values()))
        + f" — machine: {run['machine']} — date: {run['date']}. Checkpoints from the "
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
            base = v.get({"ast_2of4": "sparsegpt_2of4", "ast_wanda_2of4": "wanda_2of4"}[key])
            if base and dense_ppl:
                closed = (base["wiki_ppl"] - e["wiki_ppl"]) / (base["wiki_ppl"] - dense_ppl)
                rec = (
                    f"; recovery {base['recovery']:.3f} → {e['recovery']:.3f}"
                    if "recovery" in e and "recovery" in base
                    else ""
                )
                lines.append(f"AST closes {closed:.0%} of the one-shot model's wiki ppl gap to dense{rec}.")
            if e.get("zeroshot_note"):
                lines.append(f"Zero-shot {e['zeroshot_note']}.")
            if dense_ppl and e.get("tokens_per_s"):
                target = goal["wiki_ppl_over_dense"] * dense_ppl
                fits = [(f, tokens_to_reach(e["curve"], target, f)) for f in (dense_ppl, 0.0)]
                if not all(r for _, r in fits):
                    lines.append("Too few curve points before the cosine tail to extrapolate tokens to the goal.")
                else:
                    (t1, s1), (t2, s2) = fits[0][1], fits[1][1]
                    lines.append(
                        f"To reach the goal's {target:.1f} (fit on the points between {FIT_WINDOW[0]:.0%} and "
                        f"{FIT_WINDOW[1]:.0%} of the run, before the cosine tail flattens the curve): a power law in "
                        f"the excess over dense (exponent {s1:.2f}) reaches it at ~{t1 / 1e6:,.0f}M tokens "
                        f"(~{t1 / e['tokens_per_s'] / 3600:.1f} h at this run's {e['tokens_per_s']:,.0f} tokens/s); "
                        f"a power law in ppl itself (exponent {s2:.2f}, optimistic) at ~{t2 / 1e6:,.0f}M tokens."
                    )
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
