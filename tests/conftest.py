import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

# The dimensions of every tiny random model in the tests (any architecture's config takes these keys).
TINY_DIMS = dict(
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=128,
    max_position_embeddings=256,
)


def tiny_llama(seed: int = 0, hidden: int = 64, layers: int = 2) -> LlamaForCausalLM:
    dims = dict(TINY_DIMS, hidden_size=hidden, intermediate_size=2 * hidden)
    config = LlamaConfig(**dims, num_hidden_layers=layers, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


class CharTokenizer:
    """Minimal tokenizer stand-in: one id per character (mod 120), EOS = 127."""

    eos_token_id = 127
    bos_token_id = None

    def __call__(self, text, add_special_tokens=True, return_tensors=None):
        ids = [ord(c) % 120 for c in text]
        if return_tensors == "pt":
            return type("Enc", (), {"input_ids": torch.tensor([ids])})()
        return {"input_ids": ids}


@pytest.fixture
def tiny():
    return tiny_llama()


@pytest.fixture
def char_tokenizer():
    return CharTokenizer()
