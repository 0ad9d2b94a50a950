"""Model card: measured figures as Hub model-index results, library_name by format, provenance, how to load."""

import pytest
from huggingface_hub import ModelCard

from compress.card import render


def _report(fmt="sparse-24-bitmask", model="smollm2-135m"):
    return {
        "config": {
            "model": model,
            "recipe": {"name": "wanda-2of4", "prune": {"method": "wanda", "pattern": "2:4", "sparsity": None}},
        },
        "calibration": {"nsamples": 32, "seqlen": 1024, "dataset": "olmo-mix", "seed": 0},
        "summary": {"pruned_linears": 210, "sparsity_of_pruned_linears": 0.5},
        "perplexity": {"wiki": {"dense": 23.525, "compressed": 243.527, "windows": 16, "seqlen": 2048}},
        "export": {"format": fmt},
    }


ZEROSHOT = {
    "meta": {"limit": 50},
    "row": {"acc": {"hellaswag": 30.0, "arc_easy": 44.0}, "acc_norm": {"hellaswag": 34.0}},
    "table_md": "| model | HellaSwag |\n|---|---:|\n| x | 30.0 |",
}


def test_every_measured_figure_is_a_model_index_result():
    card = ModelCard(render(_report(), ZEROSHOT))
    results = {(r.dataset_type, r.metric_type): r for r in card.data.eval_results}
    assert set(results) == {
        ("wikipedia", "perplexity"),
        ("hellaswag", "acc"),
        ("arc_easy", "acc"),
        ("hellaswag", "acc_norm"),
    }
    assert results[("wikipedia", "perplexity")].metric_value == 243.527
    assert results[("hellaswag", "acc_norm")].metric_value == 34.0
    assert "first 50 examples" in results[("arc_easy", "acc")].metric_name
    assert "model-index:" in card.content and card.data.model_name


@pytest.mark.parametrize(
    "fmt,library,loader", [("sparse-24-bitmask", "llm-compress", "compress.load("), ("dense", "transformers", "")]
)
def test_library_name_and_usage_follow_the_format(fmt, library, loader):
    text = render(_report(fmt))
    card = ModelCard(text)
    assert card.data.library_name == library
    assert loader in text and "from_pretrained" in text


def test_provenance_of_the_embedded_default_and_of_a_gguf_file():
    assert "dequantised from the Q4_1 GGUF `SmolLM2-135M-Instruct.Q4_1.gguf`" in render(_report())
    assert "dequantised from the GGUF file `model.Q8_0.gguf`" in render(_report(model="/data/model.Q8_0.gguf"))
    assert "Hub model `meta-llama/Llama-2-7b-hf`" in render(_report(model="meta-llama/Llama-2-7b-hf"))


def test_no_results_no_model_index():
    report = _report()
    report["perplexity"] = {}
    assert "model-index" not in render(report)
