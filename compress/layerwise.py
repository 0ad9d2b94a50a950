"""The one layer-wise calibration driver (after IST-DASLab/sparsegpt `llama_sequential`).

1. Capture the inputs of decoder layer 0 with *all* keyword arguments (position embeddings, masks, ...)
   through a forward pre-hook that stops the forward pass.
2. For each layer: move it to the compute device; hook its Linear modules and run the calibration batches
   through the *unmodified* layer to accumulate statistics; call the per-layer `step`; run the batches again
   through the modified layer to make the next layer's inputs (and measure each Linear's output error);
   move the layer back. Only one decoder layer is on the compute device at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from compress.models import decoder_layers
from compress.resume import LayerwiseCheckpoint

# step(layer_index, {name: Linear}, {name: stats or None}) -> {name: metrics}; modifies weights in place.
Step = Callable[[int, dict[str, nn.Linear], dict[str, object]], dict[str, dict]]
# make_stats(name, linear) -> accumulator with add_batch(x), or None when the step needs no data for it.
MakeStats = Callable[[str, nn.Linear], object]


class _StopForward(Exception):
    pass


@dataclass
class LayerwiseResult:
    hidden: list[torch.Tensor]  # outputs of the last decoder layer, one per batch (on the compute device)
    metrics: dict[str, dict] = field(default_factory=dict)  # per Linear name
    timings: dict[str, float] = field(default_factory=dict)


def _move_outer(model: nn.Module, layers: nn.ModuleList, device: torch.device) -> None:
    """Move every parameter and buffer that is not inside a decoder layer (embeddings, rotary, norm, head)."""
    layer_ids = {id(m) for layer in layers for m in layer.modules()}
    for module in model.modules():
        if id(module) in layer_ids or module is layers:
            continue
        for p in module.parameters(recurse=False):
            p.data = p.data.to(device)
        for name, b in module.named_buffers(recurse=False):
            module._buffers[name] = b.to(device)


@torch.no_grad()
def capture_layer0_inputs(model: nn.Module, batches: list[torch.Tensor], device: torch.device):
    """Run the model up to decoder layer 0 and return (hidden states, kwargs) per batch."""
    layers = decoder_layers(model)
    home = next(model.parameters()).device
    captured: list[tuple[torch.Tensor, dict]] = []

    def hook(module, args, kwargs):
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.append((hidden, kwargs))
        raise _StopForward

    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    _move_outer(model, layers, device)
    try:
        for ids in batches:
            try:
                model(input_ids=ids.to(device), use_cache=False)
            except _StopForward:
                pass
    finally:
        handle.remove()
        _move_outer(model, layers, home)
    return [h for h, _ in captured], [k for _, k in captured]


def _to_device(layer: nn.Module, device: torch.device) -> dict[str, torch.Tensor]:
    """Move a layer's parameters and buffers to `device`; return the original tensors to copy back into."""
    home = {n: t.data for n, t in [*layer.named_parameters(), *layer.named_buffers()]}
    layer.to(device)
    return home


def _to_home(layer: nn.Module, home: dict[str, torch.Tensor]) -> None:
    """Copy the (possibly modified) tensors back into their original storage: no new host allocation."""
    for n, t in [*layer.named_parameters(), *layer.named_buffers()]:
        if t.data.data_ptr() != home[n].data_ptr():
            home[n].copy_(t.data)
            t.data = home[n]


def _error_hook(delta: torch.Tensor, acc: torch.Tensor):
    """Accumulate ||dW x||^2 and ||W x||^2 (dense output) into acc[0], acc[1] from a Linear's forward."""

    def hook(module, inp, out):
        delta_out = inp[0] @ delta.T  # (B, T, out): dense output minus compressed output
        acc[0] += torch.linalg.vector_norm(delta_out, dtype=torch.float32).square()
        acc[1] += torch.linalg.vector_norm(out + delta_out, dtype=torch.float32).square()

    return hook


def _layer_output(out):
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def run_layerwise(
    model: nn.Module,
    batches: list[torch.Tensor],
    step: Step,
    *,
    device: torch.device,
    make_stats: MakeStats | None = None,
    targets: Callable[[str, nn.Linear], bool] = lambda name, lin: True,
    measure_error: bool = True,
    progress: bool = True,
    checkpoint: LayerwiseCheckpoint | None = None,
) -> LayerwiseResult:
    """Walk the decoder layers once; see the module docstring. `batches`: token ids, (B, T) each.

    With `checkpoint`, finished layers and the hidden states are saved from time to time, and a run with
    the same key continues after the last saved layer."""
    t0 = time.perf_counter()
    layers = decoder_layers(model)
    hidden, layer_kwargs = capture_layer0_inputs(model, batches, device)
    start = checkpoint.next_layer if checkpoint else 0
    if start:  # resume: restore finished layers and the inputs of layer `start`
        for i in range(start):
            layers[i].load_state_dict(checkpoint.layer_tensors(i))
        hidden = [h.to(device) for h in checkpoint.hidden()]
    result = LayerwiseResult(hidden=hidden, metrics=dict(checkpoint.state["metrics"]) if start else {})
    finished: dict[int, dict[str, torch.Tensor]] = {}
    result.timings["capture_s"] = time.perf_counter() - t0
    stack = next(name for name, module in model.named_modules() if module is layers)  # e.g. "model.layers"

    phase = {k: 0.0 for k in ("to_device_s", "stats_pass_s", "step_s", "output_pass_s", "to_home_s")}
    clock = [time.perf_counter()]

    def tick(key: str) -> None:  # wall time per phase (synchronised on CUDA so the split is real)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        phase[key] += now - clock[0]
        clock[0] = now

    for idx in tqdm(range(start, len(layers)), desc="layers", initial=start, total=len(layers), disable=not progress):
        layer = layers[idx]
        tick("to_home_s")
        home = _to_device(layer, device)
        tick("to_device_s")
        named = {f"{stack}.{idx}.{n}": m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
        linears = {n: m for n, m in named.items() if targets(n, m)}
        stats = {n: (make_stats(n, m) if make_stats else None) for n, m in linears.items()}

        # Pass 1: statistics from the unmodified layer.
        hooks = [
            m.register_forward_hook(lambda mod, inp, out, s=stats[n]: s.add_batch(inp[0].detach()))
            for n, m in linears.items()
            if stats[n] is not None
        ]
        if hooks:
            for h, kw in zip(hidden, layer_kwargs, strict=True):
                layer(h, **kw)
            for handle in hooks:
                handle.remove()
        tick("stats_pass_s")

        dense = {n: m.weight.detach().clone() for n, m in linears.items()} if measure_error else {}
        metrics = step(idx, linears, stats)
        del stats
        tick("step_s")

        # Pass 2: next layer's inputs from the modified layer; per-Linear output error vs the dense weight.
        errors = {n: torch.zeros(2, dtype=torch.float64, device=device) for n in dense}
        deltas = {n: dense[n] - m.weight.detach() for n, m in linears.items() if n in dense}
        del dense

        hooks = [linears[n].register_forward_hook(_error_hook(deltas[n], errors[n])) for n in deltas]
        for i, (h, kw) in enumerate(zip(hidden, layer_kwargs, strict=True)):
            hidden[i] = _layer_output(layer(h, **kw))
        for handle in hooks:
            handle.remove()
        del deltas
        tick("output_pass_s")

        for n in linears:
            entry = dict(metrics.get(n, {}))
            if n in errors:
                num, den = errors[n].tolist()
                entry["rel_output_error"] = num / den if den > 0 else 0.0
            result.metrics[n] = entry
        _to_home(layer, home)
        if checkpoint is not None and idx + 1 < len(layers):
            finished[idx] = dict(layer.state_dict())
            if checkpoint.due():
                checkpoint.save(idx + 1, hidden, result.metrics, finished)
                finished = {}

    tick("to_home_s")
    result.timings.update(phase)
    result.timings["total_s"] = time.perf_counter() - t0
    return result
