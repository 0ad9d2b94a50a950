"""Side-by-side table (terminal, Markdown, JSON) and plot of evaluated checkpoints against the dense model."""

from __future__ import annotations

import json
from pathlib import Path

from eval.evaluate import Evaluated
from eval.zeroshot import mean_acc

TASK_LABELS = {
    "boolq": "BoolQ",
    "rte": "RTE",
    "hellaswag": "HellaSwag",
    "winogrande": "WinoGrande",
    "arc_easy": "ARC-e",
    "arc_challenge": "ARC-c",
    "openbookqa": "OBQA",
}


def rows(results: list[Evaluated]) -> list[dict]:
    """One row per model; the first is the baseline for the deltas. Accuracies in %."""
    base = None
    out = []
    for r in results:
        mean = 100 * mean_acc(r.zeroshot)
        base = mean if base is None else base
        out.append(
            {
                "name": r.name,
                "model": r.model,
                "acc": {t: 100 * v["acc"] for t, v in r.zeroshot.items()},
                "acc_norm": {t: 100 * v["acc_norm"] for t, v in r.zeroshot.items() if "acc_norm" in v},
                "acc_stderr": {
                    t: 100 * v["acc_stderr"] for t, v in r.zeroshot.items() if v.get("acc_stderr") is not None
                },
                "mean_acc": mean,
                "delta_vs_dense": mean - base,
                "perplexity": dict(r.perplexity),
                "size_mb": r.size_bytes / 1e6,
                "sparsity": r.sparsity,
                "bits_per_param": 8 * r.size_bytes / r.parameters if r.parameters else None,
            }
        )
    return out


def markdown(table: list[dict], note: str = "") -> str:
    tasks = list(table[0]["acc"])
    ppl_sets = list(table[0]["perplexity"])
    head = [
        "model",
        *[TASK_LABELS.get(t, t) for t in tasks],
        "mean acc",
        "Δ vs dense",
        *[f"ppl {d}" for d in ppl_sets],
        "size (MB)",
        "sparsity",
        "bits/param",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for r in table:
        cells = [
            r["name"],
            *[f"{r['acc'][t]:.1f}" for t in tasks],
            f"{r['mean_acc']:.2f}",
            f"{r['delta_vs_dense']:+.2f}",
            *[f"{r['perplexity'][d]:.2f}" for d in ppl_sets],
            f"{r['size_mb']:.0f}",
            f"{r['sparsity']:.1%}",
            "" if r["bits_per_param"] is None else f"{r['bits_per_param']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def plot(table: list[dict], path: Path) -> None:
    """Mean accuracy and perplexity against size on disk, one point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ppl_sets = list(table[0]["perplexity"])
    fig, axes = plt.subplots(1, 2 if ppl_sets else 1, figsize=(11 if ppl_sets else 6, 4.2), squeeze=False)
    ax = axes[0][0]
    for r in table:
        ax.scatter(r["size_mb"], r["mean_acc"])
        ax.annotate(r["name"], (r["size_mb"], r["mean_acc"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("size on disk (MB)")
    ax.set_ylabel("mean zero-shot acc (%)")
    ax.grid(alpha=0.3)
    if ppl_sets:
        ax = axes[0][1]
        d = ppl_sets[0]
        for r in table:
            ax.scatter(r["size_mb"], r["perplexity"][d])
            ax.annotate(
                r["name"], (r["size_mb"], r["perplexity"][d]), textcoords="offset points", xytext=(5, 4), fontsize=8
            )
        ax.set_yscale("log")
        ax.set_xlabel("size on disk (MB)")
        ax.set_ylabel(f"{d} perplexity (log)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def note(meta: dict) -> str:
    limit = meta.get("limit")
    return (
        "Zero-shot accuracy (%, lm-eval `acc`, 0-shot; mean = mean of `acc` over tasks, the papers' convention); "
        f"{'full sets' if not limit else f'first {limit} examples per task'}, tasks from {meta.get('task_source')}; "
        f"perplexity on {meta.get('ppl_max_windows') or 'all'} windows of {meta.get('ppl_seqlen')} tokens."
    )


def write(table: list[dict], out: Path, meta: dict, md: str) -> dict[str, Path]:
    """compare.md (`md`, the table's `markdown`), compare.json and compare.png under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"md": out / "compare.md", "json": out / "compare.json", "png": out / "compare.png"}
    files["md"].write_text(md)
    files["json"].write_text(json.dumps({"meta": meta, "rows": table}, indent=2) + "\n")
    plot(table, files["png"])
    return files
