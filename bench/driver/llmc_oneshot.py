"""The side-environment half of bench/driver_speed.py: llm-compressor 0.10's `oneshot`, timed (never the main venv).

    /work/side/interop/bin/python bench/driver/llmc_oneshot.py REQUEST.json

REQUEST.json: {"method": "wanda" | "sparsegpt", "model": dense HF folder, "windows": safetensors with `input_ids`
(nsamples, seqlen), "out": folder to save the pruned model in, "result": json file}.

Runs oneshot(model, Dataset(input_ids, attention_mask = 1), WandaPruningModifier / SparseGPTModifier(sparsity=0.5,
mask_structure="2:4", targets=["Linear"], ignore=["re:.*lm_head"]), pipeline="sequential", batch_size=1, no
shuffling) on the CPU in float32, then `model.save_pretrained(out, save_compressed=True)` (sparse-24-bitmask).
Timed: the whole oneshot call, and inside it (wrappers that only read the clock) the sequential pipeline, its
torch.fx tracing, the calibration pass (modifier hooks on), the compression (`compress_modules`) and the propagation
pass (hooks off) per subgraph — llm-compressor's equivalents of our capture / stats pass / step / output pass.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path


def versions() -> dict:
    from importlib.metadata import version

    pkgs = ("llmcompressor", "compressed-tensors", "transformers", "torch", "datasets", "accelerate")
    return {p: version(p) for p in pkgs} | {"python": platform.python_version()}


class Clock:
    """Wall time per phase, collected by wrappers around llm-compressor's functions (they change nothing else)."""

    def __init__(self) -> None:
        self.s: dict[str, float] = defaultdict(float)
        self.per_subgraph: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.subgraph_ids: dict[int, int] = {}

    def wrap(self, owner, name: str, key: str):
        import inspect

        static = inspect.getattr_static(owner, name)
        kind = type(static) if isinstance(static, (staticmethod, classmethod)) else None
        raw = static.__func__ if kind else static

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return raw(*args, **kwargs)
            finally:
                self.s[key] += time.perf_counter() - t0

        setattr(owner, name, kind(timed) if kind else timed)


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text())
    t_import = time.perf_counter()
    import llmcompressor.pipelines.sequential.pipeline as seq
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning.sparsegpt import SparseGPTModifier
    from llmcompressor.modifiers.pruning.wanda import WandaPruningModifier
    from llmcompressor.modifiers.utils.hooks import HooksMixin
    from llmcompressor.pipelines.sequential.helpers import Subgraph
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    import_s = time.perf_counter() - t_import

    clock = Clock()
    clock.wrap(seq.SequentialPipeline, "__call__", "pipeline_s")
    clock.wrap(seq, "trace_subgraphs", "trace_subgraphs_s")
    clock.wrap(seq.LifecycleCallbacks, "sequential_epoch_end", "sequential_epoch_end_s")
    for cls in (WandaPruningModifier, SparseGPTModifier):
        clock.wrap(cls, "compress_modules", "compress_modules_s")
    forward = Subgraph.forward

    def timed_forward(self, *args, **kwargs):
        idx = clock.subgraph_ids.setdefault(id(self), len(clock.subgraph_ids))
        key = "propagate_pass_s" if HooksMixin._HOOKS_DISABLED else "calibrate_pass_s"
        t0 = time.perf_counter()
        try:
            return forward(self, *args, **kwargs)
        finally:
            dt = time.perf_counter() - t0
            clock.s[key] += dt
            clock.per_subgraph[idx][key] += dt

    Subgraph.forward = timed_forward

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(request["model"], dtype=torch.float32).eval()
    # transformers 5's tokenizer_config.json names a class 4.57 lacks; the ids are given, oneshot only wants a processor
    special = json.loads((Path(request["model"]) / "tokenizer_config.json").read_text())
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(Path(request["model"]) / "tokenizer.json"),
        **{k: v for k, v in special.items() if k in ("bos_token", "eos_token", "pad_token", "unk_token")},
    )
    load_s = time.perf_counter() - t0
    ids = load_file(request["windows"])["input_ids"]
    nsamples, seqlen = ids.shape
    dataset = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})

    common = dict(sparsity=0.5, mask_structure="2:4", targets=["Linear"], ignore=["re:.*lm_head"])
    cls = {"wanda": WandaPruningModifier, "sparsegpt": SparseGPTModifier}[request["method"]]
    modifier = cls(**common)
    defaults = {k: getattr(modifier, k) for k in ("sparsity", "mask_structure", "targets", "ignore")}
    for k in ("block_size", "dampening_frac", "sequential_targets", "sparsity_profile", "preserve_sparsity_mask"):
        if hasattr(modifier, k):
            defaults[k] = getattr(modifier, k)

    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    oneshot(
        model=model,
        dataset=dataset,
        processor=tokenizer,
        recipe=modifier,
        num_calibration_samples=nsamples,
        max_seq_length=seqlen,
        shuffle_calibration_samples=False,
        batch_size=1,
        pipeline="sequential",
    )
    oneshot_s = time.perf_counter() - t0
    Subgraph.forward = forward

    linears = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n]
    zeros = sum(int((m.weight == 0).sum()) for m in linears)
    numel = sum(m.weight.numel() for m in linears)  # before saving: it compresses in place
    t0 = time.perf_counter()
    model.save_pretrained(request["out"], save_compressed=True)
    save_s = time.perf_counter() - t0
    # the same tokenizer files as the dense folder (ours), so our evaluator tokenizes identically
    import shutil

    for f in Path(request["model"]).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "chat_template")):
            shutil.copy(f, Path(request["out"]) / f.name)

    subgraphs = [dict(v) for _, v in sorted(clock.per_subgraph.items())]
    result = {
        "method": request["method"],
        "versions": versions(),
        "torch_threads": threads,
        "aten": torch.backends.cpu.get_cpu_capability(),
        "env": {k: os.environ.get(k, "") for k in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS")},
        "modifier": type(modifier).__name__,
        "modifier_settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in defaults.items()},
        "sequential_targets_used": getattr(modifier, "sequential_targets", None),
        "calibration": {"nsamples": nsamples, "seqlen": seqlen, "batch_size": 1, "shuffle": False},
        "import_s": round(import_s, 3),
        "load_s": round(load_s, 3),
        "oneshot_s": round(oneshot_s, 3),
        "phases_s": {k: round(v, 3) for k, v in sorted(clock.s.items())},
        "subgraphs": len(subgraphs),
        "last_subgraph_s": {k: round(v, 3) for k, v in subgraphs[-1].items()} if subgraphs else {},
        "save_s": round(save_s, 3),
        "sparsity_of_pruned_linears": zeros / numel,
        "pruned_linears": len(linears),
    }
    Path(request["result"]).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("oneshot_s", "phases_s", "subgraphs")}), flush=True)


if __name__ == "__main__":
    main()
