"""The side-environment half of bench/interop.py (transformers 4.57 + compressed-tensors 0.14; never the main venv).

    /work/side/interop/bin/python bench/interop/side_check.py REQUEST.json

REQUEST.json: {"cases": [{"name", "folder", "ids": [[token ids]], "out": "x.safetensors"}], "result": "y.json"}.
Per case it reads the folder two ways and writes what it got, for the main env to compare with our loader:
  from_pretrained   AutoModelForCausalLM.from_pretrained(folder, torch_dtype=float32): transformers'
                    CompressedTensorsHfQuantizer decompresses the sparse-24-bitmask weights; full state dict and
                    float32 logits on `ids`;
  model_compressor  ModelCompressor.from_pretrained(folder).decompress(folder, model) into a model built from the
                    config (quantization_config removed, initialised from another seed), then tie_weights():
                    full state dict (a tensor decompress did not write stays random and fails the comparison).
Tensors go to `out` as `from_pretrained/<key>`, `from_pretrained.logits`, `model_compressor/<key>` (safetensors);
failures (e.g. compressed-tensors' ValidationError) are recorded as their first line, never raised.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: " + " | ".join(line.strip() for line in text.splitlines()[:3])[:300]


def unique_state(model) -> dict:
    """Every state-dict entry, tied ones included (cloned: safetensors refuses shared storage)."""
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}


def from_pretrained(folder: str, ids):
    import torch
    from transformers import AutoModelForCausalLM

    # float32 (the stored bf16 values exactly): a compressed-tensors model refuses `.float()` after loading
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    info = {
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "config_rope": {k: getattr(model.config, k, None) for k in ("rope_theta", "rope_scaling")},
        "architectures": getattr(model.config, "architectures", None),
    }
    if hasattr(model.config, "rope_local_base_freq"):
        info["config_rope"]["rope_local_base_freq"] = model.config.rope_local_base_freq
    with torch.no_grad():
        logits = model(torch.tensor(ids)).logits
    return unique_state(model), logits, info


def model_compressor(folder: str):
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from transformers import AutoConfig, AutoModelForCausalLM

    compressor = ModelCompressor.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    torch.manual_seed(12345)  # anything the decompression does not write stays visibly random
    model = AutoModelForCausalLM.from_config(config, torch_dtype=config.torch_dtype).eval()
    if compressor is None:
        raise RuntimeError("ModelCompressor.from_pretrained returned None (no compression config found)")
    compressor.decompress(folder, model)  # every stored tensor, the 2:4 ones decompressed
    model.tie_weights()  # decompress re-registers embed_tokens.weight; a tied lm_head would keep the random one
    state = unique_state(model)
    return state, {"sparsity_format": compressor.sparsity_config.format if compressor.sparsity_config else None}


def main() -> None:
    from importlib.metadata import version

    import torch
    from safetensors.torch import save_file

    request = json.loads(Path(sys.argv[1]).read_text())
    results = {
        "versions": {p: version(p) for p in ("transformers", "compressed-tensors", "torch", "llmcompressor")},
        "cases": {},
    }
    for case in request["cases"]:
        tensors, rec = {}, {}
        try:
            state, logits, info = from_pretrained(case["folder"], case["ids"])
            tensors.update({f"from_pretrained/{k}": v for k, v in state.items()})
            tensors["from_pretrained.logits"] = logits.contiguous()
            rec["from_pretrained"] = {"ok": True, **info}
        except Exception as e:  # noqa: BLE001 - recorded, the other reader still runs
            rec["from_pretrained"] = {"ok": False, "error": first_line(e), "trace": traceback.format_exc()[-1500:]}
        try:
            state, info = model_compressor(case["folder"])
            tensors.update({f"model_compressor/{k}": v for k, v in state.items()})
            rec["model_compressor"] = {"ok": True, **info}
        except Exception as e:  # noqa: BLE001
            rec["model_compressor"] = {"ok": False, "error": first_line(e), "trace": traceback.format_exc()[-1500:]}
        save_file(tensors or {"empty": torch.zeros(0)}, case["out"])
        results["cases"][case["name"]] = rec
        print(case["name"], {k: v.get("error", "ok") for k, v in rec.items()}, flush=True)
    Path(request["result"]).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
