"""Device-memory estimate of an AST run, to refuse a recipe that cannot fit before loading anything big.

Per parameter: teacher weights in `teacher_dtype`; the student's fp32 master weights; fp32 gradients and AdamW
state (two fp32 moments, 8 B; bitsandbytes 8-bit AdamW two uint8 states, 2 B plus block scales) for trainable
parameters; one bool mask byte per masked weight; SLoRB's S with its gradient and state.

Activations per token and decoder layer, in bytes, under bf16 autocast with fp32 master weights (so the residual
stream is fp32) and SDPA/flash attention (no L x L score matrix). Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models", §4.1, Eq. 1) count 34·h bytes per token per GPT layer plus 5·a·L for
attention scores, which flash attention does not store; redone for a Llama layer:
- two RMSNorms, each saving the fp32 input, the fp32 normalised value and the bf16 output: 2 x 10h
- q and k before RoPE (bf16, 4h), q, k, v after it as SDPA saves them (6h), attention output and o_proj input (4h)
- SwiGLU MLP: gate and up outputs, silu(gate) and the down_proj input, bf16 each: 8i
=> 34h + 8i bytes (h hidden, i intermediate size; kv heads counted as full heads, an upper bound under GQA).
With gradient checkpointing (one checkpoint per decoder layer, transformers `gradient_checkpointing_enable`) only
each layer's fp32 input stays (4h per layer) plus one layer's activations during its recompute. Without
checkpointing the bf16 copy of W ⊙ M that each Linear saves for its backward stays alive (2 B per masked weight);
with it, one layer's worth. On the CPU everything runs in fp32: activations are counted twice.

Logits per token and vocabulary entry: the student's fp32 logits, log-softmax at T and log-softmax for the CE
(3 x 4 B), the teacher's fp32 logits and log-softmax at T (2 x 4 B) and the KL's elementwise product (4 B): 24 B;
plus the bf16 logits autocast produces for both (2 x 2 B) on CUDA.

Fixed overhead: 1 GiB (CUDA context and allocator) and 5 % fragmentation on top.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from finetune.config import ASTConfig

GiB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    """Parameter counts and the dimensions that set activation memory."""

    linear_params: int  # masked decoder Linears (2:4)
    embedding_params: int  # input embedding + untied lm_head (frozen unless train_embeddings)
    other_params: int  # norms, biases
    hidden: int
    intermediate: int
    layers: int
    vocab: int

    @property
    def total(self) -> int:
        return self.linear_params + self.embedding_params + self.other_params


def shape_from_config(config) -> ModelShape:
    """ModelShape of a Llama-style transformers config (Llama, Mistral, Qwen2: attention q/k/v/o + gate/up/down)."""
    h, i, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2  # q, o + k, v
    mlp = 3 * h * i
    tied = getattr(config, "tie_word_embeddings", False)
    # q/k/v biases where the config says so; Qwen2's implicit ones (no config key) are < 0.01 % and left out
    bias = (heads + 2 * kv) * head_dim if getattr(config, "attention_bias", False) else 0
    return ModelShape(
        linear_params=n * (attn + mlp),
        embedding_params=config.vocab_size * h * (1 if tied else 2),
        other_params=n * (2 * h + bias) + h,
        hidden=h,
        intermediate=i,
        layers=n,
        vocab=config.vocab_size,
    )


def shape_from_model(model: torch.nn.Module, masked: set[str]) -> ModelShape:
    """ModelShape counted from a loaded model; `masked` = names of the Linears that get 2:4 masks."""
    config = model.config
    linear = sum(m.weight.numel() for name, m in model.named_modules() if name in masked)
    emb = {id(p): p.numel() for m in (model.get_input_embeddings(), model.get_output_embeddings()) for p in [m.weight]}
    total = sum(p.numel() for p in model.parameters())
    return ModelShape(
        linear,
        sum(emb.values()),
        total - linear - sum(emb.values()),
        config.hidden_size,
        config.intermediate_size,
        config.num_hidden_layers,
        config.vocab_size,
    )


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per item; `total` includes the overhead."""

    teacher_weights: int
    student_weights: int
    gradients: int
    optimizer_state: int
    masks: int
    masked_weight_copies: int
    slorb: int
    activations: int
    logits: int
    overhead: int

    @property
    def total(self) -> int:
        return sum(asdict(self).values())

    def gib(self) -> dict[str, float]:
        out = {k: round(v / GiB, 2) for k, v in asdict(self).items()}
        out["total"] = round(self.total / GiB, 2)
        return out


def plan_memory(
    model: ModelShape | object,
    cfg: ASTConfig,
    device_type: str,
    teacher_dtype: torch.dtype = torch.bfloat16,
) -> MemoryPlan:
    """Estimate the peak device memory of `train_ast`; `model` is a ModelShape or a transformers config."""
    s = model if isinstance(model, ModelShape) else shape_from_config(model)
    trainable = s.linear_params + s.other_params + (s.embedding_params if cfg.train_embeddings else 0)
    state_bytes = 2 if cfg.optimizer == "adamw8bit" else 8
    slorb = s.linear_params // cfg.slorb_k if cfg.slorb else 0
    cpu = device_type != "cuda"
    tokens = cfg.micro_batch * cfg.seqlen
    per_layer = 34 * s.hidden + 8 * s.intermediate  # bytes / token, see the module docstring
    if cfg.gradient_checkpointing:
        act = tokens * (s.layers * 4 * s.hidden + per_layer)
        copies = 2 * s.linear_params // s.layers
    else:
        act = tokens * s.layers * per_layer
        copies = 2 * s.linear_params
    act, copies = (2 * act, 2 * copies) if cpu else (act, copies)
    logits = tokens * s.vocab * (24 if cpu else 28)
    parts = dict(
        teacher_weights=s.total * torch.finfo(teacher_dtype).bits // 8,
        student_weights=4 * s.total,
        gradients=4 * trainable,
        optimizer_state=state_bytes * trainable,
        masks=s.linear_params,
        masked_weight_copies=copies,
        slorb=slorb * (4 + 4 + state_bytes),
        activations=act,
        logits=logits,
    )
    overhead = (0 if cpu else GiB) + sum(parts.values()) // 20
    return MemoryPlan(**parts, overhead=overhead)


def check_fits(plan: MemoryPlan, available_bytes: int) -> None:
    """ValueError (one line) with the estimate in GiB and what to change when `plan` exceeds `available_bytes`."""
    if plan.total <= available_bytes:
        return
    g = plan.gib()
    big = ", ".join(f"{k} {v}" for k, v in sorted(g.items(), key=lambda kv: -kv[1]) if k != "total" and v >= 0.01)
    raise ValueError(
        f"finetune needs about {g['total']} GiB ({big}) but {available_bytes / GiB:.1f} GiB is available; "
        "lower finetune.micro_batch or finetune.seqlen (raise grad_accum to keep the batch), set "
        "gradient_checkpointing: true, optimizer: adamw8bit, or use a larger device"
    )
