"""Run every packaged recipe on a tiny random Llama through `compress.pipeline.run` and print the sha256 of each
exported weight file and config's quantization_config, as JSON (one process, CPU numerics pinned by the caller).

Used by tests/test_recipe_golden.py; `python tests/recipe_checkpoints.py --write` stores this machine's set in
the golden file (under its CPU, `machine()`), leaving the other machines' sets. Issue 14 (stages redesign) must
keep every hash: the checkpoints are bit-identical before and after.

Why one set per CPU: the pinned numerics (MKL_CBWR=AVX2,STRICT, ATEN_CPU_CAPABILITY=avx2) make two Intel-style
machines agree (bench/cpu_numerics.py), but on 2026-12-02 an AMD EPYC gave other hashes for 6 of the 16 recipes
(quest-w4, the SparseGPT 2:4 ones, the AST ones) from a commit whose CI had passed (d583e41), run to run
identical there; so the sets are per machine, and a code change shows as a set that matches no machine's."""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "recipe_checkpoints.json"
sys.path.insert(0, str(ROOT))


def tiny_folder(folder: Path) -> Path:
    """A 2-layer Llama (hidden 64, vocab 128) with a character-level tokenizer, saved as a model folder."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tests.conftest import tiny_llama

    vocab = {"[UNK]": 0, **{chr(i): i for i in range(1, 128)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="\x7f").save_pretrained(folder)
    tiny_llama(seed=0, hidden=64).save_pretrained(folder)
    return folder


def main() -> dict:
    from compress.config import RunConfig, load_recipe, override, packaged_recipes
    from compress.pipeline import run

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        import dataclasses

        from finetune.stage import FinetuneConfig, FinetuneData
        from quant.stage import QuantConfig

        def small(stage):  # a finetune stage shrunk to a few steps on the tiny model; quant grids that fit it
            if isinstance(stage, QuantConfig):  # in-features 64 and 128
                return dataclasses.replace(
                    stage, group_size=min(stage.group_size, 32), hadamard_block=min(stage.hadamard_block, 32)
                )
            if not isinstance(stage, FinetuneConfig):
                return stage
            data = FinetuneData(stage.data.sources, min(stage.data.self_distill_texts, 2), 8, 2, 20_000, ("piqa",))
            return dataclasses.replace(
                stage,
                steps=3,
                micro_batch=2,
                seqlen=32,
                grad_accum=1,
                warmup_steps=1,
                masked_decay_warmup=3,
                checkpoint_every=0,
                eval_every=0,
                data=data,
            )

        model = tiny_folder(Path(tmp) / "tiny")
        for name in packaged_recipes():
            recipe = override(load_recipe(name), nsamples=4, seqlen=64, eval_max_windows=1)
            recipe = dataclasses.replace(recipe, stages=tuple(small(s) for s in recipe.stages))
            folder = Path(tmp) / name
            run(RunConfig(str(model), recipe, device="cpu"), folder, progress=False, log=lambda m: None)
            qc = json.loads((folder / "config.json").read_text()).get("quantization_config")
            if qc is not None:
                qc.pop("version", None)  # the installed compressed-tensors version, not the checkpoint's content
            out[name] = {
                "model.safetensors": hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest(),
                "quantization_config": qc,
            }
    return out


def machine() -> str:
    """The CPU the hashes were made on: vendor and model name from /proc/cpuinfo (platform's name elsewhere)."""
    import platform

    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            info.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return f"{info.get('vendor_id', platform.machine())} {info.get('model name', platform.processor())}".strip()


if __name__ == "__main__":
    result = main()
    if "--write" in sys.argv:
        golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {"machines": {}}
        golden["machines"][machine()] = result
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(json.dumps({"machine": machine(), "checkpoints": result}, sort_keys=True))
