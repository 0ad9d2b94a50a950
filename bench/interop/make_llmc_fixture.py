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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=FIXTURE, help="fixture folder (default %(default)s)")
    ap.add_argument("--expected", type=Path, default=EXPECTED, help="decompressed weights (default %(default)s)")
    args = ap.parse_args()

    import torch
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM

    try:
        from llmcompressor import oneshot
        from llmcompressor.modifiers.obcq import SparseGPTModifier
    except ImportError:
        sys.exit("llmcompressor is not installed here; run this in the side env (python bench/interop.py --setup-only)")

    torch.manual_seed(SEED)
    model = LlamaForCausalLM(LlamaConfig(**DIMS, torch_dtype="bfloat16")).to(torch.bfloat16).eval()
    g = torch.Generator().manual_seed(SEED)
    ids = torch.randint(0, DIMS["vocab_size"], (NSAMPLES, SEQLEN), generator=g)
    dataset = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    recipe = SparseGPTModifier(sparsity=0.5, mask_structure="2:4", targets=["Linear"], ignore=["re:.*lm_head"])
    oneshot(
        model=model,
        dataset=dataset,
        processor=char_tokenizer(),
        recipe=recipe,
        num_calibration_samples=NSAMPLES,
        max_seq_length=SEQLEN,
        pipeline="sequential",
    )

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


if __name__ == "__main__":
    main()
