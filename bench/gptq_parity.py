"""Our GPTQ against GPTQModel with identical calibration (issue 15): this side quantizes with the quant stage and
scores the same evaluation windows; bench/gptqmodel_parity.py is the GPTQModel side (its own environment).

    python bench/gptq_parity.py --make --model-dir out/parity/model --calib out/parity/calib.safetensors \\
        --eval out/parity/wiki.safetensors          # writes the fp32 dense model folder and both window files
    python bench/gptq_parity.py --model-dir ... --calib ... --eval ... --bits 4 --group-size 64 --out ours.json
    /work/side/gptqmodel/bin/python bench/gptqmodel_parity.py --model-dir ... --calib ... --eval ... \\
        --bits 4 --group-size 64 --out gptqmodel.json

Settings on both sides: damping 0.01, blocksize 128, symmetric, no act-order, true-sequential, batch 1, fp32 on
the CPU; perplexity by eval/perplexity.py on the same windows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MKL_CBWR", "AVX2,STRICT")  # the project's pinned CPU numerics, before torch loads
os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from compress.data import calibration_windows, load_calibration_corpus, perplexity_text  # noqa: E402
from compress.layerwise import run_layerwise_stage  # noqa: E402
from compress.models import load_model  # noqa: E402
from compress.stages import StageContext, kind_of  # noqa: E402
from eval.perplexity import perplexity, token_windows  # noqa: E402
from prune.stats import Hessian  # noqa: E402
from quant.stage import QuantConfig  # noqa: E402


class SumHessian(Hessian):
    """`--hessian-sum`: the same H = (2 / n_tokens) · Σ xxᵀ accumulated in GPTQModel's floating-point order (a plain
    fp32 sum of each batch's XᵀX, scaled once when read; GPTQModel `GPTQ.process_batch`) instead of ours and the
    IST-DASLab reference's running mean (prune/stats.py `Hessian`: H *= n/(n+b); H += (√(2/n)·x)ᵀ(√(2/n)·x)). The
    two differ by the scalar n_tokens / n_samples, which the relative damping cancels, and by fp32 rounding only;
    GPTQ's rounding decisions amplify that rounding (a 1e-7 relative change of H flips ~1% of a Linear's codes,
    and true-sequential carries the flips into every later layer), so only the same order reproduces GPTQModel's
    model. A parity experiment, not a setting of the quant stage."""

    def __init__(self, columns: int, device) -> None:  # noqa: D107 - no super().__init__: no running-mean H
        self.XtX = torch.zeros(columns, columns, dtype=torch.float32, device=device)
        self.nsamples, self.ntokens, self._H = 0, 0, None

    def add_batch(self, x: torch.Tensor) -> None:
        b = x.shape[0] if x.dim() == 3 else 1
        x = x.reshape(-1, x.shape[-1]).float()
        self.XtX += x.T @ x
        self.nsamples += b
        self.ntokens += x.shape[0]
        self._H = None

    @property
    def H(self) -> torch.Tensor:
        if self._H is None:
            self._H = self.XtX * (2.0 / max(self.ntokens, 1))
        return self._H


def make(args) -> None:
    model, tok, _ = load_model("smollm2-135m", torch.float32)
    model.save_pretrained(args.model_dir)
    tok.save_pretrained(args.model_dir)
    cal = calibration_windows(load_calibration_corpus("olmo-mix"), tok, args.nsamples, args.seqlen, 0)
    save_file({"input_ids": cal.contiguous()}, args.calib)
    ids = tok(perplexity_text("wiki"), return_tensors="pt").input_ids[0]
    save_file({"input_ids": token_windows(ids, args.seqlen, args.eval_windows).contiguous()}, args.eval)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--calib", type=Path, required=True)
    p.add_argument("--eval", type=Path, required=True)
    p.add_argument("--make", action="store_true", help="write the model folder and the window files, then stop")
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--eval-windows", type=int, default=32)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--max-eval", type=int, help="score only the first N evaluation windows")
    p.add_argument("--out", type=Path)
    p.add_argument("--hessian-sum", action="store_true", help="accumulate H in GPTQModel's order (SumHessian)")
    args = p.parse_args()
    if args.make:
        return make(args)
    if args.hessian_sum:
        import quant.step

        quant.step.Hessian = SumHessian  # the GPTQ statistics of this process only
    model, _, _ = load_model(str(args.model_dir), torch.float32)
    cal, ev = load_file(args.calib)["input_ids"], load_file(args.eval)["input_ids"][: args.max_eval]
    cfg = QuantConfig("gptq", args.bits, group_size=args.group_size, true_sequential=True)
    cpu = torch.device("cpu")
    stage = kind_of(cfg).runner(cfg, StageContext(model, None, cpu, cal, {}, progress=True))
    t0 = time.perf_counter()
    run_layerwise_stage(stage, model, cal, device=cpu, records=stage.ctx.records, measure_error=False)
    quantize_s = time.perf_counter() - t0
    result = {
        "settings": {"bits": args.bits, "group_size": args.group_size, "damp": 0.01, "true_sequential": True},
        "hessian": "sum (GPTQModel's order)" if args.hessian_sum else "running mean (ours, IST-DASLab's order)",
        "wiki_ppl": perplexity(model, ev, cpu),
        "eval_windows": int(ev.shape[0]),
        "quantize_s": round(quantize_s, 1),
        "n_calib": int(cal.shape[0]),
        "seqlen": int(cal.shape[1]),
        "command": "python " + " ".join(sys.argv),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
