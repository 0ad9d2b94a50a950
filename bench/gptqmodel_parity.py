"""GPTQ parity reference: quantize a dense Llama-architecture model with GPTQModel (ModelCloud/GPTQModel, the
maintained successor of auto-gptq) on the CPU, with given calibration windows, and report its wiki perplexity.

Run it with the SIDE environment's python (GPTQModel is not a dependency of this project), e.g.

    nice -n 19 /work/side/gptqmodel/bin/python bench/gptqmodel_parity.py --model-dir M \\
        --calib calib.safetensors --eval wiki.safetensors --bits 4 --group-size 128 --out gptqmodel.json

(see /work/side/gptqmodel/INSTALL.md for the environment). --calib / --eval: .safetensors files holding one
int64 tensor "input_ids" of shape (n, seqlen): the calibration windows (fed as they are, batch 1, no padding,
all-ones attention mask, in file order) and the evaluation windows.

GPTQModel's settings are matched to the original GPTQ (IST-DASLab/gptq `fasterquant`): damp_percent 0.01 (its
default is 0.05), damp_auto_increment 0 (its default 0.01 retries a failed Cholesky with more damping),
act_group_aware False (its default True permutes columns within/among groups by diag H: "GAR"), desc_act
False, static_groups False, mse 0 (no grid search of the clipping range), sym, true_sequential (q/k/v, o,
gate/up, down, each subset's Hessian from inputs that already went through the quantized earlier subsets,
and each layer's output recomputed with its quantized weights), blocksize 128, lm_head and embeddings not
quantized, fallback None (its default falls back to RTN for a module that saw < 0.5 % of the calibration
tokens), calibration_sort None (its default sorts by length), calibration_data_min_length 0 (drops nothing),
offload_to_disk False. Its Hessian is 2/N_tokens * sum X^T X over all tokens (the reference: the running
mean over sequences; the two differ by a scalar, which the relative damping cancels).

The quantized checkpoint GPTQModel writes (GPTQ v1 format: int32-packed codes, fp16 scales, qzeros stored
as zero - 1) is dequantized here in fp32 (W = float(scale) * (q - zero)) and put into the dense model loaded
with transformers in --dtype; wiki_ppl is that model's perplexity on the eval windows, computed exactly as
eval/perplexity.py does (imported from this repo): exp(sum of token NLLs / number of predicted tokens),
fp32 logits, fp64 sum; with equal-length windows that is exp(mean over windows of the window's mean NLL).
Also reported: wiki_ppl_fp32_wq, the perplexity with GPTQ's own fp32 fake-quantized weights (captured from
GPTQ.quantize before packing; they differ from the checkpoint's only by the fp16 rounding of the scales),
and the largest |checkpoint - wq| / scale over all weights as a check of the dequantization.
--dense: the unquantized model's perplexity by the same code (sanity check); no quantization.
"""

from __future__ import annotations

import os

# Same CPU numerics pinning as this project's commands (compress/cpu_numerics.py PINNED); set before torch loads.
os.environ.setdefault("MKL_CBWR", "AVX2,STRICT")
os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
# GPTQModel 7.6.0 sizes its CPU worker pool as ceil(cores / 2) but asks for a 2-worker "model_loader:cpu"
# sub-pool, which fails on a 2-core machine ("Virtual pool 'model_loader:cpu' requests 2 workers but parent
# 'cpu' only has 1"); 2 workers is the least that works.
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eval.perplexity import perplexity  # noqa: E402  (the project's own protocol, imported, not copied)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_windows(path: str, limit: int | None) -> torch.Tensor:
    ids = load_file(path)["input_ids"]
    if ids.dim() != 2:
        raise SystemExit(f"{path}: input_ids must be (n, seqlen), got {tuple(ids.shape)}")
    ids = ids.to(torch.long)
    return ids[:limit] if limit is not None else ids


def dense_model(model_dir: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    model.eval()
    return model


def unpack_rows(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """(r, c) int32 words, 32 // bits codes each along dim 0, low bits first -> (r * 32 // bits, c) codes."""
    per = 32 // bits
    shifts = torch.arange(0, 32, bits, dtype=torch.int32).view(1, per, 1)
    codes = (packed.unsqueeze(1) >> shifts) & ((1 << bits) - 1)
    return codes.reshape(packed.shape[0] * per, packed.shape[1])


def unpack_cols(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """(r, c) int32 words packed along dim 1 -> (r, c * 32 // bits) codes."""
    per = 32 // bits
    shifts = torch.arange(0, 32, bits, dtype=torch.int32).view(1, 1, per)
    codes = (packed.unsqueeze(2) >> shifts) & ((1 << bits) - 1)
    return codes.reshape(packed.shape[0], packed.shape[1] * per)


def dequantize_checkpoint(qdir: Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict]:
    """{linear name: (fp32 (out, in) weight, its (out, in) scales)} from a GPTQModel GPTQ checkpoint
    (qweight / qzeros / scales / g_idx)."""
    qcfg = json.loads((qdir / "quantize_config.json").read_text())
    bits = int(qcfg["bits"])
    if bits not in (2, 4, 8):
        raise SystemExit(f"this dequantizer handles 2/4/8-bit GPTQ packing, the checkpoint has {bits}")
    fmt = str(qcfg.get("format", qcfg.get("checkpoint_format", "gptq"))).lower()
    zero_offset = 1 if fmt == "gptq" else 0  # v1 stores zero - 1; gptq_v2 stores zero
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(qdir.glob("*.safetensors")):
        with safe_open(str(f), "pt") as sf:
            for k in sf.keys():
                if k.endswith((".qweight", ".qzeros", ".scales", ".g_idx")):
                    tensors[k] = sf.get_tensor(k)
    out: dict[str, torch.Tensor] = {}
    for k in tensors:
        if not k.endswith(".qweight"):
            continue
        name = k[: -len(".qweight")]
        q = unpack_rows(tensors[k].to(torch.int32), bits)  # (in, out)
        scales = tensors[name + ".scales"].float()  # (groups, out)
        zeros = unpack_cols(tensors[name + ".qzeros"].to(torch.int32), bits)[:, : scales.shape[1]] + zero_offset
        g_idx = tensors[name + ".g_idx"].long()  # (in,)
        q = q[: g_idx.numel()]
        W = scales[g_idx] * (q.float() - zeros[g_idx].float())  # (in, out)
        out[name] = (W.t().contiguous(), scales[g_idx].t().contiguous())
    return out, {"bits": bits, "format": fmt, "zero_offset_added": zero_offset}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", required=True, help="Hugging Face folder of a dense Llama-architecture model")
    p.add_argument("--calib", required=True, help=".safetensors with input_ids (n, seqlen) calibration windows")
    p.add_argument("--eval", required=True, help=".safetensors with input_ids (m, seqlen) evaluation windows")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=128, help="-1 = per channel")
    p.add_argument("--damp", type=float, default=0.01)
    p.add_argument("--no-true-sequential", action="store_true", help="one Hessian pass per layer for all linears")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="model dtype for calibration and eval")
    p.add_argument("--max-calib", type=int, default=None, help="use only the first N calibration windows")
    p.add_argument("--max-eval", type=int, default=None, help="use only the first N evaluation windows")
    p.add_argument("--save-quantized", default=None, help="keep GPTQModel's checkpoint here (default: a temp dir)")
    p.add_argument("--no-wq-ppl", action="store_true", help="skip wiki_ppl_fp32_wq (halves the eval time)")
    p.add_argument("--dense", action="store_true", help="only the unquantized model's perplexity (sanity check)")
    p.add_argument("--out", required=True, help="JSON report path")
    args = p.parse_args()

    import transformers

    dtype = DTYPES[args.dtype]
    calib = load_windows(args.calib, args.max_calib)
    windows = load_windows(args.eval, args.max_eval)
    cpu = torch.device("cpu")
    report: dict = {
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "model_dir": str(Path(args.model_dir).resolve()),
        "n_calib": int(calib.shape[0]),
        "seqlen": int(calib.shape[1]),
        "n_eval": int(windows.shape[0]),
        "eval_seqlen": int(windows.shape[1]),
        "dtype": args.dtype,
        "torch_threads": torch.get_num_threads(),
        "env": {k: os.environ.get(k, "") for k in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "GPTQMODEL_CPU_WORKERS")},
        "command": shlex.join([sys.executable, *sys.argv]),
    }

    if args.dense:
        t = time.time()
        model = dense_model(args.model_dir, dtype)
        report["mode"] = "dense"
        report["wiki_ppl"] = perplexity(model, windows, cpu, batch_size=1, progress=False)
        report["eval_s"] = time.time() - t
        report["gptqmodel_version"] = None
        try:
            import gptqmodel

            report["gptqmodel_version"] = gptqmodel.__version__
        except ImportError:
            pass
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        return

    import gptqmodel
    from gptqmodel import GPTQModel, QuantizeConfig
    from gptqmodel.quantization import gptq as gptq_mod

    # capture GPTQ's own fp32 fake-quantized weights (Q of fasterquant) before packing, for the cross-check
    captured: dict[str, torch.Tensor] = {}
    damps: dict[str, float] = {}
    original_quantize = gptq_mod.GPTQ.quantize

    def capturing_quantize(self, *a, **k):
        result = original_quantize(self, *a, **k)
        name = self._named_module.full_name if self._named_module is not None else self.name
        captured[name] = result[0].detach().to("cpu", torch.float32).clone()
        damps[name] = float(result[6])
        return result

    gptq_mod.GPTQ.quantize = capturing_quantize

    settings = dict(
        bits=args.bits,
        group_size=args.group_size,
        desc_act=False,
        sym=True,
        damp_percent=args.damp,
        damp_auto_increment=0.0,
        act_group_aware=False,
        static_groups=False,
        mse=0.0,
        true_sequential=not args.no_true_sequential,
        lm_head=False,
        offload_to_disk=False,
        fallback=None,
        device="cpu",
    )
    qc = QuantizeConfig(**settings)
    report["gptqmodel_version"] = gptqmodel.__version__
    report["settings"] = {
        **{k: v for k, v in settings.items() if k != "fallback"},
        "fallback": None,
        "blocksize": 128,  # GPTQ.quantize's default; GPTQModel exposes no knob for it
        "hessian": "2/N_tokens * sum X^T X, fp32 (HessianConfig defaults: no chunking, fp32 staging)",
        "calibration": "batch_size=1, calibration_sort=None, calibration_data_min_length=0, no padding",
        "config_class": type(qc).__name__,
        "resolved": {
            k: str(getattr(qc, k))
            for k in (
                "damp_percent",
                "damp_auto_increment",
                "act_group_aware",
                "mse",
                "static_groups",
                "desc_act",
                "true_sequential",
                "rotation",
                "format",
                "pack_dtype",
            )
        },
    }

    calibration = [
        {"input_ids": row.unsqueeze(0), "attention_mask": torch.ones_like(row).unsqueeze(0)} for row in calib
    ]
    t_load = time.time()
    qmodel = GPTQModel.load(args.model_dir, qc, dtype=dtype)
    report["load_s"] = time.time() - t_load
    t = time.time()
    qmodel.quantize(calibration, batch_size=1, calibration_sort=None, calibration_data_min_length=0)
    report["quantize_s"] = time.time() - t

    tmp = None
    if args.save_quantized:
        qdir = Path(args.save_quantized)
        qdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="gptqmodel_parity_")
        qdir = Path(tmp.name)
    t = time.time()
    qmodel.save(str(qdir))
    report["save_s"] = time.time() - t
    del qmodel
    gc.collect()

    deq, fmt = dequantize_checkpoint(qdir)
    report["checkpoint"] = {
        **fmt,
        "n_quantized_linears": len(deq),
        "saved_to": str(qdir) if args.save_quantized else None,
    }
    report["damp_used"] = sorted(set(damps.values()))
    missing = sorted(set(deq) ^ set(captured))
    if missing:
        raise SystemExit(f"checkpoint and captured GPTQ outputs name different modules: {missing[:5]}")

    model = dense_model(args.model_dir, dtype)
    # check: checkpoint dequantized vs GPTQ's fp32 wq, in units of the group's scale (fp16 scale rounding only)
    worst = 0.0
    for name, (W, step) in deq.items():
        wq = captured[name]
        if W.shape != wq.shape:
            raise SystemExit(f"{name}: checkpoint {tuple(W.shape)} vs GPTQ output {tuple(wq.shape)}")
        worst = max(worst, ((W - wq).abs() / step.clamp_min(1e-30)).max().item())
    report["max_abs_diff_checkpoint_vs_wq_in_steps"] = worst
    quant_names = set(deq)
    modules = dict(model.named_modules())
    if not quant_names <= set(modules):
        raise SystemExit(f"quantized names not in the dense model: {sorted(quant_names - set(modules))[:5]}")
    report["quantized_modules"] = sorted(quant_names)
    report["not_quantized_linears"] = sorted(
        n for n, m in modules.items() if isinstance(m, torch.nn.Linear) and n not in quant_names
    )

    with torch.no_grad():
        for name, (W, _) in deq.items():
            modules[name].weight.copy_(W.to(modules[name].weight.dtype))
    t = time.time()
    report["wiki_ppl"] = perplexity(model, windows, cpu, batch_size=1, progress=False)
    report["wiki_ppl_fp32_wq"] = None
    if not args.no_wq_ppl:
        with torch.no_grad():
            for name, wq in captured.items():
                modules[name].weight.copy_(wq.to(modules[name].weight.dtype))
        report["wiki_ppl_fp32_wq"] = perplexity(model, windows, cpu, batch_size=1, progress=False)
    report["eval_s"] = time.time() - t
    report["mode"] = "gptqmodel"
    if tmp is not None:
        tmp.cleanup()
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: report[k]
                for k in (
                    "gptqmodel_version",
                    "wiki_ppl",
                    "wiki_ppl_fp32_wq",
                    "quantize_s",
                    "max_abs_diff_checkpoint_vs_wq_in_steps",
                    "n_calib",
                    "seqlen",
                )
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
