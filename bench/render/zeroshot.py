"""Zero-shot (issue #3): SmolLM2-135M on the seven tasks of the pruning papers (bench/zeroshot.py)."""

from __future__ import annotations


def zeroshot(d: dict, title: str) -> list[str]:
    from eval.compare import TASK_LABELS
    from eval.lm_tasks import PAPER_TASKS

    ZS_TASKS, ZS_LABELS = PAPER_TASKS, [TASK_LABELS[t] for t in PAPER_TASKS]  # noqa: N806
    run, cal = d["run"], d["calibration"]
    ck = d["checkpoints"]
    limit = next(iter(ck.values()))["limit"]
    lines = [
        f"### {title}",
        "",
        f"Command: `{run['command']}` — machine: {run['machine']} — date: {run['date']}.",
        f"Checkpoints made by the pipeline with {cal['nsamples']} × {cal['seqlen']} tokens of `{cal['dataset']}`, "
        f"model in {d['dtype']}; lm-eval 0.4.13, 0-shot, lm-eval's own task definitions on the embedded "
        f"validation files ({'full sets' if limit is None else f'first {limit} examples per task'}; ARC and "
        "OBQA use validation, the papers use test). `acc` in %, ± its standard error; mean = mean `acc`.",
        "",
        "| checkpoint | " + " | ".join(ZS_LABELS) + " | mean | size (MB) | eval wall (s) |",
        "|---|" + "---:|" * (len(ZS_LABELS) + 3),
    ]
    for name, r in ck.items():
        cells = [f"{100 * r[t]['acc']:.1f} ± {100 * r[t]['acc_stderr']:.1f}" for t in ZS_TASKS]
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {100 * r['mean_acc']:.2f} | "
            f"{r['size_bytes'] / 1e6:.0f} | {r['wall_s']:.0f} |"
        )
    norm = [
        f"{name}: "
        + ", ".join(
            f"{lab} {100 * r[t]['acc_norm']:.1f}"
            for t, lab in zip(ZS_TASKS, ZS_LABELS, strict=True)
            if r[t].get("acc_norm") is not None
        )
        for name, r in ck.items()
    ]
    lines += ["", "`acc_norm` where the task has it — " + "; ".join(norm) + "."]
    lines += [f"{name}: {r['wall_s_note']}." for name, r in ck.items() if r.get("wall_s_note")]
    lines.append("")
    return lines
