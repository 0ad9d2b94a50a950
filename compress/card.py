"""Model card (README.md with Hub metadata) for a checkpoint folder, from measured results only."""

from __future__ import annotations

import json
from pathlib import Path

from compress.models import ALIASES

# Base models whose Hub id and license we know without the network.
EMBEDDED_BASE = {"smollm2-135m": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")}
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


def render(report: dict, zeroshot: dict | None = None) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    cfg = report["config"]
    recipe = cfg["recipe"]
    prune = recipe.get("prune")
    base_id, license_ = base_model(cfg["model"])
    fmt = report["export"]["format"]
    tags = ["compressed-tensors", "llm-compress"]
    if prune:
        tags += ["sparse", "pruned", prune["method"]]
        if prune["pattern"] == "2:4":
            tags.append("2:4")
    data = ModelCardData(
        base_model=base_id,
        license=license_ or "other",
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=tags,
    )
    lines = [f"# {Path(str(base_id or cfg['model'])).name} — {recipe['name']}", ""]
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
    lines += [
        "## Use",
        "",
        "```python",
        "from compress.export import load_checkpoint",
        'model, tokenizer = load_checkpoint("<this folder>")  # decodes the 2:4 layout bit-exactly',
        'ids = tokenizer("The capital of France is", return_tensors="pt").input_ids',
        "print(tokenizer.decode(model.generate(ids, max_new_tokens=20)[0]))",
        "```",
        "",
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
