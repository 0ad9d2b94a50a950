"""Zero-shot scoring: offline lm-eval tasks equal the standard ones, table/plot, cache, card, push dry run."""

import json
import shutil

import pytest
import torch

from compress.cli import main
from compress.compare import markdown, plot, rows
from compress.errors import UserError
from compress.evaluate import Evaluated, evaluate
from compress.hub import check_repo_id, validate_folder
from compress.lm_tasks import PAPER_TASKS, check_tasks, offline_task_manager

ROWS = {
    "boolq": 3270,
    "rte": 277,
    "hellaswag": 10042,
    "winogrande": 1267,
    "arc_easy": 570,
    "arc_challenge": 299,
    "openbookqa": 500,
}


def _standard_schema(task, row):
    """The embedded rows in the schema of the dataset lm-eval's standard task downloads."""
    if task == "boolq":  # google/boolq -> super_glue/boolq
        return {"question": row["question"], "passage": row["passage"], "idx": 0, "label": int(row["answer"])}
    return row


@pytest.fixture(scope="module")
def offline_tasks():
    from lm_eval.tasks import get_task_dict

    return get_task_dict(list(PAPER_TASKS), offline_task_manager(list(PAPER_TASKS)))


def test_offline_tasks_resolve_with_all_rows(offline_tasks):
    assert {name: len(task.validation_docs()) for name, task in offline_tasks.items()} == ROWS


@pytest.mark.slow
def test_offline_tasks_render_exactly_like_the_standard_tasks(offline_tasks, monkeypatch):
    """lm-eval's standard task objects, fed the same rows (in their own schema) instead of a Hub download,
    render the same context, choices and target as our offline tasks."""
    import datasets
    from lm_eval.tasks import TaskManager, get_task_dict

    real = datasets.load_dataset
    rows = {
        name: [dict(d) for d in task.dataset["validation"].select(range(5))] for name, task in offline_tasks.items()
    }
    by_path = {}

    def fake_load_dataset(path=None, name=None, **kwargs):
        if path == "arrow":
            return real(path, name, **kwargs)
        task = by_path[(path, name)]
        split = datasets.Dataset.from_list([_standard_schema(task, r) for r in rows[task]])
        return datasets.DatasetDict({"train": split, "validation": split, "test": split})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    manager = TaskManager()
    for task in PAPER_TASKS:
        cfg = manager.task_index[task].cfg
        by_path[(cfg["dataset_path"], cfg.get("dataset_name"))] = task
    standard = get_task_dict(list(PAPER_TASKS), manager)
    for task in PAPER_TASKS:
        ours, theirs = offline_tasks[task], standard[task]
        for doc_ours, doc_theirs in zip(list(ours.validation_docs())[:5], theirs.validation_docs(), strict=True):
            assert ours.doc_to_text(doc_ours) == theirs.doc_to_text(doc_theirs), task
            assert ours.doc_to_choice(doc_ours) == theirs.doc_to_choice(doc_theirs), task
            assert ours.doc_to_target(doc_ours) == theirs.doc_to_target(doc_theirs), task


def test_unknown_task_lists_close_matches():
    with pytest.raises(UserError, match="unknown task 'hellaswg'; did you mean hellaswag"):
        check_tasks(["hellaswg"], offline=True)


def _evaluated(name, accs, ppl, size, sparsity):
    z = {
        t: {"acc": a, "acc_stderr": 0.01, **({"acc_norm": a + 0.01} if t == "arc_easy" else {})}
        for t, a in accs.items()
    }
    return Evaluated(
        name,
        f"/x/{name}",
        "fp",
        zeroshot=z,
        perplexity={"wiki": ppl},
        size_bytes=size,
        parameters=100,
        sparsity=sparsity,
    )


def test_table_and_plot_from_fixed_results(tmp_path):
    table = rows(
        [
            _evaluated("dense", {"rte": 0.6, "arc_easy": 0.5}, 20.0, 400, 0.0),
            _evaluated("2of4", {"rte": 0.5, "arc_easy": 0.4}, 30.0, 250, 0.45),
        ]
    )
    assert table[0]["mean_acc"] == pytest.approx(55.0) and table[1]["mean_acc"] == pytest.approx(45.0)
    assert table[1]["delta_vs_dense"] == pytest.approx(-10.0) and table[1]["bits_per_param"] == pytest.approx(20.0)
    md = markdown(table)
    assert "| 2of4 | 50.0 | 40.0 | 45.00 | -10.00 | 30.00 | 0 | 45.0% | 20.0 |" in md
    plot(table, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_repo_names():
    for bad in ("noslash", "a/b/c", "/name", "owner/", "own er/name"):
        with pytest.raises(UserError, match="is not 'owner/name'"):
            check_repo_id(bad)
    assert check_repo_id("alice/smollm2-2of4") == "alice/smollm2-2of4"


def test_limit_zero_is_rejected(capsys):
    assert main(["eval", "--model", "smollm2-135m", "--limit", "0", "--task-source", "embedded"]) == 2
    assert "--limit must be a positive number" in capsys.readouterr().err


def test_folder_without_weights_or_with_broken_config(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="config.json is broken"):
        validate_folder(folder)
    (folder / "config.json").write_text("{}")
    with pytest.raises(UserError, match="no model.safetensors"):
        validate_folder(folder)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real Wanda 2:4 SmolLM2 checkpoint (small calibration)."""
    from compress.config import CalibrationConfig, EvalConfig, PruneConfig, Recipe, RunConfig
    from compress.pipeline import run

    recipe = Recipe(
        name="wanda-2of4",
        calibration=CalibrationConfig(nsamples=4, seqlen=128),
        prune=PruneConfig("wanda", "2:4"),
        eval=EvalConfig(("wiki",), 256, 2),
    )
    folder = tmp_path_factory.mktemp("zs") / "ckpt"
    run(RunConfig("smollm2-135m", recipe, device="cpu"), folder, progress=False, log=lambda m: None)
    return folder


@pytest.mark.slow
def test_real_lm_eval_run_cache_and_invalidation(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_COMPRESS_CACHE", str(tmp_path / "cache"))  # fresh results cache
    monkeypatch.setattr("compress.assets.cache_dir", lambda: tmp_path / "cache")
    kwargs = dict(
        tasks=["rte", "arc_easy"],
        limit=3,
        device=torch.device("cpu"),
        dtype=torch.float32,
        task_source="embedded",
        log=lambda m: None,
    )
    first = evaluate("w", str(checkpoint), **kwargs)
    assert first.cached == [] and set(first.zeroshot) == {"rte", "arc_easy"}
    assert 0 <= first.zeroshot["rte"]["acc"] <= 1 and "acc_norm" in first.zeroshot["arc_easy"]
    second = evaluate("w", str(checkpoint), **kwargs)
    assert second.cached == ["rte", "arc_easy"] and second.zeroshot == first.zeroshot
    changed = tmp_path / "changed"
    shutil.copytree(checkpoint, changed)
    from safetensors.torch import load_file, save_file

    tensors = load_file(changed / "model.safetensors")
    tensors["model.norm.weight"] = tensors["model.norm.weight"] * 1.01
    save_file(tensors, changed / "model.safetensors")
    third = evaluate("w", str(changed), **kwargs)
    assert third.cached == [] and third.fingerprint != first.fingerprint


@pytest.mark.slow
def test_compare_writes_table_card_and_push_dry_run(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("compress.assets.cache_dir", lambda: tmp_path / "cache")
    out = tmp_path / "cmp"
    rc = main(
        [
            "compare",
            f"base={checkpoint}",
            f"again={checkpoint}",
            "--tasks",
            "rte",
            "--limit",
            "2",
            "--ppl",
            "wiki",
            "--ppl-seqlen",
            "256",
            "--ppl-max-windows",
            "1",
            "--task-source",
            "embedded",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads((out / "compare.json").read_text())
    assert [r["name"] for r in data["rows"]] == ["base", "again"] and data["rows"][1]["delta_vs_dense"] == 0
    assert (out / "compare.png").exists() and "| base |" in (out / "compare.md").read_text()
    card = (checkpoint / "README.md").read_text()
    report = json.loads((checkpoint / "report.json").read_text())
    ppl = report["perplexity"]["wiki"]
    assert f"{ppl['dense']:.3f}" in card and f"{ppl['compressed']:.3f}" in card
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "- '2:4'" in card
    assert f"{data['rows'][0]['acc']['rte']:.1f}" in card and "license: apache-2.0" in card
    capsys.readouterr()
    assert main(["push", "--model-dir", str(checkpoint), "--repo", "alice/smollm2-2of4", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "would upload" in printed and "model.safetensors" in printed and "dry run: nothing uploaded" in printed
    assert main(["push", "--model-dir", str(checkpoint), "--repo", "alice/smollm2-2of4"]) == 2
    err = capsys.readouterr().err
    assert ("unreachable" in err or "no Hugging Face token" in err) and "pushed:" not in err
