"""Evaluation: perplexity, lm-eval zero-shot (task definitions in lm_tasks), the cached `evaluate` of a model or
checkpoint and the `compare` table/plot."""
