"""Quantization (issue 15). So far: uniform quantizers and RTN (primitives.py), exact code packing (pack.py),
GPTQ on the OBS sweep shared with SparseGPT (gptq.py; prune/obs.py). Not wired into a stage yet.
SqueezeLLM dense-and-sparse and QuEST are not implemented yet."""
