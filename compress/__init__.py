"""Orchestration: CLI, configs, model and data I/O, the layer-wise driver, export."""
