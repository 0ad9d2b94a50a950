"""Evaluation: perplexity (and, later, lm-eval zero-shot scores)."""
