"""Recipes, CLI errors, models and calibration data: every bad input gets its one-line message."""

import pytest
import torch

from compress.cli import main
from compress.config import load_recipe, recipe_from_dict
from compress.data import Corpus, calibration_windows
from compress.errors import UserError
from compress.sources import resolve_model
from compress.stages import StageContext
from prune.stage import PruneConfig, PruneStage


def test_every_shipped_recipe_is_valid():
    from pathlib import Path

    for f in sorted(Path("compress/recipes").glob("*.yaml")):
        r = load_recipe(f)
        assert all(s.spec is not None for s in r.stages if isinstance(s, PruneConfig))


def test_shipped_recipes_load():
    for name, method, pattern in [
        ("wanda-2of4", "wanda", "2:4"),
        ("wanda-50", "wanda", "unstructured"),
        ("magnitude-2of4", "magnitude", "2:4"),
    ]:
        r = load_recipe(f"compress/recipes/{name}.yaml")
        assert (r.stages[0].method, r.stages[0].pattern, r.calibration.nsamples, r.calibration.seqlen) == (
            method,
            pattern,
            128,
            2048,
        )


@pytest.mark.parametrize(
    "data,message",
    [
        ({"prune": {"methd": "wanda"}}, "unknown key 'prune.methd'; allowed: method, pattern, sparsity, ignore"),
        ({"calibraton": {}}, "unknown key 'calibraton'"),
        ({"prune": {"method": "obs"}}, "prune.method 'obs' is unknown; allowed: magnitude, wanda, sparsegpt"),
        ({"prune": {"method": "wanda", "pattern": "2:4", "sparsity": 0.7}}, "means sparsity 0.5 but sparsity is 0.7"),
        ({"prune": {"method": "wanda", "pattern": "unstructured", "sparsity": 1.2}}, r"\[0, 1\)"),
        ({"calibration": {"nsamples": 0}}, "calibration.nsamples must be a positive integer"),
        ({"calibration": {"dataset": "pile"}}, "calibration.dataset 'pile'"),
        ({"eval": {"perplexity": ["ptb"]}}, "eval.perplexity 'ptb' is unknown"),
        ({"dtype": "int8"}, "dtype 'int8' is unknown"),
        ({"prune": {"method": "wanda", "dsnot": {"max_cycles": 0}}}, "prune.dsnot.max_cycles must be >= 1, got 0"),
        ({"prune": {"method": "wanda", "dsnot": {"skip": ["mlp("]}}}, "prune.dsnot.skip entry 'mlp\\(' is not a"),
    ],
)
def test_bad_recipes(data, message):
    with pytest.raises(ValueError, match=message):
        recipe_from_dict(data)


def test_bad_recipe_file_names_the_file(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("prune: {method: wanda, colour: red}\n")
    with pytest.raises(UserError, match=r"r.yaml: unknown key 'prune.colour'"):
        load_recipe(f)


def test_unknown_model_alias():
    with pytest.raises(UserError, match="unknown model 'llama-7b': not an alias"):
        resolve_model("llama-7b")
    assert resolve_model("llama2-7b").location == "meta-llama/Llama-2-7b-hf"
    assert resolve_model("someone/model").kind == "hub"


def test_indivisible_in_features_is_an_error_naming_the_layer(tiny):
    def check(cfg):
        stage = PruneStage(cfg, StageContext(tiny, None, torch.device("cpu"), None, {}))
        stage.check(stage.targets(tiny))

    with pytest.raises(UserError, match=r"model.layers.0.self_attn.q_proj has 64 in-features, not divisible by M=5"):
        check(PruneConfig("magnitude", "3:5"))
    check(PruneConfig("magnitude", "3:5", ignore=(r".*",)))  # everything ignored: nothing to check


def test_cli_existing_output_fails_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_text("old")
    rc = main(["run", "--model", "no-such-model", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "already exists; pass --overwrite" in err
    assert (out / "model.safetensors").read_text() == "old"


def test_cli_unknown_alias_one_line(tmp_path, capsys):
    rc = main(["run", "--model", "llama-7b", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: unknown model 'llama-7b'") and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_cli_bad_recipe(tmp_path, capsys):
    f = tmp_path / "r.yaml"
    f.write_text("prune: {method: wanda, pattern: '2:4', sparsity: 0.3}\n")
    assert main(["run", "--recipe", str(f), "--out", str(tmp_path / "o")]) == 2
    assert "means sparsity 0.5 but sparsity is 0.3" in capsys.readouterr().err


def _docs(n, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ["".join(chr(97 + int(c)) for c in torch.randint(0, 26, (length,), generator=g)) for _ in range(n)]


def test_calibration_is_seeded_and_drawn_from_long_documents(char_tokenizer):
    docs = _docs(20, 300)
    corpus = Corpus("t", docs)
    a = calibration_windows(corpus, char_tokenizer, 8, 64, seed=0)
    b = calibration_windows(corpus, char_tokenizer, 8, 64, seed=0)
    c = calibration_windows(corpus, char_tokenizer, 8, 64, seed=1)
    assert a.shape == (8, 64) and torch.equal(a, b) and not torch.equal(a, c)
    encoded = [torch.tensor(char_tokenizer(d)["input_ids"]) for d in docs]
    for w in a:  # each window is a contiguous slice of one document
        assert any(any(torch.equal(e[i : i + 64], w) for i in range(len(e) - 63)) for e in encoded)


def test_short_documents_are_joined_with_eos(char_tokenizer):
    corpus = Corpus("short", _docs(40, 30))  # 1,200 characters, no document longer than 64
    windows = calibration_windows(corpus, char_tokenizer, 10, 64, seed=0)
    assert windows.shape == (10, 64) and (windows == char_tokenizer.eos_token_id).any()


def test_corpus_too_small_reports_its_size(char_tokenizer):
    with pytest.raises(UserError, match=r"has 300 tokens, fewer than nsamples x seqlen = 8 x 64 = 512"):
        calibration_windows(Corpus("tiny", _docs(3, 100)), char_tokenizer, 8, 64, seed=0)


def test_unreachable_hub_model_is_one_clear_line(tmp_path, capsys):
    rc = main(["run", "--model", "no-such-org-4711/no-such-model", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("error: could not load Hub id no-such-org-4711/no-such-model") and "Fix:" in err[0]
    assert not (tmp_path / "o").exists()


def test_cli_overrides_are_validated(tmp_path, capsys):
    assert main(["run", "--nsamples", "0", "--out", str(tmp_path / "o")]) == 2
    assert "calibration.nsamples must be a positive integer" in capsys.readouterr().err
