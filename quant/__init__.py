"""Quantization (issue 15). So far: uniform quantizers and RTN (primitives.py), exact code packing (pack.py).
GPTQ, SqueezeLLM dense-and-sparse and QuEST are not implemented yet."""
