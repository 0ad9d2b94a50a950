"""Run configuration: frozen dataclasses, loaded from YAML recipes and written back into the report.

Recipe schema (every key optional; unknown keys are rejected):

    name: wanda-2of4            # free text, shown in the report and model card
    dtype: auto                 # auto | bfloat16 | float16 | float32 (auto: bf16 on CUDA, fp32 on CPU)
    calibration:
      dataset: olmo-mix         # olmo-mix (embedded) | c4 | wikitext2 (Hub) | path/to/file.txt|.jsonl
      nsamples: 128
      seqlen: 2048              # capped by the model's max_position_embeddings
      seed: 0
      batch_size: 1             # calibration samples per forward pass in the layer-wise driver
    prune:                      # omit for no pruning
      method: wanda             # magnitude | wanda | sparsegpt
      pattern: "2:4"            # unstructured | N:M (at least N zeros in every M inputs)
      sparsity: null            # required for unstructured; must equal N/M when given with N:M
      ignore: []                # regexes (re.fullmatch) of Linear names left dense; lm_head always is
      dsnot:                    # optional DSnoT refinement of the method's mask (omit for none)
        max_cycles: 50
        update_threshold: 0.1
        pow_of_var_regrowing: 1
        same_sign: true
        skip: []                # e.g. [mlp]: the reference's default leaves MLP projections at the init mask
      owl: {M: 5, lam: 0.08}    # optional OWL layer-wise sparsities around `sparsity` (unstructured only)
    eval:
      perplexity: [wiki]        # wiki (embedded) | wikitext2 (Hub); [] to skip
      seqlen: 2048
      max_windows: null         # evaluate only the first K windows (CPU runs; reported)
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from compress.errors import UserError
from prune.config import NM, DSnoTConfig, MagnitudeConfig, SparseGPTConfig, WandaConfig, parse_pattern

PRUNE_METHODS = {"magnitude": MagnitudeConfig, "wanda": WandaConfig, "sparsegpt": SparseGPTConfig}
CALIBRATION_DATASETS = ("olmo-mix", "c4", "wikitext2")
PERPLEXITY_DATASETS = ("wiki", "wikitext2")
DTYPES = ("auto", "bfloat16", "float16", "float32")

# what a field must be, where its type alone does not say it well enough (dotted recipe names)
EXPECTED = {
    "dtype": f"a string, one of {', '.join(DTYPES)}",
    "calibration.dataset": f"a string: {', '.join(CALIBRATION_DATASETS)} or a path to a .txt/.jsonl file",
    "prune.method": f"a string, one of {', '.join(PRUNE_METHODS)}",
    "prune.pattern": "a quoted string such as '2:4' or 'unstructured' (YAML reads an unquoted 2:4 as the number 124)",
    "prune.sparsity": "a number in [0, 1) or null",
    "prune.ignore": "a list of strings (regexes of Linear names), e.g. ['.*mlp.down_proj']",
    "prune.dsnot.skip": "a list of strings (regexes of Linear names), e.g. [mlp]",
    "eval.perplexity": f"a list such as [wiki] (allowed: {', '.join(PERPLEXITY_DATASETS)}; [] to skip)",
}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _matches(tp, value) -> bool:
    """Whether `value` has type `tp` (bool is not an int; an int is a float; a list may stand for a tuple)."""
    if _is_union(tp):
        return any(_matches(a, value) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        return isinstance(value, (list, tuple)) and all(_matches(item, v) for v in value)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return not isinstance(tp, type) or isinstance(value, tp)


def _describe(tp) -> str:
    if _is_union(tp):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return "a list of strings" if typing.get_args(tp)[0] is str else "a list"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _shown(value) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)  # tuples came from YAML lists


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _check_types(obj, section: str) -> None:
    """ValueError naming the first field of dataclass `obj` whose value has the wrong type."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        tp = _hints(type(obj))[f.name]
        if not _matches(tp, value):
            dotted = f"{section}.{f.name}" if section else f.name
            raise ValueError(f"{dotted} must be {EXPECTED.get(dotted, _describe(tp))}; got {_shown(value)}")


def _check_blocksize(method: str, pattern) -> None:
    """SparseGPT prunes N:M within blocks of columns: M must divide the block size (prune/config.py)."""
    block = SparseGPTConfig.blocksize
    if method == "sparsegpt" and isinstance(pattern, NM) and block % pattern.m:
        raise ValueError(
            f"prune: sparsegpt prunes in blocks of {block} columns, which M={pattern.m} of pattern '{pattern}' "
            f"does not divide; use an M that divides {block}, such as '2:4' or '4:8'"
        )


@dataclass(frozen=True)
class CalibrationConfig:
    dataset: str = "olmo-mix"
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0
    batch_size: int = 1

    def __post_init__(self) -> None:
        _check_types(self, "calibration")
        for name in ("nsamples", "seqlen", "batch_size"):
            _positive(f"calibration.{name}", getattr(self, name))
        if self.dataset not in CALIBRATION_DATASETS and not self.dataset.endswith((".txt", ".jsonl")):
            raise ValueError(
                f"calibration.dataset {self.dataset!r} is not one of {', '.join(CALIBRATION_DATASETS)} "
                "or a .txt/.jsonl file"
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
        _check_types(self, "prune.dsnot")


@dataclass(frozen=True)
class OWLOptions:
    """OWL layer-wise sparsity (Yin et al. 2024): outlier threshold M x mean score, spread +/- lam."""

    M: float = 5.0
    lam: float = 0.08

    def __post_init__(self) -> None:
        _check_types(self, "prune.owl")
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

    def __post_init__(self) -> None:
        _check_types(self, "prune")
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


@dataclass(frozen=True)
class EvalConfig:
    perplexity: tuple[str, ...] = ("wiki",)
    seqlen: int = 2048
    max_windows: int | None = None

    def __post_init__(self) -> None:
        _check_types(self, "eval")
        for name in self.perplexity:
            if name not in PERPLEXITY_DATASETS:
                raise ValueError(f"eval.perplexity {name!r} is unknown; allowed: {', '.join(PERPLEXITY_DATASETS)}")
        _positive("eval.seqlen", self.seqlen)
        if self.max_windows is not None:
            _positive("eval.max_windows", self.max_windows)


@dataclass(frozen=True)
class Recipe:
    name: str = "custom"
    dtype: str = "auto"
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    prune: PruneConfig | None = None
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        _check_types(self, "")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is unknown; allowed: {', '.join(DTYPES)}")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs: the model, where to compute, and the recipe."""

    model: str
    recipe: Recipe
    device: str = "auto"
    recipe_path: str | None = None
    checkpoint_every_s: float = 300.0  # save resumable layer-wise state this often (long runs only)


def _build(cls, data, where: str):
    """Build dataclass `cls` from a mapping, rejecting unknown keys with their dotted name."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'recipe'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ValueError(f"unknown key '{dotted}'; allowed: {', '.join(names)}")
        kwargs[key] = _convert(hints[key], value, dotted)
    return cls(**kwargs)


def _convert(tp, value, where: str):
    if _is_union(tp):
        if value is None:
            return None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return _build(tp, value or {}, where)
    if typing.get_origin(tp) is tuple and isinstance(value, list):
        return tuple(value)
    return value  # anything else is type-checked by the dataclass (_check_types)


def recipe_from_dict(data: dict) -> Recipe:
    return _build(Recipe, data, "")


RECIPES_DIR = Path(__file__).resolve().parent / "recipes"  # shipped in the wheel as package data
DEFAULT_RECIPE = "wanda-2of4"


def packaged_recipes() -> dict[str, Path]:
    """The recipes that ship with the package: name (file stem) -> file."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def recipe_description(path: Path) -> str:
    """A recipe's one-line description: its first comment line."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def resolve_recipe(spec: str | Path) -> Path:
    """The YAML file `--recipe` means: an existing path wins; else a packaged recipe's name (`wanda-2of4`,
    also `wanda-2of4.yaml` and the old in-repo `recipes/wanda-2of4.yaml`); else a UserError listing the names."""
    path = Path(spec)
    if path.is_dir():
        raise UserError(f"recipe {spec} is a folder; pass a YAML file or a packaged recipe name")
    if path.exists():
        return path
    shipped = packaged_recipes()
    if len(path.parts) == 1 or path.parent == Path("recipes"):  # a name, or where the recipes used to live
        name = path.name.removesuffix(".yaml").removesuffix(".yml")
        if name in shipped:
            return shipped[name]
    raise UserError(
        f"recipe {str(spec)!r} not found: no such file and no packaged recipe of that name "
        f"(packaged: {', '.join(shipped)}; `llm-compress recipes` describes them)"
    )


def load_recipe(spec: str | Path) -> Recipe:
    """Load a recipe from a YAML path or a packaged recipe name (see `resolve_recipe`)."""
    path = resolve_recipe(spec)
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return recipe_from_dict(data)
    except yaml.YAMLError as e:
        raise UserError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    except (ValueError, TypeError) as e:
        raise UserError(f"recipe {path}: {e}") from None


def override(recipe: Recipe, *, nsamples=None, seqlen=None, dtype=None, eval_max_windows=None) -> Recipe:
    """Recipe with CLI overrides applied; None leaves a field as the recipe has it."""
    calibration = {k: v for k, v in {"nsamples": nsamples, "seqlen": seqlen}.items() if v is not None}
    try:
        recipe = dataclasses.replace(recipe, calibration=dataclasses.replace(recipe.calibration, **calibration))
        if dtype is not None:
            recipe = dataclasses.replace(recipe, dtype=dtype)
        if eval_max_windows is not None:
            recipe = dataclasses.replace(recipe, eval=dataclasses.replace(recipe.eval, max_windows=eval_max_windows))
    except ValueError as e:
        raise UserError(str(e)) from None
    return recipe


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)
