"""Quantized checkpoints (compress/quant_checkpoint.py): every method's export reads back to exactly the weights the
stage left in the model, in compressed-tensors pack-quantized (decoded by compressed-tensors) or our layouts."""

import json

import pytest
import torch

from compress.config import RunConfig, recipe_from_dict
from compress.errors import UserError
from compress.export import save_checkpoint
from compress.loading import load
from compress.pipeline import prune_model, run
from prune.stage import PruneConfig
from quant.stage import QuantConfig
from tests.conftest import tiny_llama
from tests.test_layerwise_architectures import make
from tests.test_quant_stage import _ids, _quantize

CPU = torch.device("cpu")

CASES = {
    "gptq-w4g32": (QuantConfig("gptq", 4, group_size=32), "pack-quantized"),
    "rtn-w8-channel-asym": (QuantConfig("rtn", 8, "channel", symmetric=False), "pack-quantized"),
    "rtn-w4g32-asym": (QuantConfig("rtn", 4, group_size=32, symmetric=False), "pack-quantized"),
    "gptq-w3g32": (QuantConfig("gptq", 3, group_size=32), "llm-compress-quant"),
    "squeezellm-w3": (QuantConfig("squeezellm", 3, fisher_samples=2), "llm-compress-quant"),
    "quest-w4": (QuantConfig("quest", 4, hadamard_block=32), "llm-compress-quant"),
}


def _export_and_load(tmp_path, model, records, dtype):
    model.to(dtype)
    from compress.records import with_pattern
    from prune.config import NM

    sparse = with_pattern(records, NM(2, 4))
    codes = {n: r.quant for n, r in records.items() if r.quant is not None}
    out = save_checkpoint(
        model, None, tmp_path / "ckpt", quant_codes=codes, masks_24={n: records[n].mask for n in sparse}
    )
    return out, load(out, None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("pruned", [False, True])
def test_export_reads_back_bit_exactly(tmp_path, case, pruned, dtype):
    cfg, fmt = CASES[case]
    model = tiny_llama().to(dtype)
    records = prune_model(model, _ids(), PruneConfig("wanda", "2:4"), CPU, progress=False).records if pruned else {}
    _quantize(model, cfg, records)
    out, loaded = _export_and_load(tmp_path, model, records, dtype)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert loaded.format == fmt
    if fmt == "pack-quantized":
        assert qc["config_groups"]["group_0"]["weights"]["num_bits"] == cfg.bits
        assert (qc["sparsity_config"] or {}).get("sparsity_structure") == ("2:4" if pruned else None)
        assert "lm_head" in qc["ignore"]
    got = loaded.model.state_dict()
    for name, t in model.state_dict().items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name


def test_a_second_architecture_reads_back_bit_exactly(tmp_path):
    model = make("qwen2", "eager")  # q/k/v biases
    _, records = _quantize(model, QuantConfig("gptq", 4, group_size=32))
    _, loaded = _export_and_load(tmp_path, model, records, torch.float32)
    got = loaded.model.state_dict()
    assert all(torch.equal(got[n], t) for n, t in model.state_dict().items())


def test_pipeline_reports_format_and_size_and_its_checkpoint_is_smaller(tmp_path):
    from tests.recipe_checkpoints import tiny_folder

    src = tiny_folder(tmp_path / "tiny")
    sizes = {}
    for name, stages in {"dense": [], "w4": [{"quant": {"method": "rtn", "bits": 4, "group_size": 32}}]}.items():
        recipe = recipe_from_dict(
            {"calibration": {"nsamples": 2, "seqlen": 16}, "stages": stages, "eval": {"perplexity": []}}
        )
        report = run(RunConfig(str(src), recipe, device="cpu"), tmp_path / name, progress=False, log=lambda m: 0)
        sizes[name] = report["export"]["size_mb"]
        saved = json.loads((tmp_path / name / "report.json").read_text())
        assert saved["export"] == report["export"]
    assert report["export"]["format"] == "pack-quantized" and report["export"]["quantized_modules"] == 14
    assert sizes["w4"] < sizes["dense"]


def test_a_damaged_quantized_checkpoint_is_refused_with_the_module_name(tmp_path):
    from safetensors.torch import load_file, save_file

    model = tiny_llama()
    _, records = _quantize(model, QuantConfig("quest", 4, hadamard_block=32))
    out, _ = _export_and_load(tmp_path, model, records, torch.float32)
    tensors = load_file(out / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.quant.scale"]
    save_file(tensors, out / "model.safetensors")
    with pytest.raises(UserError, match=r"model.layers.1.mlp.up_proj's quantized tensors do not decode"):
        load(out, None)
