"""Quantization (SqueezeLLM dense-and-sparse, QuEST Hadamard, GPTQ). Not implemented yet: planned in the issues."""
