"""The finetune stage in the pipeline: prune 2:4 -> AST -> export, on a tiny model with real held-out texts."""

import json

import pytest
import torch
from safetensors.torch import load_file

from compress.config import RunConfig, recipe_from_dict
from compress.export import unpack_bitmask
from compress.loading import load
from compress.pipeline import run


@pytest.fixture
def tiny_folder(tmp_path):
    from tests.recipe_checkpoints import tiny_folder as write

    return write(tmp_path / "tiny")


def _recipe(tmp_path, finetune: dict, source: str | None = None, tasks=("piqa",)):
    data = {"sources": [source] if source else ["olmo-mix"], "max_source_tokens": 20_000, "heldout_tasks": tasks}
    return recipe_from_dict(
        {
            "calibration": {"nsamples": 4, "seqlen": 32},
            "stages": [
                {"prune": {"method": "sparsegpt", "pattern": "2:4"}},
                {
                    "finetune": {
                        "steps": 4,
                        "micro_batch": 2,
                        "seqlen": 32,
                        "grad_accum": 1,
                        "lr": 1e-3,
                        "warmup_steps": 1,
                        "masked_decay_warmup": 4,
                        "mask_interval": 2,
                        "checkpoint_every": 2,
                        "eval_every": 2,
                        "gradient_checkpointing": False,
                        "data": data,
                        **finetune,
                    }
                },
            ],
            "eval": {"perplexity": ["wiki"], "seqlen": 64, "max_windows": 1},
        }
    )


def test_prune_then_ast_exports_the_trained_masks(tmp_path, tiny_folder):
    out = tmp_path / "out"
    recipe = _recipe(tmp_path, {}, tasks=("arc_easy", "boolq"))
    report = run(RunConfig(str(tiny_folder), recipe), out, progress=False, log=lambda m: None)
    assert [s["kind"] for s in report["stages"]] == ["prune", "finetune"]
    ft = report["stages"][1]
    assert ft["metrics"]["train_tokens"] == 4 * 2 * 32 and len(ft["metrics"]["curve"]) == 2  # step 2 and the end
    assert ft["pruned_values_from_dense"] == sum(r["shape"][0] * r["shape"][1] // 2 for r in report["layers"].values())
    assert ft["data"]["heldout_sets"] == ["arc_easy", "boolq", "wiki"]
    assert report["export"]["format"] == "sparse-24-bitmask" and report["export"]["compressed_modules"] == 14
    # what was exported is the trained model: 2:4 exact, and its bitmask is the final mask of training
    tensors = load_file(out / "model.safetensors")
    model = load(out, None).model
    for name, module in model.named_modules():
        if f"{name}.bitmask" in tensors:
            keep = unpack_bitmask(tensors[f"{name}.bitmask"], tuple(module.weight.shape))
            assert torch.equal(module.weight != 0, keep), name
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["config"]["recipe"]["stages"][1]["finetune"]["steps"] == 4


def test_training_texts_that_overlap_held_out_ones_are_dropped(tmp_path, tiny_folder):
    from compress.data import perplexity_text

    wiki = perplexity_text("wiki").split("\n")
    leak = tmp_path / "leak.txt"
    leak.write_text("\n\n".join(["A story of our own making, long enough to train on. " * 20] * 3 + wiki[:2]))
    recipe = _recipe(tmp_path, {"eval_every": 0}, source=str(leak))
    report = run(RunConfig(str(tiny_folder), recipe), tmp_path / "out", progress=False, log=lambda m: None)
    dropped = report["stages"][1]["data"]["dropped_overlapping_heldout"][str(leak)]
    assert dropped.get("wiki", 0) >= 1


def test_a_run_cut_in_training_resumes_with_the_same_self_distillation_texts(tmp_path, tiny_folder, monkeypatch):
    """A run killed mid-training (a GPU call cut at 10 minutes) is resumed by running it again: the sampled texts
    come from the work folder's cache, training continues from its checkpoint, and the export equals that of an
    uninterrupted run. The stages' work folder is removed once the checkpoint is written."""
    import finetune.stage

    recipe = _recipe(
        tmp_path,
        {
            "eval_every": 0,
            "data": {
                "sources": ["olmo-mix"],
                "max_source_tokens": 20_000,
                "heldout_tasks": ["piqa"],
                "self_distill_texts": 4,
                "self_distill_new_tokens": 24,
                "self_distill_batch": 4,
            },
        },
    )
    whole = tmp_path / "whole"
    run(RunConfig(str(tiny_folder), recipe), whole, progress=False, log=lambda m: None)
    assert not (tmp_path / ".whole.stages").exists()

    real = finetune.stage.train_ast

    class Cut(Exception):
        pass

    def cut_at_step_3(*a, **kw):
        def on_step(step, model):
            if step == 3:
                raise Cut

        return real(*a, **kw, on_step=on_step)

    out = tmp_path / "out"
    monkeypatch.setattr(finetune.stage, "train_ast", cut_at_step_3)
    with pytest.raises(Cut):
        run(RunConfig(str(tiny_folder), recipe), out, progress=False, log=lambda m: None)
    assert (tmp_path / ".out.stages" / "finetune" / "self-distill.json").is_file() and not out.exists()
    monkeypatch.setattr(finetune.stage, "train_ast", real)
    logs: list[str] = []
    report = run(RunConfig(str(tiny_folder), recipe), out, progress=False, log=logs.append)
    assert any("self-distillation texts from" in m for m in logs)
    assert report["stages"][1]["metrics"]["resumed_from"] == 2  # checkpoint_every 2
    assert report["stages"][1]["data"]["sources"]["self-distill"]["tokens"] > 0
    a, b = load_file(whole / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_finetune_without_a_2of4_prune_stage_is_refused():
    with pytest.raises(ValueError, match=r"stages\[0\].finetune: finetune \(AST\) trains the 2:4 masks"):
        recipe_from_dict({"stages": [{"finetune": {}}]})
    with pytest.raises(ValueError, match=r"stages\[1\].finetune"):
        recipe_from_dict({"stages": [{"prune": {"pattern": "unstructured", "sparsity": 0.5}}, {"finetune": {}}]})


def test_heldout_task_sets_expand_to_their_tasks(monkeypatch):
    import eval.heldout as heldout

    monkeypatch.setattr(heldout, "task_text", lambda task: f"text of {task}")
    got = heldout.heldout_texts((), ("discriminating", "piqa", "boolq"))
    assert got == {t: f"text of {t}" for t in ("hellaswag", "arc_easy", "piqa", "boolq")}


def test_prune_then_ast_with_quest_qat_exports_the_quantized_trained_model(tmp_path, tiny_folder):
    """2:4 + AST + QuEST-QAT: the export holds the QuEST codes of the trained weights, and loads back to exactly
    the evaluated model, 2:4 zeros included."""
    from compress.checkpoint_format import OURS_QUANT

    out = tmp_path / "out"
    recipe = _recipe(tmp_path, {"qat": "quest", "qat_bits": 4}, tasks=("arc_easy",))
    report = run(RunConfig(str(tiny_folder), recipe), out, progress=False, log=lambda m: None)
    assert report["summary"]["finetune_qat"] == "quest w4"
    assert report["export"]["format"] == OURS_QUANT
    loaded = load(out, None).model
    for name, module in loaded.named_modules():
        if name in report["layers"]:
            W = module.weight
            assert bool(((W.reshape(-1, 4) != 0).sum(-1) <= 2).all()), name
            # QuEST per row: kept values are odd multiples h, 3h, ..., 15h of half a step h (midpoint grid, no zero
            # level); the smallest magnitude is one of them, so some odd j makes every v / (min|v| / j) odd <= 15
            for row in W.detach().float():
                v = row[row != 0]
                assert any(_on_odd_grid(v * j / v.abs().min()) for j in range(1, 16, 2)), name


def _on_odd_grid(r: torch.Tensor) -> bool:
    k = r.round()
    return torch.allclose(r, k, atol=1e-3) and bool((k.abs() % 2 == 1).all()) and float(k.abs().max()) <= 15


def test_quant_after_qat_is_refused():
    base = {"prune": {"method": "sparsegpt", "pattern": "2:4"}}
    with pytest.raises(ValueError, match=r"stages\[2\].quant: the finetune stage's QAT already quantized"):
        recipe_from_dict({"stages": [base, {"finetune": {"qat": "quest"}}, {"quant": {"method": "rtn"}}]})
