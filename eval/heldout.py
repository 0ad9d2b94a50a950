"""The texts the project scores a model on — perplexity sets and the embedded zero-shot tasks — so that training
stages can prove they never train on them (finetune/stage.py)."""

from __future__ import annotations

from pathlib import Path

from compress.data import perplexity_text
from eval.lm_tasks import TASK_SETS


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def task_text(task: str) -> str:
    """Every string of every row of the embedded task's scored split, one row per line."""
    import pyarrow as pa

    from compress.assets import asset_path
    from eval.lm_tasks import offline_index

    t = offline_index().tasks[task]
    root = asset_path("hf_datasets")
    lines = []
    for rel in t.files[t.scored_split]:
        with open(Path(root) / rel, "rb") as f:
            table = pa.ipc.open_stream(f).read_all()
        for row in table.to_pylist():
            lines.append(" ".join(_strings(row)))
    return "\n".join(lines)


def heldout_texts(perplexity_sets: tuple[str, ...], tasks: tuple[str, ...]) -> dict[str, str]:
    """{set name: its text} for the perplexity sets and the zero-shot tasks (names from eval.lm_tasks.TASK_SETS such
    as `paper7` expand to their tasks)."""
    out = {name: perplexity_text(name) for name in perplexity_sets}
    for task in dict.fromkeys(t for spec in tasks for t in TASK_SETS.get(spec, (spec,))):
        out[task] = task_text(task)
    return out
