"""The AST finetune stage's recipe schema (Huang et al., AAAI 2025, arXiv 2407.20584; thu-ml/Adaptive-Sparse-Trainer).

    stages:
      - finetune:
          method: ast
          steps: 3000               # optimizer steps
          micro_batch: 4            # sequences per forward
          seqlen: 2048
          grad_accum: 8             # micro-batches per optimizer step
          lr: 2.0e-5                # peak; linear warm-up then cosine to lr * min_lr_ratio
          warmup_steps: 500
          min_lr_ratio: 0.1
          weight_decay: 0.0         # plain AdamW decay (matrices only)
          grad_clip: 1.0            # global norm; 0 = off
          mask_interval: 10         # recompute the 2:4 mask from |W| every this many optimizer steps
          mask_score: magnitude
          masked_decay: 6.0e-5      # final decay on masked-out weights, ramped linearly over masked_decay_warmup
          masked_decay_warmup: 3000
          masked_decay_mode: gradient   # gradient (reference) | decoupled
          alpha: 0.33               # loss = alpha * CE + (1 - alpha) * T^2 KL(teacher || student)
          temperature: 2.0
          slorb: false              # Sparse Low-Rank Boosting, k inputs per group
          slorb_k: 16
          optimizer: adamw          # adamw | adamw8bit (bitsandbytes, CUDA only)
          gradient_checkpointing: true
          checkpoint_every: 500     # steps; 0 = no checkpoints
          eval_every: 0             # steps; 0 = only at the end
          seed: 0
          train_embeddings: false   # embeddings and lm_head stay frozen
          qat: none                 # none | quest: QuEST quantization-aware training of the 2:4 weights
          qat_bits: 4               # quest: weight bits (1, 2, 3, 4 or 8)

Reference values and where they come from:
- lr 2e-5, 500 warm-up steps, cosine to 0.1 x lr (`alpha_f: 0.1`), betas (0.9, 0.95), weight decay 0, gradient
  clipping at norm 1.0, KL weight 0.5 at T = 2, decay 6e-5 on masked weights, mask every 10 batches, SLoRB k = 16:
  LLaMA-2-7B/llmshearing/configs/llama2/7b.yaml.
- decay ramp: LLaMA-2-7B/train.py `SRSTE_Callback` (decay = batch x 2e-8 up to batch 3000, then 6e-5), i.e. a
  linear ramp to 6e-5 over 3000 steps; GPT-2 main.py `get_decay` ramps linearly over `--increase_step` (10000).
- alpha 0.33 / T = 2: README's "reproduce our methods" command (`--hardness_task 0.33 --hardness_kldiv 0.67`,
  sparse_modeling.py `kl_loss(temperature=2)`). The LLaMA config instead weighs CE 1 and KL 0.5 (alpha = 2/3 up to
  a factor 1.5 that Adam mostly ignores); set alpha: 0.67 to follow it.

QAT (`qat: quest`; Panferov et al. 2025, IST-DASLab/QuEST `HadamardTrustQuantizer`): every 2:4 Linear computes
with Q(W ⊙ M), QuEST's per-row RMS × Gaussian-clip grid over the kept weights (quant/quest.py), and the trust
estimator passes the gradient only where |Q(w) − w| ≤ step/2; the straight-through 2:4 mask then hands it to the
dense W as AST does. At the end the weights are quantized once more with the same function and the Linears'
records carry the codes, so the export holds exactly the model the last steps trained (ours: llm-compress-quant).
Deviations from QuEST: weights only (no W4A4: no export format or kernel computes 4-bit activations), and no
Hadamard rotation, which would make the 2:4 weights dense (quant/quest.py); QuEST trains from scratch, here it
finetunes a pretrained 2:4 model.
"""

from __future__ import annotations

from dataclasses import dataclass

from compress.schema import check_types, positive

OPTIMIZERS = ("adamw", "adamw8bit")
MASK_SCORES = ("magnitude",)
MASKED_DECAY_MODES = ("gradient", "decoupled")
QAT_METHODS = ("none", "quest")

EXPECTED = {
    "finetune.method": "the string 'ast'",
    "finetune.optimizer": f"a string, one of {', '.join(OPTIMIZERS)}",
    "finetune.mask_score": "the string 'magnitude'",
    "finetune.masked_decay_mode": f"a string, one of {', '.join(MASKED_DECAY_MODES)}",
    "finetune.qat": f"a string, one of {', '.join(QAT_METHODS)}",
    "finetune.qat_bits": "an integer, one of 1, 2, 3, 4, 8",
}


@dataclass(frozen=True)
class ASTConfig:
    method: str = "ast"
    steps: int = 3000
    micro_batch: int = 4
    seqlen: int = 2048
    grad_accum: int = 8
    lr: float = 2e-5
    warmup_steps: int = 500
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    mask_interval: int = 10
    # Only |W| (the LLaMA config's `mask_metric: 'magnitude'`): the reference's 'wanda' score needs activation
    # statistics kept current during training, which it only gathers once before training (main.py add_calibration).
    mask_score: str = "magnitude"
    masked_decay: float = 6e-5
    masked_decay_warmup: int = 3000
    # gradient: decay * (~M) * W added to the gradient before AdamW, as LLaMA-2-7B/train.py SRSTE_Callback does;
    # decoupled: W[~M] -= lr_t * decay_t * W[~M] after the AdamW step (about lr / sqrt(v) times weaker per step).
    masked_decay_mode: str = "gradient"
    alpha: float = 0.33
    temperature: float = 2.0
    slorb: bool = False
    slorb_k: int = 16
    optimizer: str = "adamw"
    gradient_checkpointing: bool = True
    checkpoint_every: int = 500
    eval_every: int = 0
    seed: int = 0
    train_embeddings: bool = False
    qat: str = "none"
    qat_bits: int = 4

    def __post_init__(self) -> None:
        check_types(self, "finetune", EXPECTED)
        if self.method != "ast":
            raise ValueError(f"finetune.method {self.method!r} is unknown; allowed: ast")
        for name in ("steps", "micro_batch", "seqlen", "grad_accum", "mask_interval", "slorb_k"):
            positive(f"finetune.{name}", getattr(self, name))
        if self.seqlen < 2:
            raise ValueError(f"finetune.seqlen must be at least 2 (next-token targets), got {self.seqlen}")
        if not self.lr > 0:
            raise ValueError(f"finetune.lr must be > 0, got {self.lr}; the reference uses 2e-5 for LLaMA-2-7B")
        for name in ("warmup_steps", "masked_decay_warmup", "checkpoint_every", "eval_every", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"finetune.{name} must be >= 0, got {getattr(self, name)}")
        if self.warmup_steps > self.steps:
            raise ValueError(
                f"finetune.warmup_steps ({self.warmup_steps}) exceeds finetune.steps ({self.steps}); lower it"
            )
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"finetune.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        for name in ("weight_decay", "grad_clip", "masked_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"finetune.{name} must be >= 0, got {getattr(self, name)}")
        if self.mask_score not in MASK_SCORES:
            raise ValueError(f"finetune.mask_score {self.mask_score!r} is unsupported; allowed: magnitude")
        if self.masked_decay_mode not in MASKED_DECAY_MODES:
            raise ValueError(
                f"finetune.masked_decay_mode {self.masked_decay_mode!r} is unknown; "
                f"allowed: {', '.join(MASKED_DECAY_MODES)}"
            )
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"finetune.alpha (CE weight; KL gets 1 - alpha) must be in [0, 1], got {self.alpha}")
        if not self.temperature > 0:
            raise ValueError(f"finetune.temperature must be > 0, got {self.temperature}; the reference uses 2")
        if self.qat not in QAT_METHODS:
            raise ValueError(f"finetune.qat {self.qat!r} is unknown; allowed: {', '.join(QAT_METHODS)}")
        if self.qat != "none":
            try:
                _ = self.qat_spec
            except ValueError as e:
                raise ValueError(f"finetune.qat_bits: {e}") from None
            if self.slorb:
                raise ValueError(
                    "finetune.slorb with finetune.qat: merging SLoRB's terms into the weights would move them off "
                    "the quantization grid; turn one of them off"
                )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"finetune.optimizer {self.optimizer!r} is unknown; allowed: {', '.join(OPTIMIZERS)}")

    @property
    def qat_spec(self):
        """The QuEST spec the 2:4 Linears train under (no rotation on a 2:4 layer); None without QAT."""
        if self.qat == "none":
            return None
        from quant.quest import QuestSpec

        return QuestSpec(bits=self.qat_bits, hadamard_block=0)

    @property
    def tokens_per_step(self) -> int:
        return self.micro_batch * self.grad_accum * self.seqlen
