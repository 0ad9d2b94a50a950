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
      output_error: false       # also report each Linear's relative output error (costs an extra matmul each)
    stages:                     # ordered; each entry is {kind: {settings}}; omit for no compression
      - prune: {method: wanda, pattern: "2:4"}   # schema: prune/stage.py
      - finetune: {method: ast, steps: 1000}     # schema: finetune/stage.py
    eval:
      perplexity: [wiki]        # wiki (embedded) | wikitext2 (Hub); [] to skip
      seqlen: 2048
      max_windows: null         # evaluate only the first K windows (CPU runs; reported)

A top-level `prune: {...}` (the schema before stages) still reads as `stages: [{prune: {...}}]`.
Each stage kind is registered by its own package (compress/stages.py); unknown kinds and keys are rejected with
the allowed names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from compress.errors import UserError
from compress.schema import build, check_types, positive
from compress.stages import kind_of, stage_kinds

CALIBRATION_DATASETS = ("olmo-mix", "c4", "wikitext2")
PERPLEXITY_DATASETS = ("wiki", "wikitext2")
DTYPES = ("auto", "bfloat16", "float16", "float32")

# what a field must be, where its type alone does not say it well enough (dotted recipe names)
EXPECTED = {
    "dtype": f"a string, one of {', '.join(DTYPES)}",
    "calibration.dataset": f"a string: {', '.join(CALIBRATION_DATASETS)} or a path to a .txt/.jsonl file",
    "eval.perplexity": f"a list such as [wiki] (allowed: {', '.join(PERPLEXITY_DATASETS)}; [] to skip)",
}


@dataclass(frozen=True)
class CalibrationConfig:
    dataset: str = "olmo-mix"
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0
    batch_size: int = 1
    # measure each Linear's relative output error |dW x|^2 / |W x|^2 in the driver's output pass: one more matmul per
    # Linear and a copy of its dense weight (issue 14 A.6: most of the gap to llm-compressor's propagate pass)
    output_error: bool = False

    def __post_init__(self) -> None:
        check_types(self, "calibration", EXPECTED)
        for name in ("nsamples", "seqlen", "batch_size"):
            positive(f"calibration.{name}", getattr(self, name))
        if self.dataset not in CALIBRATION_DATASETS and not self.dataset.endswith((".txt", ".jsonl")):
            raise ValueError(
                f"calibration.dataset {self.dataset!r} is not one of {', '.join(CALIBRATION_DATASETS)} "
                "or a .txt/.jsonl file"
            )


@dataclass(frozen=True)
class EvalConfig:
    perplexity: tuple[str, ...] = ("wiki",)
    seqlen: int = 2048
    max_windows: int | None = None

    def __post_init__(self) -> None:
        check_types(self, "eval", EXPECTED)
        for name in self.perplexity:
            if name not in PERPLEXITY_DATASETS:
                raise ValueError(f"eval.perplexity {name!r} is unknown; allowed: {', '.join(PERPLEXITY_DATASETS)}")
        positive("eval.seqlen", self.seqlen)
        if self.max_windows is not None:
            positive("eval.max_windows", self.max_windows)


@dataclass(frozen=True)
class Recipe:
    name: str = "custom"
    dtype: str = "auto"
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    stages: tuple[object, ...] = ()  # stage configs, in order (each kind's own frozen dataclass)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        check_types(self, "", EXPECTED)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is unknown; allowed: {', '.join(DTYPES)}")
        for i, stage in enumerate(self.stages):
            kind_of(stage)  # TypeError for an object that is no registered stage config
            check = getattr(stage, "check_after", None)  # a kind may require earlier stages (finetune: a mask)
            if check is not None:
                try:
                    check(self.stages[:i])
                except ValueError as e:
                    raise ValueError(f"stages[{i}].{kind_of(stage).name}: {e}") from None

    @property
    def uses_calibration(self) -> bool:
        return any(kind_of(s).uses_calibration for s in self.stages)


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs: the model, where to compute, and the recipe."""

    model: str
    recipe: Recipe
    device: str = "auto"
    recipe_path: str | None = None
    checkpoint_every_s: float = 300.0  # save resumable layer-wise state this often (long runs only)


def _stage(kind_name: str, settings, where: str):
    """One stage's config from its settings; messages carry the stage's place (`stages[1].prune.method ...`)."""
    kind = stage_kinds()[kind_name]
    try:
        return build(kind.config, settings or {}, where)
    except ValueError as e:
        msg = str(e)
        prefix = where.removesuffix(kind_name)  # "stages[1]." (empty for the old top-level `prune:`)
        raise ValueError(prefix + msg if prefix and msg.startswith(kind_name) else msg) from None


def parse_stages(value) -> tuple:
    kinds = stage_kinds()
    example = "[{prune: {method: wanda, pattern: '2:4'}}]"
    if not isinstance(value, list):
        raise ValueError(f"stages must be a list of one-key mappings such as {example}; got {value!r}")
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ValueError(
                f"stages[{i}] must be a mapping with one key, the stage kind ({', '.join(kinds)}); got {entry!r}"
            )
        ((name, settings),) = entry.items()
        if name not in kinds:
            raise ValueError(f"stages[{i}]: unknown stage kind {name!r}; allowed: {', '.join(kinds)}")
        out.append(_stage(name, settings, f"stages[{i}].{name}"))
    return tuple(out)


def recipe_from_dict(data: dict) -> Recipe:
    if not isinstance(data, dict):
        raise ValueError(f"recipe must be a mapping, got {type(data).__name__}")
    data = dict(data)
    if "prune" in data:  # the schema before stages: one prune stage
        if "stages" in data:
            raise ValueError("give either stages: [...] or the older top-level prune: {...}, not both")
        data["stages"] = (_stage("prune", data.pop("prune"), "prune"),)
    elif "stages" in data:
        data["stages"] = parse_stages(data["stages"])
    return build(Recipe, data, "")


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


def stages_dict(stages) -> list[dict]:
    """Stage configs as the recipe writes them: [{kind: {settings}}]."""
    return [{kind_of(s).name: dataclasses.asdict(s)} for s in stages]


def to_dict(obj) -> dict:
    """A config as plain data (the report's `config`); stages keep their kind names."""
    out = dataclasses.asdict(obj)
    recipe = obj if isinstance(obj, Recipe) else getattr(obj, "recipe", None)
    if isinstance(recipe, Recipe):
        target = out if isinstance(obj, Recipe) else out["recipe"]
        target["stages"] = stages_dict(recipe.stages)
    return out
