"""Sparse finetuning: AST, the Adaptive Sparse Trainer (Huang et al., AAAI 2025, arXiv 2407.20584;
thu-ml/Adaptive-Sparse-Trainer). A 2:4 student is distilled from its frozen dense teacher while its dense weights
learn through W ⊙ M with straight-through gradients, masked-out weights decay, and the 2:4 mask is recomputed from
|W| every few steps; optional SLoRB adds a small dense term per Linear.

    config.py         ASTConfig, the `finetune` recipe section
    sparse_linear.py  SparseLinear (W ⊙ M, straight-through), sparsify_linears / restore_linears
    masks.py          2:4 masks from |W|, exactness checks, flip counts
    optim.py          AdamW, the lr and masked-decay schedules, the masked decay itself
    distill.py        alpha * CE + (1 - alpha) * T^2 KL(teacher || student)
    slorb.py          Sparse Low-Rank Boosting: S init, term, hooks on the restored model
    data.py           packed windows, self-distillation texts, dedup, train/eval disjointness, data summary
    memory.py         device-memory plan and check
    trainer.py        train_ast -> ASTResult, checkpoints and exact resume
"""
