"""The `prune` stage: its recipe schema and how it runs in the layer-wise driver (registered in compress/stages.py).

    stages:
      - prune:
          method: wanda             # magnitude | wanda | sparsegpt
          pattern: "2:4"            # unstructured | N:M (at least N zeros in every M inputs)
          sparsity: null            # required for unstructured; must equal N/M when given with N:M
          ignore: []                # regexes (re.fullmatch) of Linear names left dense; lm_head always is
          true_sequential: false    # Linears of a layer in forward order, each group calibrated on the inputs the
                                    # already pruned ones give (IST-DASLab/sparsegpt `--true-sequential`)
          dsnot:                    # optional DSnoT refinement of the method's mask (omit for none)
            max_cycles: 50
            update_threshold: 0.1
            pow_of_var_regrowing: 1
            same_sign: true
            skip: []                # e.g. [mlp]: the reference's default leaves MLP projections at the init mask
          owl: {M: 5, lam: 0.08}    # optional OWL layer-wise sparsities around `sparsity` (unstructured only)

The algorithms are the pure tensor functions of prune/ (`prune_weight`, `make_stats`); this file only wires them to
the driver's contract (compress/stages.py `LayerwiseStage`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from torch import nn

from compress.errors import UserError
from compress.models import decoder_linears
from compress.records import LinearRecord
from compress.schema import check_types
from compress.stages import LayerwiseStage, Prepass, register
from prune.config import NM, DSnoTConfig, MagnitudeConfig, SparseGPTConfig, WandaConfig, parse_pattern
from prune.owl import outlier_ratio, owl_sparsities
from prune.stats import ActNormSq
from prune.step import make_stats, prune_weight
from prune.wanda import wanda_scores

PRUNE_METHODS = {"magnitude": MagnitudeConfig, "wanda": WandaConfig, "sparsegpt": SparseGPTConfig}

# what a field must be, where its type alone does not say it well enough (dotted recipe names)
EXPECTED = {
    "prune.method": f"a string, one of {', '.join(PRUNE_METHODS)}",
    "prune.pattern": "a quoted string such as '2:4' or 'unstructured' (YAML reads an unquoted 2:4 as the number 124)",
    "prune.sparsity": "a number in [0, 1) or null",
    "prune.ignore": "a list of strings (regexes of Linear names), e.g. ['.*mlp.down_proj']",
    "prune.dsnot.skip": "a list of strings (regexes of Linear names), e.g. [mlp]",
}


def _check_blocksize(method: str, pattern) -> None:
    """SparseGPT prunes N:M within blocks of columns: M must divide the block size (prune/config.py)."""
    block = SparseGPTConfig.blocksize
    if method == "sparsegpt" and isinstance(pattern, NM) and block % pattern.m:
        raise ValueError(
            f"prune: sparsegpt prunes in blocks of {block} columns, which M={pattern.m} of pattern '{pattern}' "
            f"does not divide; use an M that divides {block}, such as '2:4' or '4:8'"
        )


@dataclass(frozen=True)
class DSnoTOptions:
    """DSnoT refinement after the method (zyxxmu/DSnoT defaults). `skip`: regexes (re.search) of Linear names
    that keep the initial mask; the reference's default `--skip_layer mlp` is skip: ['mlp']."""

    max_cycles: int = 50
    update_threshold: float = 0.1
    pow_of_var_regrowing: float = 1.0
    same_sign: bool = True
    skip: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_types(self, "prune.dsnot", EXPECTED)


@dataclass(frozen=True)
class OWLOptions:
    """OWL layer-wise sparsity (Yin et al. 2024): outlier threshold M x mean score, spread +/- lam."""

    M: float = 5.0
    lam: float = 0.08

    def __post_init__(self) -> None:
        check_types(self, "prune.owl", EXPECTED)
        if self.M <= 0 or not 0 <= self.lam < 0.5:
            raise ValueError(f"owl needs M > 0 and 0 <= lam < 0.5, got M={self.M}, lam={self.lam}")


@dataclass(frozen=True)
class PruneConfig:
    method: str = "wanda"
    pattern: str = "2:4"
    sparsity: float | None = None
    ignore: tuple[str, ...] = ()
    dsnot: DSnoTOptions | None = None
    owl: OWLOptions | None = None
    true_sequential: bool = False

    def __post_init__(self) -> None:
        check_types(self, "prune", EXPECTED)
        if self.method not in PRUNE_METHODS:
            raise ValueError(f"prune.method {self.method!r} is unknown; allowed: {', '.join(PRUNE_METHODS)}")
        try:
            pattern = parse_pattern(self.pattern, self.sparsity)
        except ValueError as e:
            raise ValueError(f"prune: {e}") from None
        if self.owl is not None and isinstance(pattern, NM):
            raise ValueError(f"prune.owl distributes unstructured sparsity only; pattern is {self.pattern!r}")
        skip = self.dsnot.skip if self.dsnot is not None else ()
        for key, pat in [("ignore", p) for p in self.ignore] + [("dsnot.skip", p) for p in skip]:
            try:
                re.compile(pat)
            except re.error as e:
                raise ValueError(f"prune.{key} entry {pat!r} is not a valid regex ({e})") from None
        _check_blocksize(self.method, pattern)
        try:
            _ = self.spec  # the method's own config (and DSnoT's) validates itself: fail when the recipe loads
        except ValueError as e:
            raise ValueError(f"prune.{e}" if self.dsnot is not None else f"prune: {e}") from None

    @property
    def spec(self) -> MagnitudeConfig | WandaConfig | SparseGPTConfig | DSnoTConfig:
        """The algorithm's own config (prune/config.py), which the pruning code dispatches on."""
        base = PRUNE_METHODS[self.method](pattern=parse_pattern(self.pattern, self.sparsity))
        if self.dsnot is None:
            return base
        d = self.dsnot
        return DSnoTConfig(base, d.max_cycles, d.update_threshold, d.pow_of_var_regrowing, d.same_sign)

    def method_for(self, name: str):
        """The spec for one Linear: DSnoT's `skip` layers keep the initial method alone."""
        spec = self.spec
        if isinstance(spec, DSnoTConfig) and any(re.search(p, name) for p in self.dsnot.skip):
            return spec.init
        return spec


@register("prune", PruneConfig, uses_calibration=True)
class PruneStage(LayerwiseStage):
    """Prune every targeted Linear layer by layer with the recipe's method (OWL: per-layer sparsities from a
    measuring walk over the dense model first)."""

    def __init__(self, config: PruneConfig, ctx) -> None:
        super().__init__(config, ctx)
        self.sequential = config.true_sequential
        self.per_linear: dict[str, object] = {}  # OWL: the spec of each Linear at its layer's sparsity

    def describe(self) -> str:
        return f"{self.config.method} {self.config.spec.pattern}"

    def targets(self, model: nn.Module) -> dict[str, nn.Linear]:
        """Linear modules inside decoder layers that the recipe does not `ignore` (lm_head never is one)."""
        return decoder_linears(model, self.config.ignore)

    def check(self, targets: dict[str, nn.Linear]) -> None:
        pattern = self.config.spec.pattern
        if isinstance(pattern, NM):
            for name, m in targets.items():
                if m.in_features % pattern.m:
                    raise UserError(
                        f"{name} has {m.in_features} in-features, not divisible by M={pattern.m} of pattern {pattern}; "
                        f"leave it dense with prune.ignore: ['{re.escape(name)}']"
                    )

    def method_for(self, name: str):
        return self.per_linear.get(name) or self.config.method_for(name)

    def prepass(self) -> Prepass | None:
        """OWL: each layer's Wanda-score outlier ratio on the dense model, then a per-Linear spec with that layer's
        sparsity (Yin et al. 2024, Alg. 1)."""
        cfg = self.config
        if cfg.owl is None:
            return None
        ratios: dict[int, float] = {}
        names: dict[int, list[str]] = {}

        def measure(idx, linears, stats):
            scores = [wanda_scores(lin.weight.data, stats[n].value) for n, lin in linears.items()]
            ratios[idx] = outlier_ratio(scores, cfg.owl.M)
            names[idx] = list(linears)

        def conclude():
            layers = sorted(ratios)
            sparsities = owl_sparsities([ratios[i] for i in layers], cfg.spec.pattern.sparsity, cfg.owl.lam)
            self.per_linear = {
                n: dataclasses.replace(cfg, sparsity=s).method_for(n)
                for i, s in zip(layers, sparsities, strict=True)
                for n in names[i]
            }

        return Prepass(lambda name, lin: ActNormSq(lin.in_features, self.ctx.device), measure, conclude)

    def make_stats(self, name: str, linear: nn.Linear):
        return make_stats(self.method_for(name), linear.in_features, self.ctx.device)

    def step(self, idx: int, linears: dict[str, nn.Linear], stats: dict) -> dict[str, dict]:
        metrics = {}
        for name, lin in linears.items():
            method = self.method_for(name)
            try:
                pruned, keep = prune_weight(method, lin.weight.data, stats[name])
            except ValueError as e:  # e.g. a Hessian that no damping makes positive definite
                raise UserError(f"{name}: {e}") from None
            lin.weight.data.copy_(pruned)
            record = self.ctx.records.setdefault(name, LinearRecord(tuple(pruned.shape)))
            record.set_mask(method.pattern, keep.bool())
            metrics[name] = {"shape": list(pruned.shape), "sparsity": float((pruned == 0).float().mean())}
        return metrics

    def summary(self, metrics: dict[str, dict]) -> dict:
        pruned = list(metrics.values())
        numel = sum(m["shape"][0] * m["shape"][1] for m in pruned)
        out = {
            "pruned_linears": len(pruned),
            "sparsity_of_pruned_linears": sum(m["sparsity"] * m["shape"][0] * m["shape"][1] for m in pruned) / numel,
        }
        if pruned and all("rel_output_error" in m for m in pruned):
            out["mean_rel_output_error"] = sum(m["rel_output_error"] for m in pruned) / len(pruned)
        return out
