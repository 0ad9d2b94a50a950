"""Write tests/fixtures/llmcompressor-2of4/: a tiny random Llama pruned 2:4 and saved by llm-compressor itself.

Runs in the side environment (llm-compressor 0.10 + compressed-tensors 0.14 + transformers 4.57; `python
bench/interop.py --setup-only` creates it), never in the main venv:

    nice -n 19 /work/side/interop/bin/python bench/interop/make_llmc_fixture.py

What it writes (seeded; rerunning gives the same tensors, bit for bit, and the same config.json):
  tests/fixtures/llmcompressor-2of4/            llm-compressor's own `save_pretrained(..., save_compressed=True)`
                                                 after `oneshot` with SparseGPTModifier(2:4) on random token ids
                                                 (config.json, generation_config.json, model.safetensors, recipe.yaml)
      provenance.json                           versions, seed, the recipe and this command
  tests/fixtures/llmcompressor-2of4-expected.safetensors
                                                 the dense state dict compressed-tensors 0.14 decompresses from that
                                                 folder (ModelCompressor.from_pretrained(folder).decompress into a
                                                 freshly built model), i.e. what every reader must get back.

`--variant 2of4-w4a16` (default `2of4`, the above) writes instead, the same way:

    nice -n 19 /work/side/interop/bin/python bench/interop/make_llmc_fixture.py --variant 2of4-w4a16

  tests/fixtures/llmcompressor-2of4-w4a16/      a tiny random bf16 Llama (hidden 128, intermediate 256: every decoder
                                                 Linear's in-features a multiple of 128) after one `oneshot` with
                                                 SparseGPTModifier(2:4) then GPTQModifier (weights int4 symmetric,
                                                 group 128; targets Linear, lm_head ignored), saved by
                                                 `save_pretrained(out, save_compressed=True,
                                                 quantization_format="pack-quantized")`: config.json format
                                                 pack-quantized with a format "dense", structure "2:4"
                                                 sparsity_config (compressed-tensors cannot compose its 2:4
                                                 compressor with int4 packing: the 2:4 mask is metadata)
      provenance.json
  tests/fixtures/llmcompressor-2of4-w4a16-expected.safetensors
                                                 the dense weights compressed-tensors 0.14 decompresses from that
                                                 folder into a freshly built model: the folder's unquantized tensors
                                                 (embeddings, norms, lm_head) loaded as stored, then
                                                 ModelCompressor.from_pretrained(folder).decompress (which writes only
                                                 the quantized Linears); the plain model's state_dict keys (not the
                                                 scale / zero-point parameters compressed-tensors attaches). Checked
                                                 here against transformers 4.57's own from_pretrained of the folder
                                                 (CompressedTensorsConfig(run_compressed=False)): the same bits.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "llmcompressor-2of4"
EXPECTED = ROOT / "tests" / "fixtures" / "llmcompressor-2of4-expected.safetensors"
SEED = 0
# the tiny model: 2 layers, hidden 32 (every Linear's in-features divisible by 4, the 2:4 group size)
DIMS = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=128,
    max_position_embeddings=64,
    rope_theta=500000.0,  # not the 10000 default: a reader that drops it computes other logits
    tie_word_embeddings=False,
)
NSAMPLES, SEQLEN = 16, 32

# --variant 2of4-w4a16: every decoder Linear's in-features (128, 256) a multiple of the int4 group (128)
FIXTURE_W4A16 = ROOT / "tests" / "fixtures" / "llmcompressor-2of4-w4a16"
EXPECTED_W4A16 = ROOT / "tests" / "fixtures" / "llmcompressor-2of4-w4a16-expected.safetensors"
DIMS_W4A16 = DIMS | dict(hidden_size=128, intermediate_size=256)
W4A16_WEIGHTS = dict(num_bits=4, type="int", symmetric=True, strategy="group", group_size=128)


def char_tokenizer():
    """oneshot wants a processor when given a dataset: one id per printable character (the ids are given already)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "</s>": 127, **{chr(31 + i): i for i in range(1, 96)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")


def versions() -> dict:
    from importlib.metadata import version

    pkgs = ("llmcompressor", "compressed-tensors", "transformers", "torch", "safetensors", "accelerate", "datasets")
    return {p: version(p) for p in pkgs} | {"python": platform.python_version()}


def compressed_by_oneshot(dims: dict, recipe, oneshot):
    """A seeded random bf16 Llama of `dims`, compressed by llm-compressor's `oneshot` with `recipe` on NSAMPLES
    seeded random windows of SEQLEN ids (sequential pipeline)."""
    import torch
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    model = LlamaForCausalLM(LlamaConfig(**dims, torch_dtype="bfloat16")).to(torch.bfloat16).eval()
    g = torch.Generator().manual_seed(SEED)
    ids = torch.randint(0, dims["vocab_size"], (NSAMPLES, SEQLEN), generator=g)
    dataset = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    oneshot(
        model=model,
        dataset=dataset,
        processor=char_tokenizer(),
        recipe=recipe,
        num_calibration_samples=NSAMPLES,
        max_seq_length=SEQLEN,
        pipeline="sequential",
    )
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--variant",
        choices=("2of4", "2of4-w4a16"),
        default="2of4",
        help="2of4: sparse-24-bitmask (default); 2of4-w4a16: 2:4 + GPTQ int4 group 128, pack-quantized",
    )
    ap.add_argument("--out", type=Path, help=f"fixture folder (default {FIXTURE}, or {FIXTURE_W4A16})")
    ap.add_argument("--expected", type=Path, help=f"decompressed weights (default {EXPECTED}, or {EXPECTED_W4A16})")
    args = ap.parse_args()
    w4a16 = args.variant == "2of4-w4a16"
    args.out = args.out or (FIXTURE_W4A16 if w4a16 else FIXTURE)
    args.expected = args.expected or (EXPECTED_W4A16 if w4a16 else EXPECTED)
    if w4a16:
        return main_w4a16(args)

    import torch

    try:
        from llmcompressor import oneshot
        from llmcompressor.modifiers.obcq import SparseGPTModifier
    except ImportError:
        sys.exit("llmcompressor is not installed here; run this in the side env (python bench/interop.py --setup-only)")

    recipe = SparseGPTModifier(sparsity=0.5, mask_structure="2:4", targets=["Linear"], ignore=["re:.*lm_head"])
    model = compressed_by_oneshot(DIMS, recipe, oneshot)

    out: Path = args.out
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out, save_compressed=True)  # llm-compressor's wrapped save_pretrained

    # what compressed-tensors itself decompresses from the folder, into a freshly built (random) model
    from compressed_tensors.compressors import ModelCompressor
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(out)
    del config.quantization_config
    torch.manual_seed(SEED + 1)
    fresh = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16).eval()
    ModelCompressor.from_pretrained(str(out)).decompress(str(out), fresh)  # every stored tensor, 2:4 decompressed
    fresh.tie_weights()
    state = {k: v.detach().clone().contiguous() for k, v in fresh.state_dict().items()}
    save_file(state, args.expected, metadata={"format": "pt"})

    provenance = {
        "written_by": "bench/interop/make_llmc_fixture.py",
        "command": "nice -n 19 /work/side/interop/bin/python bench/interop/make_llmc_fixture.py",
        "versions": versions(),
        "seed": SEED,
        "model": {"class": "LlamaForCausalLM", "dtype": "bfloat16", **DIMS},
        "calibration": f"{NSAMPLES} x {SEQLEN} random token ids (torch.Generator seed {SEED})",
        "recipe": "oneshot(SparseGPTModifier(sparsity=0.5, mask_structure='2:4', targets=['Linear'], "
        "ignore=['re:.*lm_head']), pipeline='sequential'); model.save_pretrained(out, save_compressed=True)",
        "expected": f"{args.expected.name}: ModelCompressor.from_pretrained(folder).decompress(folder, model) "
        "into a fresh model, its full state_dict",
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    for f in [*out.iterdir(), args.expected]:
        f.chmod(0o644)  # safetensors writes 0600
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())} | {
        args.expected.name: args.expected.stat().st_size
    }
    print(json.dumps(sizes, indent=2), f"total {sum(sizes.values())} bytes", sep="\n")


def main_w4a16(args) -> None:
    """--variant 2of4-w4a16: SparseGPT 2:4 then GPTQ W4A16 (symmetric, group 128), saved pack-quantized."""
    import torch

    try:
        from llmcompressor import oneshot
        from llmcompressor.modifiers.obcq import SparseGPTModifier
        from llmcompressor.modifiers.quantization import GPTQModifier
    except ImportError:
        sys.exit("llmcompressor is not installed here; run this in the side env (python bench/interop.py --setup-only)")

    recipe = [
        SparseGPTModifier(sparsity=0.5, mask_structure="2:4", targets=["Linear"], ignore=["re:.*lm_head"]),
        GPTQModifier(
            config_groups={"group_0": {"targets": ["Linear"], "weights": W4A16_WEIGHTS}},
            ignore=["lm_head"],
        ),
    ]
    model = compressed_by_oneshot(DIMS_W4A16, recipe, oneshot)

    out: Path = args.out
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out, save_compressed=True, quantization_format="pack-quantized")

    # what compressed-tensors itself decompresses from the folder, into a freshly built (random) model. Its
    # quantized decompress writes only the quantized Linears' weights (from_pretrained loads the rest first), so the
    # folder's plain tensors are loaded as stored before it.
    from compressed_tensors.compressors import ModelCompressor
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(out)
    del config.quantization_config
    torch.manual_seed(SEED + 1)
    fresh = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16).eval()
    keys = list(fresh.state_dict())  # the plain model's tensors
    stored = load_file(out / "model.safetensors")
    plain = {k: v for k, v in stored.items() if k in keys}
    packed = sorted(k.removesuffix(".weight_packed") for k in stored if k.endswith(".weight_packed"))
    assert len(packed) == 7 * DIMS_W4A16["num_hidden_layers"], packed  # every decoder Linear quantized, lm_head not
    assert set(keys) == set(plain) | {f"{m}.weight" for m in packed}, "a model tensor is neither stored nor packed"
    fresh.load_state_dict(plain, strict=False)
    ModelCompressor.from_pretrained(str(out)).decompress(str(out), fresh)  # the packed Linears, int4 decompressed
    fresh.tie_weights()
    full = fresh.state_dict()
    state = {k: full[k].detach().clone().contiguous() for k in keys}
    for k, v in plain.items():
        assert torch.equal(state[k], v), k
    for m in packed:
        w = state[f"{m}.weight"]
        assert w.dtype == torch.bfloat16 and int((w.reshape(w.shape[0], -1, 4) != 0).sum(-1).max()) <= 2, m  # 2:4

    # cross-check: transformers 4.57's own load of the folder (compressed-tensors 0.14 decompressing) agrees
    from transformers.utils.quantization_config import CompressedTensorsConfig

    hf = AutoModelForCausalLM.from_pretrained(
        out, torch_dtype=torch.bfloat16, quantization_config=CompressedTensorsConfig(run_compressed=False)
    )
    hf_state = hf.state_dict()
    for k in keys:
        assert torch.equal(hf_state[k].view(torch.int16), state[k].view(torch.int16)), f"from_pretrained differs: {k}"
    save_file(state, args.expected, metadata={"format": "pt"})

    command = "nice -n 19 /work/side/interop/bin/python bench/interop/make_llmc_fixture.py --variant 2of4-w4a16"
    provenance = {
        "written_by": "bench/interop/make_llmc_fixture.py",
        "command": command,
        "variant": args.variant,
        "versions": versions(),
        "seed": SEED,
        "model": {"class": "LlamaForCausalLM", "dtype": "bfloat16", **DIMS_W4A16},
        "calibration": f"{NSAMPLES} x {SEQLEN} random token ids (torch.Generator seed {SEED})",
        "recipe": "oneshot([SparseGPTModifier(sparsity=0.5, mask_structure='2:4', targets=['Linear'], "
        "ignore=['re:.*lm_head']), GPTQModifier(config_groups={'group_0': {'targets': ['Linear'], 'weights': "
        f"{W4A16_WEIGHTS}}}}}, ignore=['lm_head'])], pipeline='sequential'); "
        "model.save_pretrained(out, save_compressed=True, quantization_format='pack-quantized')",
        "expected": f"{args.expected.name}: a fresh model with the folder's unquantized tensors loaded as stored, "
        "then ModelCompressor.from_pretrained(folder).decompress(folder, model); the plain model's state_dict "
        "(no weight_scale / weight_zero_point); equal bit for bit to transformers' from_pretrained(folder, "
        "quantization_config=CompressedTensorsConfig(run_compressed=False))",
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    for f in [*out.iterdir(), args.expected]:
        f.chmod(0o644)  # safetensors writes 0600
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())} | {
        args.expected.name: args.expected.stat().st_size
    }
    print(json.dumps(sizes, indent=2), f"total {sum(sizes.values())} bytes", sep="\n")


if __name__ == "__main__":
    main()
