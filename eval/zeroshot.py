"""Zero-shot accuracy through lm-eval (0.4.x) `simple_evaluate` on an in-memory transformers model.

Reported per task: `acc`, `acc_norm` (where the task defines it) and their standard errors; the summary is
the mean of `acc` over the tasks -- the convention of the Wanda/SparseGPT papers (wanda issue #31).
"""

from __future__ import annotations

import torch
from torch import nn


def summarize(results: dict[str, dict]) -> dict:
    """lm-eval's `results` ({task: {"acc,none": ...}}) -> {task: {acc, acc_stderr, acc_norm, acc_norm_stderr}}."""
    out = {}
    for task, r in sorted(results.items()):
        entry = {}
        for metric in ("acc", "acc_norm"):
            if f"{metric},none" in r:
                entry[metric] = float(r[f"{metric},none"])
                stderr = r.get(f"{metric}_stderr,none")
                entry[f"{metric}_stderr"] = float(stderr) if isinstance(stderr, (int, float)) else None
        out[task] = entry
    return out


def mean_acc(per_task: dict[str, dict]) -> float:
    return sum(r["acc"] for r in per_task.values()) / len(per_task)


# Accuracy of a uniform guess: 1 / number of choices (ARC-Easy has a few 3- and 5-choice questions; 4 is the rule).
CHANCE = {
    "hellaswag": 0.25,
    "arc_easy": 0.25,
    "arc_challenge": 0.25,
    "openbookqa": 0.25,
    "piqa": 0.5,
    "boolq": 0.5,
    "rte": 0.5,
    "winogrande": 0.5,
}


def recovery(scores: dict[str, dict], dense: dict[str, dict], metrics: dict[str, str]) -> float:
    """Mean over `metrics` ({task: metric}, e.g. eval.lm_tasks.DISCRIMINATING) of (acc - chance) / (dense - chance):
    1 = as good as dense, 0 = no better than guessing. Plain accuracy flatters broken models, this does not."""
    out = []
    for task, metric in metrics.items():
        chance, d = CHANCE[task], dense[task][metric]
        if d - chance < 0.02:
            raise ValueError(f"dense {task} {metric} {d:.3f} is not above chance {chance}: recovery is undefined")
        out.append((scores[task][metric] - chance) / (d - chance))
    return sum(out) / len(out)


@torch.no_grad()
def zero_shot(
    model: nn.Module,
    tokenizer,
    tasks: list[str],
    task_manager,
    *,
    device: torch.device,
    limit: int | None = None,
    batch_size: int = 8,
) -> dict[str, dict]:
    """Evaluate `model` (moved to `device`) 0-shot on `tasks`; returns `summarize(...)` of lm-eval's results."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    model.to(device).eval()
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))
        out = simple_evaluate(
            model=lm,
            tasks=tasks,
            num_fewshot=0,
            limit=limit,
            task_manager=task_manager,
            log_samples=False,
            random_seed=0,
            numpy_random_seed=1234,
            torch_random_seed=1234,
            fewshot_random_seed=1234,
            bootstrap_iters=1000,
        )
    finally:
        model.to("cpu")
    return summarize(out["results"])
