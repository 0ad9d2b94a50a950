"""The `quant` stage: its recipe schema and how it runs (registered in compress/stages.py).

    stages:
      - prune: {method: sparsegpt, pattern: "2:4"}   # optional: a pruned layer keeps exactly its zeros
      - quant:
          method: gptq              # rtn | gptq | quest | squeezellm
          bits: 4                   # 2, 3, 4 or 8
          strategy: group           # group | channel (one scale per output row) | tensor
          group_size: 128           # input columns per scale (strategy group); must divide every in-features
          symmetric: true           # compressed-tensors' symmetric int (no zero point) when true
          act_order: false          # gptq: columns by decreasing diag H, static groups (no g_idx)
          blocksize: 128            # gptq: columns per lazy-update block
          percdamp: 0.01            # gptq: damping, fraction of mean(diag H)
          true_sequential: false    # Linears of a layer in forward order (gptq `--true-sequential`)
          pattern: null             # gptq: "2:4" (any N:M) chooses the mask in the same sweep (sparsegpt's joint
                                    # fasterprune with a quantizer); no prune stage before it then
          hadamard_block: 128       # quest: orthonormal block Hadamard rotation along in-features (0: none)
          outlier_fraction: 0.0045  # squeezellm: range outliers kept in fp16 CSR (0 for dense-only)
          sensitive_fraction: 0.0005  # squeezellm: top-Fisher entries kept in fp16 CSR
          kmeans_iters: 50          # squeezellm: Lloyd iterations of the per-row Fisher-weighted k-means
          fisher_samples: null      # squeezellm: calibration windows for the Fisher diagonal (null: all)
          ignore: []                # regexes (re.fullmatch) of Linear names left unquantized; lm_head always is

GPTQ runs in the one layer-wise driver (its Hessians are those SparseGPT uses); RTN needs no data and quantizes
each Linear where it is, without a calibration walk. On a Linear with a
record from an earlier prune stage, only the kept weights are quantized (GPTQ compensates the pruned ones' error
too, with the mask fixed) and the zero pattern survives exactly (0 is always on the grid).
Each quantized Linear's record gets its codes (quant/codes.py); the model keeps the decoded weight, which is what
is evaluated and exactly what the export writes.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from torch import nn
from tqdm.auto import tqdm

from compress.errors import UserError
from compress.models import decoder_linears
from compress.records import LinearRecord
from compress.schema import check_types, positive
from compress.stages import LayerwiseStage, ModelStage, register
from quant.config import GPTQConfig, RTNConfig
from quant.dense_sparse import DenseSparseSpec, fisher_diagonal
from quant.primitives import BITS, STRATEGIES, QuantSpec
from quant.quest import QuestSpec
from quant.step import make_stats, quantize_weight

QUANT_METHODS = ("rtn", "gptq", "quest", "squeezellm")

EXPECTED = {
    "quant.method": f"a string, one of {', '.join(QUANT_METHODS)}",
    "quant.bits": f"an integer, one of {', '.join(map(str, BITS))}",
    "quant.hadamard_block": "an integer: a power of two dividing every in-features (128, 64, 32), or 0",
    "quant.strategy": f"a string, one of {', '.join(STRATEGIES)}",
    "quant.ignore": "a list of strings (regexes of Linear names), e.g. ['.*mlp.down_proj']",
    "quant.pattern": "null or a string 'N:M' such as '2:4'",
}


@dataclass(frozen=True)
class QuantConfig:
    method: str = "gptq"
    bits: int = 4
    strategy: str = "group"
    group_size: int = 128
    symmetric: bool = True
    act_order: bool = False
    blocksize: int = 128
    percdamp: float = 0.01
    true_sequential: bool = False
    hadamard_block: int = 128
    outlier_fraction: float = 0.0045
    sensitive_fraction: float = 0.0005
    kmeans_iters: int = 50
    fisher_samples: int | None = None
    ignore: tuple[str, ...] = ()
    pattern: str | None = None

    def __post_init__(self) -> None:
        check_types(self, "quant", EXPECTED)
        if self.method not in QUANT_METHODS:
            raise ValueError(f"quant.method {self.method!r} is unknown; allowed: {', '.join(QUANT_METHODS)}")
        if self.fisher_samples is not None:
            positive("quant.fisher_samples", self.fisher_samples)
        if self.pattern is not None and self.method != "gptq":
            raise ValueError(
                f"quant.pattern (a mask chosen while quantizing) needs method gptq, not {self.method}; for "
                f"{self.method} put a prune stage before the quant stage"
            )
        for pat in self.ignore:
            try:
                re.compile(pat)
            except re.error as e:
                raise ValueError(f"quant.ignore entry {pat!r} is not a valid regex ({e})") from None
        try:
            _ = self.spec
        except ValueError as e:
            raise ValueError(f"quant: {e}") from None

    @property
    def quant_spec(self) -> QuantSpec:
        return QuantSpec(self.bits, self.strategy, self.group_size, self.symmetric)

    @property
    def spec(self) -> RTNConfig | GPTQConfig | QuestSpec:
        """The method's own config (quant/config.py), which the quantization code dispatches on."""
        if self.method == "quest":
            return QuestSpec(self.bits, self.hadamard_block)
        if self.method == "squeezellm":
            return DenseSparseSpec(self.bits, self.outlier_fraction, self.sensitive_fraction, self.kmeans_iters)
        if self.method == "rtn":
            return RTNConfig(self.quant_spec)
        return GPTQConfig(self.quant_spec, self.blocksize, self.percdamp, self.act_order, self.nm_pattern)

    @property
    def nm_pattern(self):
        """quant.pattern as an NM (None without one); ValueError for anything but 'N:M'."""
        if self.pattern is None:
            return None
        from prune.config import NM, parse_pattern

        nm = parse_pattern(self.pattern, None) if str(self.pattern).strip().lower() != "unstructured" else None
        if not isinstance(nm, NM):
            raise ValueError(f"pattern {self.pattern!r} is not N:M; joint GPTQ chooses N:M masks such as '2:4'")
        return nm

    def describe(self) -> str:
        if self.method == "quest":
            return f"quest w{self.bits} per row, hadamard {self.hadamard_block or 'none'}"
        if self.method == "squeezellm":
            sparse = self.outlier_fraction + self.sensitive_fraction
            return f"squeezellm w{self.bits} lut" + (f" + {sparse:.2%} fp16 outliers" if sparse else ", dense only")
        s = self.quant_spec
        grid = f"g{s.group_size}" if s.strategy == "group" else f" per {s.strategy}"
        joint = f" + {self.pattern} chosen in the sweep" if self.pattern else ""
        return f"{self.method} w{s.bits}{grid}{'' if s.symmetric else ' asym'}{joint}"

    def check_after(self, earlier: tuple) -> None:
        """Quantization is the last change to the weights: a quant stage takes at most one place in a recipe."""
        if any(isinstance(s, QuantConfig) for s in earlier):
            raise ValueError("a recipe quantizes once; keep one quant stage")
        if self.pattern is not None:
            from prune.stage import PruneConfig

            if any(isinstance(s, PruneConfig) for s in earlier):
                raise ValueError(
                    "quant.pattern chooses the mask while quantizing, but an earlier prune stage already chose one; "
                    "drop the prune stage or quant.pattern"
                )
        if any(getattr(s, "qat", "none") != "none" for s in earlier):
            raise ValueError(
                "the finetune stage's QAT already quantized the weights; drop the quant stage (a recipe quantizes once)"
            )


def check_targets(config: QuantConfig, targets: dict[str, nn.Linear]) -> None:
    if config.method == "squeezellm":
        return  # one lookup table per output row: any shape
    if config.method == "quest":
        for name, m in targets.items():
            try:
                config.spec.check(m.in_features)
            except ValueError as e:
                raise UserError(f"{name}: {e}") from None
        return
    spec = config.quant_spec
    for name, m in targets.items():
        if spec.strategy == "group" and m.in_features % spec.group_size:
            raise UserError(
                f"{name} has {m.in_features} in-features, not divisible by quant.group_size {spec.group_size}; "
                f"choose a group_size that divides it (e.g. 32 or 64), or leave it unquantized with "
                f"quant.ignore: ['{re.escape(name)}']"
            )


def quantize_linear(method, name: str, lin: nn.Linear, records, stats) -> dict:
    """Quantize one Linear in place (its recorded keep-mask respected) and put its codes in its record."""
    W = lin.weight.data
    record = records.setdefault(name, LinearRecord(tuple(W.shape)))
    keep = record.mask
    keep = None if keep is None else keep.to(W.device)
    if keep is not None and getattr(method, "pattern", None) is not None:
        raise UserError(
            f"{name} is already pruned (its record has a {record.pattern} mask, e.g. from a 2:4 --model checkpoint); "
            "quant.pattern would choose a second mask: drop quant.pattern"
        )
    try:
        W_hat, codes, chosen = quantize_weight(method, W, stats, keep, W.dtype)
    except ValueError as e:  # e.g. a Hessian that no damping makes positive definite
        raise UserError(f"{name}: {e}") from None
    if chosen is not None:  # joint GPTQ: the sweep chose the N:M mask, the record keeps it (exported as 2:4)
        record.set_mask(method.pattern, chosen.cpu())
    # the model's dtype rounds scale * (code - zero) once, as compressed-tensors' decompression in that dtype does
    lin.weight.data.copy_(W_hat.to(W.dtype))
    record.quant = codes
    return {"shape": list(W.shape)}


def summary(config: QuantConfig, metrics: dict[str, dict]) -> dict:
    done = list(metrics.values())
    out = {"quantized_linears": len(done), "quant": config.describe()}
    if done and all("rel_output_error" in m for m in done):
        out["quant_mean_rel_output_error"] = sum(m["rel_output_error"] for m in done) / len(done)
    return out


class LayerwiseQuantStage(LayerwiseStage):
    """GPTQ: every targeted Linear quantized layer by layer, on the Hessian of its inputs as the layers before it
    (already quantized) give them."""

    def __init__(self, config: QuantConfig, ctx) -> None:
        super().__init__(config, ctx)
        self.sequential = config.true_sequential
        self.method = config.spec

    def describe(self) -> str:
        return self.config.describe()

    def targets(self, model: nn.Module) -> dict[str, nn.Linear]:
        return decoder_linears(model, self.config.ignore)

    def check(self, targets: dict[str, nn.Linear]) -> None:
        check_targets(self.config, targets)

    def make_stats(self, name: str, linear: nn.Linear):
        return make_stats(self.method, linear.in_features, self.ctx.device)

    def step(self, idx: int, linears: dict[str, nn.Linear], stats: dict) -> dict[str, dict]:
        return {n: quantize_linear(self.method, n, lin, self.ctx.records, stats.get(n)) for n, lin in linears.items()}

    def summary(self, metrics: dict[str, dict]) -> dict:
        return summary(self.config, metrics)


class DirectQuantStage(ModelStage):
    """Methods that need no layer-wise calibration walk (RTN, QuEST, SqueezeLLM's whole-model Fisher): each
    targeted Linear quantized where it is."""

    def __init__(self, config: QuantConfig, ctx) -> None:
        super().__init__(config, ctx)
        self.method = config.spec

    def describe(self) -> str:
        return self.config.describe()

    def precheck(self, model: nn.Module) -> None:
        check_targets(self.config, decoder_linears(model, self.config.ignore))

    def run(self) -> dict:
        t0 = time.perf_counter()
        ctx = self.ctx
        targets = decoder_linears(ctx.model, self.config.ignore)
        check_targets(self.config, targets)
        timings, stats = {}, {}
        home = next(ctx.model.parameters()).device
        ctx.model.to(ctx.device)
        try:
            if isinstance(self.method, DenseSparseSpec):
                stats = self.fisher(targets)
                timings["fisher_s"] = round(time.perf_counter() - t0, 3)
            metrics = {}
            for name, lin in tqdm(targets.items(), desc="quantize", disable=not ctx.progress):
                metrics[name] = quantize_linear(self.method, name, lin, ctx.records, stats.pop(name, None))
        finally:
            ctx.model.to(home)
        timings["quantize_s"] = round(time.perf_counter() - t0 - timings.get("fisher_s", 0), 3)
        return {"summary": summary(self.config, metrics), "layers": metrics, "timings_s": timings}

    def fisher(self, targets: dict[str, nn.Linear]) -> dict:
        """SqueezeLLM's Fisher diagonal: squared per-sample gradients of the model's loss over calibration windows
        (the reference: 100 C4 samples of 512 tokens; ours: the run's calibration windows, `fisher_samples` of
        them), of the model as the earlier stages left it (a 2:4 model's own gradients)."""
        windows = self.ctx.windows
        if windows is None:
            raise UserError("quant.method squeezellm needs calibration windows for its Fisher diagonal")
        n = self.config.fisher_samples or windows.shape[0]
        try:
            return fisher_diagonal(self.ctx.model, windows[:n], targets, self.ctx.device, self.ctx.progress)
        except ValueError as e:
            raise UserError(str(e)) from None


def quant_stage(config: QuantConfig, ctx) -> LayerwiseQuantStage | DirectQuantStage:
    """The runner for a quant config: the layer-wise driver only for methods with calibration statistics."""
    if make_stats(config.spec, 1, "cpu") is None:
        return DirectQuantStage(config, ctx)
    return LayerwiseQuantStage(config, ctx)


register("quant", QuantConfig, uses_calibration=True)(quant_stage)
