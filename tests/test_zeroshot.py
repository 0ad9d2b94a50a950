"""Zero-shot scoring: offline lm-eval tasks equal the standard ones, table/plot, cache, card, push dry run."""

import json
import shutil

import pytest
import torch

from compress.cli import main
from compress.errors import UserError
from compress.hub import check_repo_id, validate_folder
from eval.compare import markdown, plot, rows
from eval.evaluate import Evaluated, evaluate
from eval.lm_tasks import check_tasks, offline_task_manager

ROWS = {
    "boolq": 3270,
    "rte": 277,
    "hellaswag": 10042,
    "winogrande": 1267,
    "arc_easy": 570,
    "arc_challenge": 299,
    "openbookqa": 500,
    # beyond the paper's seven (ASSETS.md); MMLU subjects are scored on test, as lm-eval does
    "piqa": 1838,
    "sciq": 1000,
    "copa": 100,
    "cb": 56,
    "mrpc": 408,
    "sst2": 872,
    "social_iqa": 1954,
    "commonsense_qa": 1221,
    "mmlu_anatomy": 135,
    "mmlu_professional_law": 1534,
}
SAMPLE_ROWS = 4  # rows per task in the rendering test
# config fields that differ on purpose: where the data comes from
DATA_FIELDS = {"dataset_path", "dataset_name", "dataset_kwargs", "tag"}
DATA_FIELDS |= {"training_split", "validation_split", "test_split", "fewshot_split"}


def _behaviour(config, adapted):
    """A task's config but for where its data comes from (and which YAML file said so); a schema adapter (BoolQ)
    is a process_docs of our own, so there process_docs is left out too (its effect is rendered below)."""
    left_out = DATA_FIELDS | ({"process_docs"} if adapted else set())
    out = {k: v for k, v in config.to_dict().items() if k not in left_out}
    out["metadata"] = {k: v for k, v in (out.get("metadata") or {}).items() if k != "config_source"}
    if isinstance(out.get("fewshot_config"), dict):  # split follows the (cleared) training/fewshot split
        out["fewshot_config"] = {k: v for k, v in out["fewshot_config"].items() if k not in left_out | {"split"}}
    return out


def _standard_schema(rows):
    """Embedded rows in the schema of the dataset lm-eval's standard task downloads."""
    if {"answer", "passage"} <= set(rows.column_names):  # google/boolq -> super_glue/boolq
        return rows.map(lambda r: {"idx": 0, "label": int(r["answer"])}, remove_columns=["answer"])
    return rows


def _rendering_sample(tasks):
    """Every offline task outside MMLU and the first and last subject of each MMLU variant."""
    outside, variants = [], {}
    for name, task in sorted(tasks.items()):
        if task.dataset.startswith("hails/mmlu_no_train/"):
            subject = task.dataset.rsplit("/", 1)[1]
            variants.setdefault(name.replace(subject, "*"), []).append(name)
        else:
            outside.append(name)
    assert len(variants) >= 3 and all(len(v) == 57 for v in variants.values()), variants
    return outside + [n for names in variants.values() for n in (names[0], names[-1])]


@pytest.fixture(scope="module")
def offline_tasks():
    return offline_task_manager().load(list(ROWS))["tasks"]


def test_offline_tasks_resolve_with_all_rows(offline_tasks):
    assert {name: len(task.eval_docs) for name, task in offline_tasks.items()} == ROWS


@pytest.mark.slow
def test_offline_tasks_render_exactly_like_the_standard_tasks(monkeypatch):
    """lm-eval's own task objects, fed the same rows (in their own schema) instead of a Hub download, build the
    same config (but for where the data comes from), contexts, choices and targets as our offline tasks: every
    offline task but MMLU's, and two subjects of each MMLU variant."""
    import datasets

    from eval.lm_tasks import hub_task_manager, offline_index

    real = datasets.load_dataset
    hub = {}  # (dataset_path, dataset_name) -> {split: rows}, filled from what our tasks loaded

    def fake_load_dataset(path=None, name=None, **kwargs):
        if path == "arrow":  # ours: the first rows of each embedded split
            loaded = real(path, name, **kwargs)
            return datasets.DatasetDict({k: v.select(range(min(SAMPLE_ROWS, len(v)))) for k, v in loaded.items()})
        return datasets.DatasetDict(hub[(path, name)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    index = offline_index().tasks
    sample = _rendering_sample(index)
    ours = offline_task_manager().load(sample)["tasks"]
    manager = hub_task_manager()  # lm-eval's own index (loads nothing until asked)
    for task in sample:
        cfg = manager.task_index[task].cfg
        splits = hub.setdefault((cfg["dataset_path"], cfg.get("dataset_name")), {})
        for split, loaded in ours[task].dataset.items():
            splits.setdefault(split, _standard_schema(loaded))
        for key in ("training_split", "validation_split", "test_split", "fewshot_split"):  # not embedded
            if cfg.get(key):  # (ARC's test): lm-eval's task scores the rows we score instead
                splits.setdefault(cfg[key], _standard_schema(ours[task].dataset[index[task].scored_split]))
    theirs = manager.load(sample)["tasks"]
    assert set(ours) == set(theirs) == set(sample)
    for task in sample:
        a, b = ours[task], theirs[task]
        adapted = index[task].adapter is not None
        assert _behaviour(a.config, adapted) == _behaviour(b.config, adapted), task
        docs_a, docs_b = list(a.eval_docs), list(b.eval_docs)
        assert 0 < len(docs_a) <= SAMPLE_ROWS and len(docs_a) == len(docs_b), task
        for da, db in zip(docs_a, docs_b, strict=True):
            assert a.fewshot_context(da, num_fewshot=0) == b.fewshot_context(db, num_fewshot=0), task
            assert a.doc_to_target(da) == b.doc_to_target(db), task
            if a.config.doc_to_choice is not None:
                assert a.doc_to_choice(da) == b.doc_to_choice(db), task


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
    from compress.config import CalibrationConfig, EvalConfig, Recipe, RunConfig
    from compress.pipeline import run
    from prune.stage import PruneConfig

    recipe = Recipe(
        name="wanda-2of4",
        calibration=CalibrationConfig(nsamples=4, seqlen=128),
        stages=(PruneConfig("wanda", "2:4"),),
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
