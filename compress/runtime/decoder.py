"""Greedy decoding with a static KV cache, one decode step replayed from a CUDA graph on a GPU.

This is the loop `make bench-runtime` times and `python -m compress generate --fast` runs: the step's inputs
(token, position) live in fixed tensors, so after two warm-up steps the whole forward of one token is captured
once and replayed, with no host work per layer (the cache position lives in a device tensor advanced in place:
`cache_position` for transformers <= 5.1x, the cache's own `cumulative_length` after). Warm-up steps leave the
cache as a real step expects it (`warm_up`). With `compile` the model's forward is compiled first
(`compress.runtime.model.compile_forward`).
"""

from __future__ import annotations

import inspect

import torch


class StaticDecoder:
    def __init__(self, model, max_len: int, graphs: bool = True, compile: bool = False, log=None):
        self.model, self.max_len, self.log = model, max_len, log or (lambda m: None)
        self.graphs = graphs and next(model.parameters()).is_cuda
        params = inspect.signature(model.forward).parameters  # transformers >= 5.2x calls the KV cache `cache`
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.last_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}  # prefill: no full lm_head
        if compile:
            from compress.runtime.model import compile_forward

            compile_forward(model)
        self.mode = "eager"

    @torch.inference_mode()
    def start(self, ids: torch.Tensor) -> torch.Tensor:
        """Prefill `ids` (batch, length); returns the first greedy token (batch, 1) and readies `next()`."""
        from transformers import StaticCache

        batch, length = ids.shape
        if length + 1 > self.max_len:
            raise ValueError(f"prompt of {length} tokens does not fit max_len {self.max_len}")
        self.cache = StaticCache(config=self.model.config, max_cache_len=self.max_len)
        pos = torch.arange(length, device=ids.device)
        out = self.model(ids, cache_position=pos, use_cache=True, **{self.cache_kw: self.cache}, **self.last_only)
        self.tok = out.logits[:, -1:].argmax(-1)
        self.pos = torch.tensor([length], device=ids.device)
        self.at = length  # the position on the host (reading self.pos would synchronise every step)
        self._run = self._step
        if self.graphs:
            self._capture()
        return self.tok.clone()

    def _step(self) -> torch.Tensor:
        return self.model(self.tok, cache_position=self.pos, use_cache=True, **{self.cache_kw: self.cache}).logits

    @torch.inference_mode()
    def warm_up(self, steps: int = 2) -> None:
        """Run `steps` throwaway steps at the current position (compilation, autotuning) and leave the cache as
        a real step expects it: they rewrite the current slot with the current token, and caches that count
        their own length (transformers >= 5.2x: `cumulative_length`, advanced in place by every forward) are
        set back to the number of tokens really written."""
        for _ in range(steps):
            self._step()
        for layer in getattr(self.cache, "layers", []):
            n = getattr(layer, "cumulative_length", None)
            if isinstance(n, torch.Tensor):
                n.fill_(self.at)

    def _capture(self) -> None:
        try:
            self.graph, self.logits = capture(lambda: self.warm_up(2), self._step)
            self._run = self._replay
            self.mode = "cuda-graph"
        except Exception as e:  # noqa: BLE001 - a model that cannot be captured still decodes eagerly
            self.log(f"CUDA graph capture failed ({str(e).splitlines()[0][:200]}); decoding eagerly")
            torch.cuda.synchronize()

    def _replay(self) -> torch.Tensor:
        self.graph.replay()
        return self.logits

    @torch.inference_mode()
    def next(self) -> torch.Tensor:
        """Run the current token at the current position; returns the next greedy token (batch, 1)."""
        if self.at + 1 > self.max_len:
            raise ValueError(f"max_len {self.max_len} reached")
        logits = self._run()
        self.tok.copy_(logits[:, -1:].argmax(-1))
        self.pos += 1
        self.at += 1
        return self.tok.clone()


def capture(warm_up, step) -> tuple[torch.cuda.CUDAGraph, object]:
    """(a CUDA graph of `step()`, the output it holds), captured after `warm_up()` on a side stream (torch's
    recipe: lazy initialisation and autotuning happen outside the capture)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        warm_up()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    return graph, out


def greedy(model, ids: torch.Tensor, max_new_tokens: int, eos_token_id: int | None = None, graphs: bool = True,
           compile: bool = False, log=None) -> torch.Tensor:  # fmt: skip
    """(batch, new tokens) greedy continuation of `ids` through StaticDecoder; stops early once every row has
    produced `eos_token_id` (rows that finished keep repeating it, like transformers' padding with eos)."""
    dec = StaticDecoder(model, ids.shape[1] + max_new_tokens, graphs=graphs, compile=compile, log=log)
    toks = [dec.start(ids)]
    done = toks[0].squeeze(1) == eos_token_id if eos_token_id is not None else None
    while len(toks) < max_new_tokens and not (done is not None and bool(done.all())):
        t = dec.next()
        if done is not None:
            t = torch.where(done[:, None], torch.full_like(t, eos_token_id), t)
            done |= t.squeeze(1) == eos_token_id
        toks.append(t)
    return torch.cat(toks, dim=1)
