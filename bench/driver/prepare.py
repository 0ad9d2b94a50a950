"""Main-venv helper of bench/driver_speed.py: the inputs both sides share.

    .venv/bin/python bench/driver/prepare.py WORK NSAMPLES SEQLEN

Writes WORK/windows.safetensors (`input_ids`: the calibration windows `python -m compress run` draws for
SmolLM2-135M: compress.data.calibration_windows(olmo-mix, tokenizer, NSAMPLES, SEQLEN, seed=0)) and WORK/dense/
(the embedded SmolLM2-135M, float32, written by compress.export.save_checkpoint: an HF folder transformers 4.57
reads exactly, bench/interop.py), and prints a JSON line describing them. Pins the CPU numerics like the commands
(bench/numerics.py), so the dequantised weights are the ones the CLI run starts from.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, os.environ.get("DRIVER_SPEED_CODE") or str(ROOT))  # bench/driver_speed.py --code

from bench.numerics import pin_like_the_commands  # noqa: E402

numerics = pin_like_the_commands()  # before torch loads

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from compress.data import calibration_windows, load_calibration_corpus  # noqa: E402
from compress.export import save_checkpoint  # noqa: E402
from compress.models import load_model  # noqa: E402

MODEL = "smollm2-135m"


def main() -> None:
    work, nsamples, seqlen = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    work.mkdir(parents=True, exist_ok=True)
    model, tokenizer, source = load_model(MODEL, torch.float32)
    windows = calibration_windows(load_calibration_corpus("olmo-mix"), tokenizer, nsamples, seqlen, 0)
    windows = windows.to(torch.int64).contiguous()
    save_file({"input_ids": windows}, work / "windows.safetensors")
    dense = work / "dense"
    save_checkpoint(model, tokenizer, dense, overwrite=True)
    print(
        json.dumps(
            {
                "model": MODEL,
                "source": source.describe(),
                "class": type(model).__name__,
                "parameters": sum(p.numel() for p in model.parameters()),
                "windows_shape": list(windows.shape),
                "windows_sha256": hashlib.sha256(windows.numpy().tobytes()).hexdigest(),
                "cpu_numerics": numerics,
            }
        )
    )


if __name__ == "__main__":
    main()
