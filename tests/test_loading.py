"""One loading entry point: the format comes from config.json (not report.json), 2:4 and packed folders decode
bit-exactly whoever wrote them, incomplete / non-finite / undecodable loads are refused with one line, the results
cache is versioned, and exports survive a full disk and clean up after killed ones."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from compress.cli import main
from compress.config import EvalConfig
from compress.errors import UserError
from compress.export import save_checkpoint
from compress.models import load_model
from prune.config import NM
from prune.magnitude import magnitude_mask
from tests.conftest import TINY_DIMS, tiny_llama

RECIPE = str(Path(__file__).resolve().parents[1] / "compress" / "recipes" / "wanda-2of4.yaml")


def char_tokenizer():
    """A real (saveable, offline) tokenizer for tiny models: one id per printable character, EOS 127."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "</s>": 127, **{chr(31 + i): i for i in range(1, 96)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")


def tiny_qwen2(seed: int = 0):
    """A second architecture: Qwen2 has biases on q/k/v, so the 2:4 decode must keep them too."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**TINY_DIMS, num_hidden_layers=2, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config).eval()


def tiny_tied_llama():
    from transformers import LlamaForCausalLM

    model = tiny_llama()
    model.config.tie_word_embeddings = True
    torch.manual_seed(1)
    return LlamaForCausalLM(model.config).eval()


def prune_24(model) -> set[str]:
    """Zero 2 of every 4 weights of each decoder Linear (magnitude); returns their names."""
    names = set()
    for name, m in model.model.layers.named_modules():
        if isinstance(m, torch.nn.Linear):
            m.weight.data *= magnitude_mask(m.weight.data, NM(2, 4))
            names.add(f"model.layers.{name}")
    return names


def export_24(folder: Path, model=None, **kw) -> tuple[torch.nn.Module, Path]:
    """Our 2:4 export (sparse-24-bitmask) with a tokenizer and no report.json (deleted / never written)."""
    model = model if model is not None else tiny_llama()
    names = prune_24(model)
    dense = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n not in names]
    out = save_checkpoint(model, char_tokenizer(), folder, compress_24_modules=names, ignore=dense, **kw)
    assert not (out / "report.json").exists()
    return model, out


def save_dense(folder: Path, model=None) -> tuple[torch.nn.Module, Path]:
    """A folder written by transformers itself (model.save_pretrained), as pulled from the Hub."""
    model = model if model is not None else tiny_llama()
    model.save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return model, folder


def assert_same_weights(loaded, ref) -> None:
    got, want = loaded.state_dict(), ref.state_dict()
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k


def edit_tensors(folder: Path, edit) -> None:
    f = folder / "model.safetensors"
    tensors = load_file(f)
    edit(tensors)
    save_file(tensors, f, metadata={"format": "pt"})


def set_quantization_config(folder: Path, qc) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = qc
    (folder / "config.json").write_text(json.dumps(config))


# ------------------------------------------------------------------ 1. the format decides the route


@pytest.mark.parametrize("make", [tiny_llama, tiny_tied_llama, tiny_qwen2], ids=["llama", "llama-tied", "qwen2"])
def test_load_model_on_a_24_folder_without_report_is_bit_exact(tmp_path, make):
    """Old code: plain from_pretrained, every compressed Linear randomly initialised."""
    model, folder = export_24(tmp_path / "ckpt", make())
    loaded, tok, _ = load_model(str(folder), torch.float32)
    assert_same_weights(loaded, model)
    if model.config.tie_word_embeddings:
        assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_an_llm_compressor_style_config_routes_the_same_way(tmp_path):
    """sparse-only compressed-tensors config as llm-compressor writes it (empty config_groups, version, status)."""
    model, folder = export_24(tmp_path / "ckpt")
    qc = json.loads((folder / "config.json").read_text())["quantization_config"]
    qc.update(config_groups={}, version="0.9.4", quantization_status="compressed", kv_cache_scheme=None)
    qc["sparsity_config"]["ignore"] = ["re:.*lm_head"]
    set_quantization_config(folder, qc)
    loaded, _, _ = load_model(str(folder), torch.float32)
    assert_same_weights(loaded, model)


def test_evaluate_on_a_24_folder_without_report_measures_the_saved_weights(tmp_path, monkeypatch):
    """Old code: perplexity of a random model (exit 0), cached under the weights' hash."""
    from compress.pipeline import evaluate_perplexity
    from eval.evaluate import evaluate

    monkeypatch.setenv("LLM_COMPRESS_CACHE", str(tmp_path / "cache"))
    model, folder = export_24(tmp_path / "ckpt")
    cfg = EvalConfig(("wiki",), 32, 2)
    kw = dict(tasks=[], perplexity=cfg, device=torch.device("cpu"), dtype=torch.float32, log=lambda m: None)
    result = evaluate("ckpt", str(folder), **kw)
    want = evaluate_perplexity(model, char_tokenizer(), cfg, torch.device("cpu"), progress=False)["wiki"]["ppl"]
    assert result.perplexity["wiki"] == pytest.approx(want, rel=1e-6) and result.cached == []
    assert result.sparsity > 0.3


@pytest.mark.parametrize("int4", [False, True])
def test_a_packed_folder_loads_for_run_and_eval_as_its_dense_weights(tmp_path, int4):
    """Old code: from_pretrained on the packed buffers -> random Linears."""
    from compress.runtime.convert import load_runtime_model, pack

    model, folder = export_24(tmp_path / "ckpt", tiny_llama(hidden=128))
    packed = pack(folder, tmp_path / "packed", int4=int4)
    runtime, _, names = load_runtime_model(packed, torch.device("cpu"))
    loaded, _, _ = load_model(str(packed), torch.float32)
    for name in names:
        lin = loaded.get_submodule(name)
        assert isinstance(lin, torch.nn.Linear) and torch.equal(lin.weight, runtime.get_submodule(name).dense_weight())
        if not int4:
            assert torch.equal(lin.weight, model.get_submodule(name).weight)
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, runtime(ids).logits)


def test_a_hub_id_with_a_24_config_is_downloaded_and_decoded(tmp_path, monkeypatch):
    """Old code: from_pretrained(hub id) -> random Linears (here: the Hub is not even asked through snapshot)."""
    import huggingface_hub

    model, folder = export_24(tmp_path / "ckpt")
    calls = []

    def snapshot_download(repo_id, allow_patterns=None, **kwargs):
        calls.append((repo_id, allow_patterns))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr("compress.sources.hub_reachable", lambda *a, **k: False)
    loaded, _, source = load_model("alice/tiny-2of4", torch.float32)
    assert_same_weights(loaded, model)
    assert source.kind == "hub" and calls[0] == ("alice/tiny-2of4", ["config.json"]) and len(calls) == 2


def test_a_hub_id_with_an_unsupported_format_is_refused_before_its_weights_download(tmp_path, monkeypatch):
    import huggingface_hub

    _, folder = export_24(tmp_path / "ckpt")
    set_quantization_config(folder, {"quant_method": "compressed-tensors", "format": "marlin-24", "config_groups": {}})
    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **kw: calls.append(kw) or str(folder))
    monkeypatch.setattr("compress.sources.hub_reachable", lambda *a, **k: False)
    with pytest.raises(UserError, match="'marlin-24'.*supported: "):
        load_model("alice/tiny-marlin", torch.float32)
    assert [c["allow_patterns"] for c in calls] == [["config.json"]]


UNSUPPORTED = {
    "config_groups": (
        {"quant_method": "compressed-tensors", "format": "int-quantized", "config_groups": {"group_0": {}}},
        "config_groups",
    ),
    "pack-quantized": ({"quant_method": "compressed-tensors", "format": "pack-quantized"}, "pack-quantized"),
    "marlin-24": ({"quant_method": "compressed-tensors", "format": "marlin-24"}, "marlin-24"),
    "sparse-bitmask": (
        {"quant_method": "compressed-tensors", "format": "dense", "sparsity_config": {"format": "sparse-bitmask"}},
        "sparse-bitmask",
    ),
    "gptq": ({"quant_method": "gptq", "bits": 4}, "gptq"),
}


@pytest.mark.parametrize("kind", sorted(UNSUPPORTED))
def test_formats_we_cannot_decode_are_refused_with_one_line(tmp_path, kind, monkeypatch, capsys):
    """Old code: from_pretrained, random Linears or a transformers traceback; eval exit 0."""
    qc, word = UNSUPPORTED[kind]
    _, folder = export_24(tmp_path / "ckpt")
    set_quantization_config(folder, qc)
    with pytest.raises(UserError, match=f"{word}.*cannot be decoded here; supported: ") as e:
        load_model(str(folder), torch.float32)
    assert "\n" not in str(e.value)
    monkeypatch.setenv("LLM_COMPRESS_CACHE", str(tmp_path / "cache"))
    argv = ["eval", "--model", str(folder), "--tasks", "rte", "--task-source", "embedded", "--ppl", "wiki"]
    assert main([*argv, "--device", "cpu", "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and word in err and not (tmp_path / "cache").exists()


# ------------------------------------------------------------------ 2. incomplete loads


@pytest.mark.parametrize("writer", ["save_pretrained", "ours-24"])
def test_a_removed_tensor_is_refused_naming_it(tmp_path, writer):
    """Old code: the missing weight is randomly initialised, no error."""
    _, folder = save_dense(tmp_path / "m") if writer == "save_pretrained" else export_24(tmp_path / "m")
    edit_tensors(folder, lambda t: t.pop("model.layers.1.post_attention_layernorm.weight"))
    with pytest.raises(UserError, match=r"missing tensors 1: model\.layers\.1\.post_attention_layernorm\.weight"):
        load_model(str(folder), torch.float32)


@pytest.mark.parametrize("writer", ["save_pretrained", "ours-24"])
def test_an_unexpected_tensor_is_refused_naming_it(tmp_path, writer):
    """Old code: a warning at most; the stored tensor is silently unused."""
    _, folder = save_dense(tmp_path / "m") if writer == "save_pretrained" else export_24(tmp_path / "m")
    edit_tensors(folder, lambda t: t.update({"model.layers.0.mlp.extra_proj.weight": torch.ones(4, 4)}))
    with pytest.raises(UserError, match=r"unexpected tensors 1: model\.layers\.0\.mlp\.extra_proj\.weight"):
        load_model(str(folder), torch.float32)


@pytest.mark.parametrize("writer", ["save_pretrained", "ours-24"])
def test_a_shape_mismatch_is_refused_naming_it(tmp_path, writer):
    """Old code: transformers' RuntimeError text (save_pretrained) or a torch traceback (ours)."""
    _, folder = save_dense(tmp_path / "m") if writer == "save_pretrained" else export_24(tmp_path / "m")
    edit_tensors(folder, lambda t: t.update({"model.norm.weight": torch.ones(32)}))
    with pytest.raises(UserError, match=r"shape-mismatched tensors .*model\.norm\.weight \(32,\) vs \(64,\)"):
        load_model(str(folder), torch.float32)


def test_many_missing_tensors_show_the_first_few_and_the_count(tmp_path):
    _, folder = save_dense(tmp_path / "m")
    edit_tensors(folder, lambda t: [t.pop(k) for k in list(t) if k.startswith("model.layers.1.")])
    with pytest.raises(UserError) as e:
        load_model(str(folder), torch.float32)
    assert "missing tensors 9: model.layers.1.input_layernorm.weight, " in str(e.value) and ", ..." in str(e.value)


def test_a_parameter_left_on_the_meta_device_is_refused():
    from accelerate import init_empty_weights

    from compress.load_checks import refuse_meta

    with init_empty_weights():
        model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(UserError, match=r"still on the meta device\) 2: 0\.bias, 0\.weight"):
        refuse_meta(model, "x")


# ------------------------------------------------------------------ 3. non-finite weights


@pytest.mark.parametrize("writer", ["save_pretrained", "ours-24"])
def test_a_nan_weight_is_refused_naming_it(tmp_path, writer):
    """Old code: loads, evaluates to NaN, caches it."""
    _, folder = save_dense(tmp_path / "m") if writer == "save_pretrained" else export_24(tmp_path / "m")
    key = "model.layers.0.mlp.up_proj." + ("weight" if writer == "save_pretrained" else "compressed")

    def poison(t):
        t[key][0, 0] = float("nan")
        t["model.norm.weight"][3] = float("inf")

    edit_tensors(folder, poison)
    with pytest.raises(UserError, match=r"non-finite weights .* 2: model\.layers\.0\.mlp\.up_proj\.weight, model\.n"):
        load_model(str(folder), torch.float32)


def test_push_dry_run_refuses_a_nan_checkpoint(tmp_path, capsys):
    """Old code: validate_folder decodes but never looks at the values: 'would upload'."""
    _, folder = export_24(tmp_path / "m")
    (folder / "README.md").write_text("card")
    edit_tensors(folder, lambda t: t["model.embed_tokens.weight"].__setitem__((0, 0), float("nan")))
    assert main(["push", "--model-dir", str(folder), "--repo", "alice/x", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "non-finite" in err and "model.embed_tokens.weight" in err


# ------------------------------------------------------------------ 4. results cache


def test_results_of_old_cache_layout_are_never_read(tmp_path, monkeypatch):
    """Old code: returns the cached perplexity of a random-weight load (1e15) without loading."""
    from eval.evaluate import evaluate, fingerprint

    monkeypatch.setenv("LLM_COMPRESS_CACHE", str(tmp_path / "cache"))
    _, folder = export_24(tmp_path / "ckpt")
    fp = fingerprint(str(folder))
    old = tmp_path / "cache" / "results" / fp
    old.mkdir(parents=True)
    key = f"ppl-wiki-seqlen32-windows2-{torch.float32}"
    (old / f"{key}.json").write_text(json.dumps({"ppl": 1e15, "seqlen": 32, "windows": 2}))
    (old / "meta.json").write_text(json.dumps({"parameters": 1, "sparsity": 0.0, "size_bytes": 1}))
    kw = dict(tasks=[], device=torch.device("cpu"), dtype=torch.float32, log=lambda m: None)
    result = evaluate("ckpt", str(folder), perplexity=EvalConfig(("wiki",), 32, 2), **kw)
    assert result.cached == [] and result.perplexity["wiki"] < 1e6 and result.parameters > 1
    stored = tmp_path / "cache" / "results" / "v2" / fp / f"{key}.json"
    assert json.loads(stored.read_text())["ppl"] == result.perplexity["wiki"]


def test_the_fingerprint_is_of_the_weight_files_with_or_without_report_json(tmp_path, monkeypatch):
    """Old code: without report.json, every *.safetensors in the folder (e.g. Mistral's consolidated.safetensors
    beside the shards) instead of the files the index names."""
    from eval.evaluate import fingerprint

    monkeypatch.setattr("compress.export.SHARD_BYTES", 40_000)
    _, folder = export_24(tmp_path / "ckpt")
    assert (folder / "model.safetensors.index.json").exists()
    save_file({"x": torch.zeros(2)}, folder / "consolidated.safetensors")
    without = fingerprint(str(folder))
    (folder / "report.json").write_text("{}")
    assert fingerprint(str(folder)) == without


# ------------------------------------------------------------------ 5. garbage config.json

GARBAGE = {"not-json": "{not json", "array": "[]", "no-model-type": '{"architectures": ["LlamaForCausalLM"]}'}


@pytest.mark.parametrize("garbage", sorted(GARBAGE))
@pytest.mark.parametrize("cmd", ["generate", "pack", "eval", "run"])
def test_a_garbage_config_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch, garbage, cmd):
    """Old code: generate/pack trace back in is_packed's json.loads; eval/run print transformers' reason."""
    monkeypatch.setenv("LLM_COMPRESS_CACHE", str(tmp_path / "cache"))
    _, folder = export_24(tmp_path / "ckpt")
    (folder / "config.json").write_text(GARBAGE[garbage])
    argv = {
        "generate": ["generate", "--model", str(folder), "--prompt", "hi", "--device", "cpu"],
        "pack": ["pack", "--model", str(folder), "--out", str(tmp_path / "packed")],
        "eval": ["eval", "--model", str(folder), "--tasks", "rte", "--task-source", "embedded", "--device", "cpu"],
        "run": ["run", "--model", str(folder), "--recipe", RECIPE, "--out", str(tmp_path / "out"), "--device", "cpu"],
    }[cmd]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert f"{folder / 'config.json'} is broken: not a valid config" in err
    assert not (tmp_path / "packed").exists() and not (tmp_path / "out").exists()


# ------------------------------------------------------------------ 6. disk full

ENOSPC_ERRORS = {
    "oserror": OSError(errno.ENOSPC, "No space left on device"),
    "safetensors": SafetensorError(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
    ),
}


@pytest.mark.parametrize("kind", sorted(ENOSPC_ERRORS))
def test_disk_full_is_one_line_and_leaves_the_existing_folder(tmp_path, monkeypatch, kind):
    """Old code: the raw OSError / SafetensorError propagates (a traceback)."""
    model = tiny_llama()
    names = prune_24(model)
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "keep.txt").write_text("precious")

    def full(*a, **k):
        raise ENOSPC_ERRORS[kind]

    monkeypatch.setattr("compress.export.save_file", full)
    with pytest.raises(UserError) as e:
        save_checkpoint(model, None, out, compress_24_modules=names, overwrite=True)
    msg = str(e.value)
    assert msg.startswith(f"no space left on device writing {out} (needs about ") and "\n" not in msg
    assert msg.endswith(" MB); free space and rerun")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"] and (out / "keep.txt").read_text() == "precious"


# ------------------------------------------------------------------ 7. killed exports


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporary_folders_of_killed_exports_are_removed(tmp_path):
    """Old code: `.ckpt.tmp-<pid>` of a killed export stays forever."""
    model = tiny_llama()
    dead, alive = _dead_pid(), os.getppid()
    for name in (f".ckpt.tmp-{dead}", f".ckpt.old-{dead}", f".ckpt.tmp-{alive}", ".ckpt.tmp-x", ".other.tmp-1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "ckpt").mkdir()  # a finished swap: the stale .old- folder is garbage
    save_checkpoint(model, None, tmp_path / "ckpt", overwrite=True)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([".ckpt.tmp-x", f".ckpt.tmp-{alive}", ".other.tmp-1", "ckpt"])


def test_a_swap_killed_half_way_gets_the_previous_checkpoint_back(tmp_path):
    dead = _dead_pid()
    old = tmp_path / f".ckpt.old-{dead}"
    old.mkdir()
    (old / "keep.txt").write_text("previous")
    (tmp_path / f".ckpt.tmp-{dead}").mkdir()
    with pytest.raises(UserError, match="already exists"):
        save_checkpoint(tiny_llama(), None, tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert (tmp_path / "ckpt" / "keep.txt").read_text() == "previous"
