"""Stage kinds: each compression package registers the stages it provides (issue 14, A.1).

A recipe's `stages:` is an ordered list of one-key mappings, `{kind: {...settings}}`. Each kind (`prune`, later
`quant`; `finetune`) is registered by its own package's `stage.py` with `register(kind, Config)`: the frozen
dataclass that is its schema (and validates itself) and the class that runs it. Two contracts:

- `LayerwiseStage`: run by the one layer-wise driver (compress/layerwise.py). It declares what it needs from the
  driver — which Linears it targets, the calibration statistics per Linear (`make_stats`), an optional measuring
  walk over the dense model first (`prepass`, e.g. OWL's outlier ratios), and whether the Linears of a layer are
  taken in sequence (`sequential`, gptq/sparsegpt's `--true-sequential`) — and compresses one layer in `step`.
- `ModelStage`: gets the whole model (finetune).

Both write what they decide for a Linear into the run's `Records` (compress/records.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from compress.records import Records

STAGE_PACKAGES = ("prune", "quant", "finetune")  # each has a stage.py that registers its kinds


@dataclass
class Prepass:
    """A walk over the *dense* model before the stage's own: per layer `measure(idx, linears, stats)` with the
    statistics of `make_stats`, then `conclude()` once (e.g. OWL turns outlier ratios into per-layer sparsities)."""

    make_stats: Callable[[str, nn.Linear], object]
    measure: Callable[[int, dict[str, nn.Linear], dict], None]
    conclude: Callable[[], None]


@dataclass
class StageContext:
    """What every stage may use: the model, its tokenizer, the compute device, the calibration windows (None
    when no stage needs them), the records and a log function. `report` collects the stage's own results."""

    model: nn.Module
    tokenizer: object
    device: torch.device
    windows: torch.Tensor | None
    records: Records
    batch_size: int = 1
    progress: bool = True
    log: Callable[[str], None] = print
    work_dir: object = None  # a folder beside the output for a stage's resumable state (pathlib.Path)
    evaluate: Callable[[nn.Module], dict] | None = None  # perplexity of a model, for training curves
    load_dense: Callable[[], nn.Module] | None = None  # the dense model again (a distillation teacher)
    # texts scored for perplexity and the given zero-shot tasks (or task sets): never trained on
    heldout: Callable[[tuple[str, ...]], dict[str, str]] = lambda tasks: {}
    report: dict = field(default_factory=dict)


class LayerwiseStage:
    """Base of the stages the layer-wise driver runs (see the module docstring)."""

    sequential: bool = False  # take the Linears of a layer in forward order, each group seeing compressed inputs

    def __init__(self, config, ctx: StageContext) -> None:
        self.config, self.ctx = config, ctx

    def targets(self, model: nn.Module) -> dict[str, nn.Linear]:
        raise NotImplementedError

    def check(self, targets: dict[str, nn.Linear]) -> None:
        """Refuse shapes the stage cannot handle (a UserError before the long part)."""

    def precheck(self, model: nn.Module) -> None:
        """Called by the pipeline on every stage before the first one runs."""
        self.check(self.targets(model))

    def prepass(self) -> Prepass | None:
        return None

    def make_stats(self, name: str, linear: nn.Linear):
        return None

    def step(self, idx: int, linears: dict[str, nn.Linear], stats: dict) -> dict[str, dict]:
        """Compress the Linears of layer `idx` in place, update their records; return per-Linear metrics."""
        raise NotImplementedError

    def summary(self, metrics: dict[str, dict]) -> dict:
        return {}

    def describe(self) -> str:
        return type(self.config).__name__


class ModelStage:
    """Base of the stages that take the whole model (finetune)."""

    def __init__(self, config, ctx: StageContext) -> None:
        self.config, self.ctx = config, ctx

    def precheck(self, model: nn.Module) -> None:
        """Refuse shapes or settings the stage cannot handle (a UserError before the long part)."""

    def run(self) -> dict:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self.config).__name__


@dataclass(frozen=True)
class StageKind:
    name: str  # the recipe key
    config: type  # frozen dataclass: the schema
    runner: type  # LayerwiseStage or ModelStage subclass
    uses_calibration: bool  # the pipeline loads calibration windows when any stage does


_KINDS: dict[str, StageKind] = {}


def register(name: str, config: type, *, uses_calibration: bool):
    """Class decorator: `@register("prune", PruneConfig, uses_calibration=True) class PruneStage(...)`."""

    def deco(runner: type) -> type:
        _KINDS[name] = StageKind(name, config, runner, uses_calibration)
        return runner

    return deco


def stage_kinds() -> dict[str, StageKind]:
    """Every registered kind (importing the stage packages registers them)."""
    for pkg in STAGE_PACKAGES:
        importlib.import_module(f"{pkg}.stage")
    return dict(_KINDS)


def kind_of(config) -> StageKind:
    """The kind a stage config belongs to (dispatch on its type)."""
    for kind in stage_kinds().values():
        if type(config) is kind.config:
            return kind
    raise TypeError(f"no stage kind registered for {type(config).__name__}")
