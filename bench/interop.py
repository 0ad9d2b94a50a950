"""Do other readers load our sparse-24-bitmask export as we do? transformers 4.57 + compressed-tensors 0.14.

Run by hand (CPU, a few minutes; the first run also creates the side environment, ~1 GB):

    nice -n 19 .venv/bin/python bench/interop.py [--checkpoint out/smollm2-135m-wanda-2of4] [--label after]

1. The side environment (a venv outside the repo, default /work/side/interop, `--venv`) is created if missing with
   the pip commands in SIDE_PIP: torch 2.13 (CPU, local disk), transformers 4.57.6, compressed-tensors 0.14.0.1
   (the last release whose ModelCompressor still decompresses sparse-24-bitmask) and llm-compressor 0.10.0.4
   (--no-deps: it pins torch<=2.10; its dependencies are listed by hand).
2. Here (the main venv, transformers 5) tiny random Llama / Qwen2 / Qwen3 / Mistral / Gemma-3 models (seeded, bf16,
   non-default RoPE: Llama-3 scaling, Gemma-3 local/global bases with linear scaling) are 2:4 pruned by magnitude
   and written with compress.export.save_checkpoint. Each folder (these, llm-compressor's own fixture
   tests/fixtures/llmcompressor-2of4 and every --checkpoint) is read by our loader, compress.loading.load(folder,
   float32): its state dict and logits on fixed token ids.
3. In the side env (bench/interop/side_check.py) each folder is read by AutoModelForCausalLM.from_pretrained(folder)
   (float32) and by ModelCompressor.from_pretrained(folder).decompress(folder, model). Compared with our loader:
   every tensor bit-exact (float32 bits; names missing / extra), logits max |Δ|, or the error the reader raised.
Results are merged into bench/interop.json under --label (the code measured, command, date, versions, machine).
`--code DIR` exports with the compress package in DIR instead, e.g. the previous export:
    git archive HEAD | tar -x -C /tmp/interop-before && nice -n 19 .venv/bin/python bench/interop.py \
        --code /tmp/interop-before --label before
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "llmcompressor-2of4"
DEFAULT_VENV = Path("/work/side/interop")
SIDE_PIP = [  # run with the side venv's python, in this order
    ["-m", "pip", "install", "torch==2.13.0"],
    ["-m", "pip", "install", "transformers==4.57.6", "compressed-tensors==0.14.0.1", "accelerate==1.15.0"],
    ["-m", "pip", "install", "--no-deps", "llmcompressor==0.10.0.4"],
    [
        "-m", "pip", "install", "loguru>=0.7.2,<=0.7.3", "pyyaml>=6.0.1,<=6.0.3", "numpy>=2.0,<=2.4.2",
        "requests>=2.32.2,<2.35", "tqdm>=4.66.3,<=4.67.3", "datasets>=4.0,<5.1", "pillow>=10.4,<13",
        "nvidia-ml-py>=12.560.30,<=13.590.48",
    ],
]  # fmt: skip
SEED = 0
IDS_SHAPE = (2, 24)  # longer than the tiny models' sliding window (8)
VOCAB = 128


def side_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_side_env(venv: Path) -> list[str]:
    """Create the side venv if it lacks llm-compressor; returns the commands (as run, or as they would be)."""
    py = side_python(venv)
    commands = [f"{Path(sys.executable).name} -m venv {venv}"] + [" ".join([str(py), *c]) for c in SIDE_PIP]
    probe = [str(py), "-c", "import llmcompressor, compressed_tensors, transformers"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return commands
    print(f"creating the side environment {venv} (torch from local disk, ~1 GB)", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    for c in SIDE_PIP:
        print(" ".join([str(py), *c]), flush=True)
        subprocess.run([str(py), *c, "-q"], check=True)
    return commands


# ---------------------------------------------------------------- main env: our export and our loader
def tiny_models():
    """name -> seeded random bf16 model with non-default RoPE (so a reader that drops it computes other logits)."""
    import torch
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    dims = dict(
        hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
        max_position_embeddings=256, initializer_range=0.25,  # attention far from uniform: RoPE shows in the logits
    )  # fmt: skip
    llama3 = {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64,
    }  # fmt: skip
    gemma_rope = {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    }
    qwen_rope = {"rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0}}  # Qwen2.5 / Qwen3's base
    specs = {
        "llama": (LlamaForCausalLM, LlamaConfig(**dims, num_hidden_layers=2, rope_parameters=llama3)),
        "qwen2": (Qwen2ForCausalLM, Qwen2Config(**dims, num_hidden_layers=2, tie_word_embeddings=True, **qwen_rope)),
        "qwen3": (
            Qwen3ForCausalLM,
            Qwen3Config(**dims, num_hidden_layers=2, head_dim=16, tie_word_embeddings=True, **qwen_rope),
        ),
        "mistral": (
            MistralForCausalLM,
            MistralConfig(**dims, num_hidden_layers=2, sliding_window=None, rope_parameters={"rope_theta": 1e6}),
        ),
        "gemma3": (
            Gemma3ForCausalLM,
            Gemma3TextConfig(
                **dims,
                num_hidden_layers=6,
                head_dim=16,
                sliding_window=8,
                rope_parameters=gemma_rope,
                query_pre_attn_scalar=16,
            ),
        ),  # fmt: skip
    }
    for name, (cls, config) in specs.items():
        torch.manual_seed(SEED)
        yield name, cls(config).to(torch.bfloat16).eval()


def prune_24(model) -> set[str]:
    """Zero 2 of every 4 weights (smallest magnitude) of each decoder Linear; returns their names."""
    import torch

    from prune.config import NM
    from prune.magnitude import magnitude_mask

    names = set()
    for name, m in model.model.layers.named_modules():
        if isinstance(m, torch.nn.Linear):
            m.weight.data *= magnitude_mask(m.weight.data, NM(2, 4)).to(m.weight.dtype)
            names.add(f"model.layers.{name}")
    return names


def fixed_ids() -> list[list[int]]:
    import torch

    return torch.randint(0, VOCAB, IDS_SHAPE, generator=torch.Generator().manual_seed(SEED)).tolist()


def ours(folder: Path, ids) -> tuple[dict, object]:
    """Our loader's full state dict (float32) and float32 logits on `ids`."""
    import torch

    from compress.loading import load

    model = load(folder, torch.float32).model
    with torch.no_grad():
        logits = model(torch.tensor(ids)).logits
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, logits


def compare(ref: dict, got: dict) -> dict:
    """Bit-exact comparison in float32 (bf16 -> float32 is exact), names missing / extra."""
    import torch

    def bits(t):
        t = t.to(torch.float32) if t.is_floating_point() else t
        return t.view(torch.int32) if t.dtype == torch.float32 else t

    missing, extra = sorted(set(ref) - set(got)), sorted(set(got) - set(ref))
    differ = [
        k for k in ref if k in got and (ref[k].shape != got[k].shape or not torch.equal(bits(ref[k]), bits(got[k])))
    ]
    return {
        "tensors": len(ref),
        "weights_bit_exact": not (missing or extra or differ),
        "differ": differ[:8] + ([f"... {len(differ)} in all"] if len(differ) > 8 else []),
        "missing": missing[:8],
        "extra": extra[:8],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="side environment (default %(default)s)")
    ap.add_argument("--checkpoint", type=Path, action="append", default=[], help="also check this exported folder")
    ap.add_argument("--label", default="after", help="key of this run in the results file (default %(default)s)")
    ap.add_argument("--code", type=Path, help="export with the compress package in this folder (a git archive)")
    ap.add_argument("--note", help="recorded with the run (e.g. which commit --code is)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "interop.json")
    ap.add_argument("--work", type=Path, help="keep the exported folders here (default: a temporary folder)")
    ap.add_argument("--setup-only", action="store_true", help="create the side environment and stop")
    args = ap.parse_args()

    commands = ensure_side_env(args.venv)
    if args.setup_only:
        print("\n".join(commands))
        return
    for c in args.checkpoint:
        if not (c / "config.json").is_file():
            sys.exit(f"--checkpoint {c} has no config.json; pass a folder written by `python -m compress run`")
    code = (args.code or ROOT).resolve()
    sys.path.insert(0, str(code))  # before any import of compress / prune
    sys.path.insert(1, str(ROOT))

    import torch
    from safetensors.torch import load_file

    from compress.environment import environment
    from compress.export import save_checkpoint

    work = args.work or Path(tempfile.mkdtemp(prefix="interop-"))
    work.mkdir(parents=True, exist_ok=True)
    ids = fixed_ids()
    folders: dict[str, Path] = {}
    written: dict[str, dict] = {}  # name -> state dict of the in-memory model before export
    for name, model in tiny_models():
        names = prune_24(model)
        dense = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n not in names]
        folder = work / name
        shutil.rmtree(folder, ignore_errors=True)
        save_checkpoint(model, None, folder, compress_24_modules=names, ignore=dense)
        written[name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        folders[name] = folder
    folders["llmcompressor-fixture"] = FIXTURE
    for c in args.checkpoint:
        folders[c.name] = c.resolve()

    reference = {}
    for name, folder in folders.items():
        print(f"our loader: {name}", flush=True)
        reference[name] = ours(folder, ids)

    request = {
        "cases": [
            {"name": n, "folder": str(f), "ids": ids, "out": str(work / f"{n}.side.safetensors")}
            for n, f in folders.items()
        ],
        "result": str(work / "side.json"),
    }
    (work / "request.json").write_text(json.dumps(request))
    subprocess.run(
        [str(side_python(args.venv)), str(ROOT / "bench" / "interop" / "side_check.py"), str(work / "request.json")],
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "PYTHONPATH": ""},
    )
    side = json.loads((work / "side.json").read_text())

    cases = {}
    for name, folder in folders.items():
        state, logits = reference[name]
        got = load_file(work / f"{name}.side.safetensors")
        config = json.loads((folder / "config.json").read_text())
        qc = config.get("quantization_config") or {}
        case = {
            "folder": str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else name,
            "config": {
                "architectures": config.get("architectures"),
                "quantization_config_keys": sorted(qc),
                "rope_keys": sorted(k for k in config if "rope" in k),
                "has_name_or_path": "_name_or_path" in config,
            },
        }
        if name in written:  # values (the export stores a pruned -0.0 as 0.0)
            before = written[name]
            case["ours_equal_to_model_before_export"] = sorted(before) == sorted(state) and all(
                torch.equal(before[k].float(), state[k].float()) for k in before
            )
        for reader in ("from_pretrained", "model_compressor"):
            rec = dict(side["cases"][name][reader])
            rec.pop("trace", None)
            if rec["ok"]:
                rec |= compare(state, {k.split("/", 1)[1]: v for k, v in got.items() if k.startswith(reader + "/")})
                if reader == "from_pretrained":
                    diff = (got["from_pretrained.logits"] - logits).abs().max().item()
                    rec["logits_max_abs_diff"] = diff
                    rec["logits_max_abs"] = logits.abs().max().item()
                    rec["logits_top1_agree"] = (
                        (got["from_pretrained.logits"].argmax(-1) == logits.argmax(-1)).float().mean().item()
                    )
            case[reader] = rec
        cases[name] = case
        fp, mc = case["from_pretrained"], case["model_compressor"]
        fp_text = (
            f"bit-exact={fp['weights_bit_exact']} logits max|Δ|={fp['logits_max_abs_diff']:.3g}"
            if fp["ok"]
            else fp["error"][:90]
        )
        mc_text = f"bit-exact={mc['weights_bit_exact']}" if mc["ok"] else mc["error"][:90]
        print(
            f"{name:>24}: from_pretrained {fp_text} | ModelCompressor {mc_text}",
            flush=True,
        )

    env = environment()
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results.setdefault("about", __doc__.splitlines()[0])
    results.setdefault("runs", {})
    results["runs"][args.label] = {
        "command": " ".join(["python", "bench/interop.py", *sys.argv[1:]]),
        "code": "this working tree" if args.code is None else f"compress package from {args.code}",
        **({"note": args.note} if args.note else {}),
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "processor": platform.processor()},
        "git_commit": env.get("git_commit"),
        "versions": {
            "main": {k: env["packages"].get(k) for k in ("torch", "transformers", "compressed-tensors", "safetensors")},
            "side": side["versions"],
        },
        "side_env": {"venv": str(args.venv), "commands": commands},
        "token_ids_shape": list(IDS_SHAPE),
        "cases": cases,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out} (runs: {', '.join(results['runs'])})")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
