"""2:4 speed where users run it (issue 16): transformers' own `generate` and a user's `torch.compile(model)` on a
Llama-2-7B-shaped model, dense vs bf16 2:4 vs int4 2:4 with the same magnitude masks, one process, one GPU.

    python bench/user_path.py [--layers 32] [--batches 1,4,16,64] [--modes generate,generate_nocompile,
        prefill_eager,prefill_compiled,memory] [--variants dense,ours_2of4,ours_int4_2of4] [--json bench/runtime.json]

- decode: `model.generate` with a static cache (a `StaticCache` of one size for every call, so the short and the
  long call run the same compiled graphs) and transformers' own compilation (its CompileConfig: inductor,
  reduce-overhead), or `disable_compile=True`. CUDA events around whole `generate` calls; the decode rate is
  batch · (long − short) / (t_long − t_short), so the prefill and the per-call setup cancel. Greedy, EOS off, a
  seeded random 128-token prompt per batch; an untimed call of each length, then the fastest of 3 timed ones.
- prefill: one 2048-token forward (`use_cache=False`), eager, and under `torch.compile(model)` (default mode, as
  a user writes it) after warm-up calls at 2048 and 1024 tokens (a second length makes the compiler's shapes
  symbolic, as a chat server's prompts do); the number of graphs dynamo compiled is recorded.
- memory: bytes of parameters + buffers of each variant as a user loads it (sparsify + prepare, what
  `compress.runtime.convert.load_runtime_model` does).
Each variant's logits on a 64-token prompt are compared with dense (bf16 2:4: same masked weights, so close;
int4: a rounding away) before anything is timed. Results go under `user_path` in the JSON (other keys kept).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.render import llama2_7b_shaped, run_meta, save  # noqa: E402
from compress.runtime.model import prepare, sparsify  # noqa: E402
from compress.runtime.timing import event_time_us  # noqa: E402
from prune.config import NM  # noqa: E402
from prune.magnitude import magnitude_mask  # noqa: E402

MODES = ("generate", "generate_nocompile", "prefill_eager", "prefill_compiled", "memory")
VARIANTS = ("dense", "ours_2of4", "ours_int4_2of4")
CONTEXT, SHORT, LONG = 128, 16, 80  # prompt tokens; new tokens of the short and the long generate call
REPS = 3  # timed calls of each length


def decode_rate(batch: int, short: int, long: int, short_ms: float, long_ms: float) -> float:
    """Tokens/s of the decode steps alone: the long call's extra tokens over its extra time."""
    if long <= short or long_ms <= short_ms:
        raise ValueError(
            f"the long call ({long} tokens, {long_ms:.1f} ms) must outlast the short one ({short}, {short_ms:.1f} ms)"
        )
    return batch * (long - short) / ((long_ms - short_ms) / 1e3)


def timed_ms(fn, device: torch.device) -> float:
    """Wall time of fn() in ms: CUDA events on a GPU (the host's launch work included), else perf_counter."""
    if device.type != "cuda":
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    return event_time_us(fn, reps=1, warmup=0) / 1e3


def build(layers: int, device: torch.device, tiny: bool = False):
    """The dense reference with real 2:4 magnitude masks on every decoder Linear (the 2:4 variants copy it)."""
    if tiny:  # a CPU smoke run of the script itself, not a benchmark
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        cfg = LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=layers, num_attention_heads=4,
                          num_key_value_heads=4, vocab_size=512, max_position_embeddings=4096)  # fmt: skip
        model = LlamaForCausalLM(cfg).to(device)
    else:
        model = llama2_7b_shaped(layers, device)
    for layer in model.model.layers:
        for m in layer.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.data *= magnitude_mask(m.weight.data, NM(2, 4))
    model.generation_config.eos_token_id = None  # every call generates exactly the tokens asked for
    model.generation_config.pad_token_id = 0
    return model.eval()


def variant(dense, name: str):
    if name == "dense":
        return dense
    model = copy.deepcopy(dense)
    # transformers keeps its compiled forward on the instance (GenerationMixin.get_compiled_call): a copy made after
    # the dense model's compiled `generate` would run the *dense* compiled graph
    for attr in ("_compiled_call", "_last_compile_config"):
        model.__dict__.pop(attr, None)
    sparsify(model, int4=name == "ours_int4_2of4")
    if next(model.parameters()).is_cuda:
        prepare(model)
    return model


def weight_gib(model) -> float:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / 2**30


def linear_gib(model) -> float:
    """GiB held by the decoder layers' Linear weights (nn.Linear or Sparse24Linear, every form it keeps)."""
    from compress.runtime.linear import Sparse24Linear

    total = 0
    for m in model.model.layers.modules():
        if isinstance(m, Sparse24Linear):
            total += sum(b.numel() * b.element_size() for name, b in m.named_buffers() if name != "bias")
        elif isinstance(m, torch.nn.Linear):
            total += m.weight.numel() * m.weight.element_size()
    return total / 2**30


def prompt(model, batch: int, tokens: int, seed: int) -> torch.Tensor:
    device = next(model.parameters()).device
    g = torch.Generator(device).manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, tokens), device=device, generator=g)


@torch.inference_mode()
def generate_tok_s(model, batch: int, compiled: bool) -> float:
    from transformers import StaticCache

    ids = prompt(model, batch, CONTEXT, seed=batch)
    device = ids.device

    def call(new: int):
        cache = StaticCache(config=model.config, max_cache_len=CONTEXT + LONG + 8)
        out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, past_key_values=cache,
                             disable_compile=not compiled)  # fmt: skip
        if out.shape[1] != CONTEXT + new:
            raise RuntimeError(f"generate returned {out.shape[1] - CONTEXT} new tokens, not {new}")

    times = {}
    for new in (SHORT, LONG):
        call(new)  # warm-up (compiles, captures graphs)
        # the fastest of REPS calls: eager decode is host-bound and one call moved by +-20% between runs
        times[new] = min(timed_ms(lambda n=new: call(n), device) for _ in range(REPS))
    return decode_rate(batch, SHORT, LONG, times[SHORT], times[LONG])


@torch.inference_mode()
def prefill_ms(model, compiled: bool, tokens: int = 2048) -> tuple[float, int | None]:
    """(ms of one `tokens` forward, graphs dynamo compiled or None when eager)."""
    device = next(model.parameters()).device
    ids = prompt(model, 1, tokens, seed=7)
    fn = model
    graphs = None
    if compiled:
        torch._dynamo.reset()
        from torch._dynamo.utils import counters

        counters.clear()
        fn = torch.compile(model)
        for n in (tokens, tokens // 2):  # the second length makes the shapes symbolic, as varied prompts do
            fn(ids[:, :n], use_cache=False)
    fn(ids, use_cache=False)
    ms = min(timed_ms(lambda: fn(ids, use_cache=False), device) for _ in range(3))
    if compiled:
        graphs = int(counters["stats"]["unique_graphs"])
    return ms, graphs


@torch.inference_mode()
def logits_rel_err(model, dense) -> float:
    ids = prompt(dense, 1, 64, seed=3)
    ref = dense(ids).logits.float()
    return float((model(ids).logits.float() - ref).norm() / ref.norm())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--batches", default="1,4,16,64")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="a small random Llama: a smoke run of this script on a CPU")
    p.add_argument("--json", type=Path, default=Path("bench/runtime.json"))
    args = p.parse_args()
    device = torch.device(args.device)
    modes, names = args.modes.split(","), args.variants.split(",")
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    results = json.loads(args.json.read_text()) if args.json.exists() else {}
    up = results.setdefault("user_path", {})
    up.update({"layers": args.layers, "context": CONTEXT, "short_long": [SHORT, LONG], "run": run_meta()})
    dense = build(args.layers, device, args.tiny)

    def put(path: list[str], value) -> None:
        d = up
        for k in path[:-1]:
            d = d.setdefault(k, {})
        d[path[-1]] = value
        save(args.json, results)

    for name in names:
        model = variant(dense, name)
        if name != "dense":
            put(["logits_rel_err", name], logits_rel_err(model, dense))
            print(f"{name}: logits rel err vs dense {up['logits_rel_err'][name]:.4f}", flush=True)
        if "memory" in modes:
            put(["memory_gib", name], weight_gib(model))
            put(["linear_weight_gib", name], linear_gib(model))
            print(f"{name}: weights + buffers {up['memory_gib'][name]:.2f} GiB", flush=True)
        for mode, key, compiled in (("prefill_eager", "eager", False), ("prefill_compiled", "compiled", True)):
            if mode not in modes:
                continue
            try:
                ms, graphs = prefill_ms(model, compiled)
                put(["prefill_ms", key, name], ms)
                if graphs is not None:
                    put(["prefill_compiled_graphs", name], graphs)
                print(f"{name}: prefill 2048 {key} {ms:.1f} ms" + (f" ({graphs} graphs)" if graphs else ""), flush=True)
            except Exception as e:  # noqa: BLE001 - one failed mode must not lose the others
                put(["errors", f"{mode}/{name}"], str(e)[:300])
                traceback.print_exc()
        decodes = (("generate", "decode_tok_s", True), ("generate_nocompile", "decode_tok_s_nocompile", False))
        for mode, key, compiled in decodes:
            if mode not in modes:
                continue
            for b in map(int, args.batches.split(",")):
                try:
                    tps = generate_tok_s(model, b, compiled)
                    put([key, f"batch{b}", name], tps)
                    print(
                        f"{name}: generate batch {b} {'compiled' if compiled else 'eager'} {tps:.1f} tok/s", flush=True
                    )
                except Exception as e:  # noqa: BLE001
                    put(["errors", f"{mode}/batch{b}/{name}"], str(e)[:300])
                    traceback.print_exc()
        if model is not dense:
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
