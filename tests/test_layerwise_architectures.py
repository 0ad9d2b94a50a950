"""The driver gives *every* decoder layer exactly what the model's own forward gives it, on each architecture.

Gemma-2/3 (sliding + global layers, another rotary base per layer type), Mistral and Qwen2 (sliding window
smaller than the sequence), Llama, Qwen3 and Phi-3: with a no-op step, the hidden states the driver feeds to
layer i equal the model's own (`output_hidden_states`, and a pre-hook on the layer inside the model's forward).
Reusing layer 0's arguments for every layer (the old driver) fails this on Gemma-2 (from layer 2, max |Δ| 3.8),
Gemma-3 (its global layer 5 and after, 2.9) and Qwen2 (its sliding layers, 0.03-0.06).
"""

import pytest
import torch
import transformers

from compress.errors import UserError
from compress.layerwise import capture_layer_inputs, run_layerwise
from compress.models import decoder_layers
from tests.conftest import TINY_DIMS

WINDOW, SEQ, LAYERS = 8, 24, 7  # window smaller than the sequence; Gemma-3's 6th layer is its global one
COMMON = dict(TINY_DIMS, head_dim=16, num_hidden_layers=LAYERS)
ARCHS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": WINDOW}),
    "qwen2": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 3},
    ),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"sliding_window": WINDOW}),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"sliding_window": WINDOW}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}),
}


def make(arch: str, attn: str) -> torch.nn.Module:
    config_name, model_name, extra = ARCHS[arch]
    if not hasattr(transformers, model_name):
        pytest.skip(f"transformers {transformers.__version__} has no {model_name}")
    kwargs = dict(COMMON, **extra)
    if arch == "phi3":
        kwargs.pop("head_dim")
    config = getattr(transformers, config_name)(**kwargs)
    config._attn_implementation = attn
    torch.manual_seed(0)
    try:
        return getattr(transformers, model_name)(config).eval()
    except ValueError as e:  # e.g. Gemma-2 has no SDPA attention (logit soft-capping)
        pytest.skip(str(e).split(".")[0])


def layer_inputs(model, run) -> list[list[torch.Tensor]]:
    """Inputs of every decoder layer (per call) while `run()` executes."""
    seen = [[] for _ in decoder_layers(model)]
    hooks = [
        layer.register_forward_pre_hook(
            lambda m, args, kwargs, i=i: seen[i].append((args[0] if args else kwargs["hidden_states"]).clone()),
            with_kwargs=True,
        )
        for i, layer in enumerate(decoder_layers(model))
    ]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_layer_gets_the_models_own_inputs(arch, attn):
    model = make(arch, attn)
    ids = torch.randint(0, 128, (4, SEQ), generator=torch.Generator().manual_seed(1))
    batches = list(ids.split(2))
    with torch.no_grad():
        own = model(input_ids=ids, output_hidden_states=True)
        ref = layer_inputs(model, lambda: model(input_ids=ids))
    driver = layer_inputs(
        model,
        lambda: run_layerwise(model, batches, lambda i, lin, st: {}, device=torch.device("cpu"), progress=False),
    )
    for i in range(LAYERS):
        got = torch.cat(driver[i])  # the driver runs the batches one by one
        torch.testing.assert_close(got, ref[i][0], rtol=1e-5, atol=1e-5, msg=f"{arch} layer {i} input")
        torch.testing.assert_close(got, own.hidden_states[i], rtol=1e-5, atol=1e-5, msg=f"{arch} hidden {i}")


def test_gemma3_layers_differ_so_the_test_can_fail():
    """The check above is only meaningful if the per-layer arguments really differ: Gemma-3's global layer gets
    another rotary table and mask than its sliding layers."""
    model = make("gemma3", "eager")
    ids = torch.randint(0, 128, (1, SEQ), generator=torch.Generator().manual_seed(1))
    _, calls = capture_layer_inputs(model, [ids], torch.device("cpu"))
    sliding, full = calls[0][0].kwargs, calls[0][5].kwargs
    assert not torch.equal(sliding["position_embeddings"][0], full["position_embeddings"][0])
    assert not torch.equal(sliding["attention_mask"], full["attention_mask"])
    assert calls[0][1].kwargs["attention_mask"] is sliding["attention_mask"]  # shared, not copied per layer


def test_an_architecture_that_changes_hidden_states_between_layers_is_refused():
    model = make("llama", "sdpa")
    inner = model.model
    real_forward = type(inner).forward

    layers = decoder_layers(model)
    original = layers[1]

    def rescaling_forward(self, *args, **kwargs):  # the stack doubles the hidden states before layer 1
        hooks = [layers[1].register_forward_pre_hook(lambda m, a, k: ((a[0] * 2, *a[1:]), k), with_kwargs=True)]
        try:
            return real_forward(self, *args, **kwargs)
        finally:
            for h in hooks:
                h.remove()

    type(inner).forward = rescaling_forward
    try:
        ids = torch.randint(0, 128, (1, SEQ))
        with pytest.raises(UserError, match="cannot reproduce this architecture"):
            capture_layer_inputs(model, [ids], torch.device("cpu"))
    finally:
        type(inner).forward = real_forward
        layers[1] = original
