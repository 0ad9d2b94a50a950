"""Sparse finetuning (AST 2:4 training with distillation, QuEST QAT). Not implemented yet: planned in the issues."""
