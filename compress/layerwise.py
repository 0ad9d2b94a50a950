"""The one layer-wise calibration driver (after IST-DASLab/sparsegpt `llama_sequential`).

1. Run the model's own forward once per batch with every decoder layer replaced by a recorder: this gives
   layer 0's hidden states and, for *every* layer, the exact arguments the model passes it (position
   embeddings, masks, ... — they differ per layer type in Gemma-2/3). Inputs and outputs are checked finite.
2. For each layer: move it to the compute device; hook its Linear modules and run the calibration batches
   through the *unmodified* layer to accumulate statistics; call the per-layer `step`; run the batches again
   through the modified layer to make the next layer's inputs (and measure each Linear's output error);
   move the layer back. Only one decoder layer is on the compute device at a time. Compressed weights and
   layer outputs are checked finite; a NaN stops the run naming the layer.
3. With a checkpoint, finished layers are saved atomically (compress/resume.py); Ctrl-C saves what is done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from compress.errors import Interrupted, UserError
from compress.models import decoder_layers
from compress.records import LinearRecord, Records
from compress.resume import LayerwiseCheckpoint
from compress.stages import LayerwiseStage

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
    records: dict = field(default_factory=dict)  # Linear name -> LinearRecord (set by prune_model)


@dataclass
class LayerCall:
    """What the model's own forward passes to one decoder layer besides its hidden states."""

    args: tuple  # positional arguments after the hidden states (usually none)
    kwargs: dict  # position embeddings, masks, position ids, ... exactly as the model computed them


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


class _Recorder(nn.Module):
    """Stands in for decoder layer `index` during the capture pass: records the call and passes the hidden
    states through unchanged (as a tensor, or as a 1-tuple for models that index `layer_outputs[0]`)."""

    def __init__(self, index: int, calls: list, as_tuple: bool) -> None:
        super().__init__()
        self.index, self.calls, self.as_tuple = index, calls, as_tuple
        self.last = None  # the object this recorder returned: the next layer must receive exactly it

    def forward(self, *args, **kwargs):
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        self.calls.append((hidden, LayerCall(tuple(args[1:]), kwargs)))
        self.last = hidden
        return (hidden,) if self.as_tuple else hidden


def _capture_once(model, layers, ids, as_tuple: bool, device) -> list[tuple[torch.Tensor, LayerCall]] | None:
    """One forward through recorders; None when a layer did not receive the previous layer's output as is."""
    calls: list[tuple[torch.Tensor, LayerCall]] = []
    real = list(layers)
    recorders = [_Recorder(i, calls, as_tuple) for i in range(len(real))]

    def stop(module, args, output):  # after the last layer: skip the final norm and the LM head
        raise _StopForward

    handle = recorders[-1].register_forward_hook(stop)
    for i, r in enumerate(recorders):
        layers[i] = r
    try:
        model(input_ids=ids.to(device), use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
        for i, m in enumerate(real):
            layers[i] = m
    if len(calls) != len(real):
        return None
    for i in range(1, len(calls)):  # nothing may happen to the hidden states between two layers
        if calls[i][0] is not recorders[i - 1].last:
            return None
    return calls


@torch.no_grad()
def capture_layer_inputs(
    model: nn.Module, batches: list[torch.Tensor], device: torch.device
) -> tuple[list[torch.Tensor], list[list[LayerCall]]]:
    """Layer 0's hidden states per batch and, per batch and layer, the exact call the model's own forward makes.

    Every decoder layer is replaced by a recorder for one forward pass per batch, so each layer gets what the
    architecture computes for it (Gemma-2/3: their own rotary base and sliding-window mask per layer type;
    Mistral: the sliding window), not layer 0's arguments. Tensors shared between layers (one mask for all
    layers of a type) stay shared, so this costs no more memory than one layer's arguments per layer type.
    Raises UserError for an architecture that changes the hidden states between layers (the driver could not
    reproduce it)."""
    layers = decoder_layers(model)
    home = next(model.parameters()).device
    hidden: list[torch.Tensor] = []
    calls: list[list[LayerCall]] = []
    as_tuple = False
    _move_outer(model, layers, device)
    try:
        for b, ids in enumerate(batches):
            got = _capture_once(model, layers, ids, as_tuple, device)
            if got is None and b == 0:  # models that unpack `layer_outputs[0]` take a tuple
                as_tuple = True
                got = _capture_once(model, layers, ids, as_tuple, device)
            if got is None:
                raise UserError(
                    f"{type(model).__name__}: the layer-wise driver cannot reproduce this architecture (its forward "
                    "does more between decoder layers than pass the hidden states on); refused rather than "
                    "calibrated on wrong inputs"
                )
            hidden.append(got[0][0])
            calls.append([c for _, c in got])
    finally:
        _move_outer(model, layers, home)
    return hidden, calls


def check_finite(what: str, tensors) -> None:
    """UserError naming `what` when any tensor holds NaN or inf (a NaN must never reach a mask or a file)."""
    for t in tensors:
        if not bool(torch.isfinite(t).all()):
            n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            raise UserError(
                f"{what} is not finite ({n_nan} NaN, {n_inf} inf values); check the model's weights and "
                "the calibration data, or use --dtype float32 if this is a float16 overflow"
            )


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


RECORD_PREFIX = "__record__."  # keys of a layer's resume file that hold its Linears' record tensors
RECORD_SEP = ":"  # __record__.<linear name>:<tensor name> (a Linear name holds dots, never a colon)


def record_tensors(records: Records | None, linears: dict[str, nn.Linear]) -> dict[str, torch.Tensor]:
    """The tensors of the records of `linears` (packed masks, quantization codes), keyed for a layer's resume file."""
    if not records:
        return {}
    return {
        f"{RECORD_PREFIX}{n}{RECORD_SEP}{k}": t
        for n in linears
        if n in records
        for k, t in records[n].tensors().items()
    }


def record_json(records: Records | None) -> dict:
    return {n: r.to_json() for n, r in (records or {}).items()}


def restore_records(records: Records | None, tensors: dict[str, torch.Tensor], saved: dict) -> None:
    """Take a resumed layer's record entries out of `tensors` (in place) into `records`."""
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key in [k for k in tensors if k.startswith(RECORD_PREFIX)]:
        name, _, part = key.removeprefix(RECORD_PREFIX).rpartition(RECORD_SEP)
        found.setdefault(name, {})[part] = tensors.pop(key)
    if records is not None:
        for name, parts in found.items():
            records[name] = LinearRecord.from_json(saved[name], parts)


def forward_groups(layer: nn.Module, linears: dict[str, nn.Linear], run_once) -> list[dict[str, nn.Linear]]:
    """The Linears of `linears` in the order one forward of `layer` calls them, consecutive ones that receive the
    same input tensor in one group (Llama: [q, k, v], [o], [gate, up], [down])."""
    calls: list[tuple[str, tuple]] = []
    alive = []  # the inputs, held: a freed input's address can be reused by the next Linear's input

    def note(name: str, x: torch.Tensor) -> None:  # returns None: a hook's return value replaces the output
        alive.append(x)
        calls.append((name, _tensor_key(x)))

    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: note(n, inp[0])) for n, m in linears.items()]
    try:
        run_once()
    finally:
        for h in hooks:
            h.remove()
    alive.clear()
    groups: list[dict[str, nn.Linear]] = []
    last_ptr, seen = None, set()
    for name, ptr in calls:
        if name in seen:  # a Linear called twice in one forward: keep its first position
            continue
        seen.add(name)
        if not groups or ptr != last_ptr:
            groups.append({})
        groups[-1][name] = linears[name]
        last_ptr = ptr
    missing = [n for n in linears if n not in seen]
    if missing:
        groups.append({n: linears[n] for n in missing})  # not called on this batch: last, as one group
    return groups


def _tensor_key(x: torch.Tensor) -> tuple:
    """Same data while both tensors are alive: address, shape, strides, dtype."""
    return (x.data_ptr(), tuple(x.shape), x.stride(), x.dtype)


def _stats_kind(s) -> tuple:
    return (type(s), *(_stats_kind(p) for p in getattr(s, "parts", ())))


class SharedInputs:
    """Feeds each Linear's input to its accumulator, once per distinct input: Linears that receive the same tensor
    (q/k/v, gate/up) and need the same kind of statistics share one accumulator after the first forward call
    (a Hessian is 4/7 of the work on Llama otherwise: 7 Linears, 4 distinct inputs). The first call feeds every
    Linear, so the shared accumulator holds exactly what each would have held; later calls check that the
    followers still see their leader's tensor. Accumulators are read-only for the steps (SparseGPT clones H)."""

    def __init__(self, stats: dict) -> None:
        self.stats = stats
        self.leader: dict[str, str] = {}  # follower -> leader, from the first call on
        self.seen: dict[str, int] = {}  # name -> data_ptr of its input in the current call
        self.calls = 0

    def add(self, name: str, x: torch.Tensor) -> None:
        self.seen[name] = x  # held until the call ends: a freed input's address can be reused by a later one
        lead = self.leader.get(name)
        if lead is None:
            self.stats[name].add_batch(x)
        elif lead not in self.seen or _tensor_key(self.seen[lead]) != _tensor_key(x):
            raise RuntimeError(f"{name} no longer shares its input with {lead}; statistics would be wrong")

    def end_call(self) -> None:
        if self.calls == 0:
            first: dict[tuple, str] = {}
            for name, x in self.seen.items():
                key = (_tensor_key(x), _stats_kind(self.stats[name]), self.stats[name].nsamples)
                if key in first:
                    self.leader[name] = first[key]
                    self.stats[name] = self.stats[first[key]]
                else:
                    first[key] = name
        self.calls += 1
        self.seen = {}


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
    sequential: bool = False,
    progress: bool = True,
    checkpoint: LayerwiseCheckpoint | None = None,
    records: Records | None = None,
) -> LayerwiseResult:
    """Walk the decoder layers once; see the module docstring. `batches`: token ids, (B, T) each.

    `sequential`: the targeted Linears of a layer are taken in groups, in forward order (Linears fed the same input
    tensor form one group: q/k/v, gate/up), each group's statistics gathered with the groups before it already
    compressed (IST-DASLab/sparsegpt `llama_sequential` with `--true-sequential`); one statistics pass per group.

    With `checkpoint`, finished layers (and their Linears' `records`) and the hidden states are saved from time to
    time (and on Ctrl-C), and a run with the same key continues after the last saved layer."""
    t0 = time.perf_counter()
    layers = decoder_layers(model)
    hidden, calls = capture_layer_inputs(model, batches, device)
    check_finite("the input of decoder layer 0 (embedding output)", hidden)
    start = checkpoint.next_layer if checkpoint else 0
    if start:  # resume: restore finished layers and the inputs of layer `start`
        for i in range(start):
            tensors = checkpoint.layer_tensors(i)
            restore_records(records, tensors, checkpoint.state["records"])
            layers[i].load_state_dict(tensors)
        saved = checkpoint.hidden()
        if [tuple(h.shape) for h in saved] != [tuple(h.shape) for h in hidden]:
            raise UserError(f"resume data in {checkpoint.folder} does not match these batches; delete it to restart")
        hidden = [h.to(device=device, dtype=ref.dtype) for h, ref in zip(saved, hidden, strict=True)]
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

    def forward(layer, i: int, idx: int):
        c = calls[i][idx]
        return layer(result.hidden[i], *c.args, **c.kwargs)

    done = start  # layers [0, done) are finished and `result.hidden` holds the inputs of layer `done`
    try:
        bar = tqdm(range(start, len(layers)), desc="layers", initial=start, total=len(layers), disable=not progress)
        for idx in bar:
            layer = layers[idx]
            tick("to_home_s")
            home = _to_device(layer, device)
            tick("to_device_s")
            named = {f"{stack}.{idx}.{n}": m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
            linears = {n: m for n, m in named.items() if targets(n, m)}
            for n, m in linears.items():
                check_finite(f"{n}.weight", [m.weight])
            dense = {n: m.weight.detach().clone() for n, m in linears.items()} if measure_error else {}
            groups = (
                forward_groups(layer, linears, lambda la=layer, i=idx: forward(la, 0, i)) if sequential else [linears]
            )
            metrics = {}
            for group in groups:
                stats = {n: (make_stats(n, m) if make_stats else None) for n, m in group.items()}

                # Pass 1: statistics from the layer as it is (unmodified, or with the earlier groups compressed).
                shared = SharedInputs(stats)
                hooks = [
                    m.register_forward_hook(lambda mod, inp, out, n=n, sh=shared: sh.add(n, inp[0].detach()))
                    for n, m in group.items()
                    if stats[n] is not None
                ]
                if hooks:
                    for i in range(len(result.hidden)):
                        forward(layer, i, idx)
                        shared.end_call()
                    for handle in hooks:
                        handle.remove()
                tick("stats_pass_s")

                metrics.update(step(idx, group, stats))
                del stats
                for n, m in group.items():
                    check_finite(f"{n}.weight after compression", [m.weight])
                tick("step_s")

            # Pass 2: next layer's inputs from the modified layer; per-Linear output error vs the dense weight.
            errors = {n: torch.zeros(2, dtype=torch.float64, device=device) for n in dense}
            deltas = {n: dense[n] - m.weight.detach() for n, m in linears.items() if n in dense}
            del dense

            hooks = [linears[n].register_forward_hook(_error_hook(deltas[n], errors[n])) for n in deltas]
            outputs = [_layer_output(forward(layer, i, idx)) for i in range(len(result.hidden))]
            for handle in hooks:
                handle.remove()
            del deltas
            check_finite(f"the output of decoder layer {idx} ({stack}.{idx})", outputs)
            tick("output_pass_s")

            for n in linears:
                entry = dict(metrics.get(n, {}))
                if n in errors:
                    num, den = errors[n].tolist()
                    entry["rel_output_error"] = num / den if den > 0 else 0.0
                result.metrics[n] = entry
            _to_home(layer, home)
            result.hidden = outputs
            done = idx + 1
            if checkpoint is not None and done < len(layers):
                finished[idx] = {**layer.state_dict(), **record_tensors(records, linears)}
                if checkpoint.due():
                    checkpoint.save(done, result.hidden, result.metrics, finished, record_json(records))
                    finished = {}
    except KeyboardInterrupt:
        if checkpoint is None:
            raise
        if done > checkpoint.next_layer:  # keep what is finished (one atomic checkpoint)
            checkpoint.save(done, result.hidden, result.metrics, finished, record_json(records))
        if checkpoint.next_layer == 0:
            raise
        raise Interrupted(
            f"layers 0-{checkpoint.next_layer - 1} of {len(layers)} are saved in {checkpoint.folder}; "
            f"rerun the same command to resume from layer {checkpoint.next_layer}"
        ) from None

    tick("to_home_s")
    result.timings.update(phase)
    result.timings["total_s"] = time.perf_counter() - t0
    return result


def run_layerwise_stage(
    stage: LayerwiseStage,
    model: nn.Module,
    windows: torch.Tensor,
    *,
    device: torch.device,
    batch_size: int = 1,
    measure_error: bool = True,
    progress: bool = True,
    checkpoint: LayerwiseCheckpoint | None = None,
    records: Records | None = None,
) -> LayerwiseResult:
    """Run one layer-wise stage as it declares (compress/stages.py): its targets checked, its optional measuring
    walk over the dense model, then the walk that compresses, with its statistics and (true-)sequential order."""
    targets = stage.targets(model)
    stage.check(targets)
    batches = list(windows.split(batch_size))
    pre = stage.prepass()
    if pre is not None:

        def measure(idx, linears, stats):
            pre.measure(idx, linears, stats)
            return {}

        run_layerwise(
            model,
            batches,
            measure,
            device=device,
            make_stats=pre.make_stats,
            targets=lambda name, lin: name in targets,
            measure_error=False,
            progress=progress,
        )
        pre.conclude()
    return run_layerwise(
        model,
        batches,
        stage.step,
        device=device,
        make_stats=stage.make_stats,
        targets=lambda name, lin: name in targets,
        measure_error=measure_error,
        sequential=stage.sequential,
        progress=progress,
        checkpoint=checkpoint,
        records=records,
    )
