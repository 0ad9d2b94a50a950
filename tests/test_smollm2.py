"""End to end on the real SmolLM2-135M (embedded asset): calibrate -> prune -> perplexity -> export -> load."""

import json

import pytest
import torch

from compress.config import CalibrationConfig, EvalConfig, Recipe, RunConfig
from compress.loading import load_checkpoint
from compress.pipeline import evaluate_perplexity, run
from prune.masks import satisfies_nm
from prune.stage import PruneConfig

pytestmark = pytest.mark.slow

CAL = CalibrationConfig(dataset="olmo-mix", nsamples=8, seqlen=256)
EVAL = EvalConfig(perplexity=("wiki",), seqlen=512, max_windows=4)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = {}
    for method in ("wanda", "magnitude"):
        recipe = Recipe(name=f"{method}-2of4", calibration=CAL, stages=(PruneConfig(method, "2:4"),), eval=EVAL)
        folder = tmp_path_factory.mktemp("runs") / method
        out[method] = (
            run(RunConfig("smollm2-135m", recipe, device="cpu"), folder, progress=False, log=lambda m: None),
            folder,
        )
    return out


def test_wanda_beats_magnitude_at_2of4(reports):
    wanda, magnitude = reports["wanda"][0]["perplexity"]["wiki"], reports["magnitude"][0]["perplexity"]["wiki"]
    assert wanda["dense"] == pytest.approx(magnitude["dense"], rel=1e-9)
    assert wanda["dense"] < wanda["compressed"] < magnitude["compressed"]


def test_exported_checkpoint_is_24_and_reproduces_its_perplexity(reports):
    report, folder = reports["wanda"]
    on_disk = json.loads((folder / "report.json").read_text())
    assert on_disk["perplexity"] == report["perplexity"] and on_disk["config"]["recipe"]["name"] == "wanda-2of4"
    assert report["summary"]["pruned_linears"] == 210 and report["export"]["compressed_modules"] == 210
    assert set(report["timings_s"]) >= {"load_model", "calibration_data", "prune", "eval_dense", "export"}
    model, tokenizer = load_checkpoint(folder)
    for name in report["layers"]:
        assert satisfies_nm(model.get_submodule(name).weight, 2, 4), name
    ppl = evaluate_perplexity(model, tokenizer, EVAL, torch.device("cpu"), progress=False)["wiki"]["ppl"]
    assert ppl == pytest.approx(report["perplexity"]["wiki"]["compressed"], rel=1e-5)


def test_generate_on_the_compressed_form_matches_the_dense_decompressed_model(reports, capsys):
    """`python -m compress generate` (CPU reference path of the 2:4 runtime) gives the tokens of the
    dense-decompressed checkpoint."""
    from compress.cli import main
    from compress.runtime.generate import generate

    _, folder = reports["wanda"]
    prompt = "The capital of France is"
    sparse = generate(folder, prompt, max_new_tokens=10, log=lambda m: None)
    model, tokenizer = load_checkpoint(folder)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    dense = model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert sparse["tokens"] == dense[0, ids.shape[1] :].tolist()
    fast = generate(folder, prompt, max_new_tokens=10, log=lambda m: None, fast=True)  # the runtime's own loop
    assert fast["tokens"] == sparse["tokens"]
    assert main(["generate", "--model", str(folder), "--prompt", prompt, "--max-new-tokens", "10"]) == 0
    assert capsys.readouterr().out.strip() == sparse["text"].strip()
