"""Calibration statistics: small accumulators with `add_batch(x)` and an fp32 running mean."""

from __future__ import annotations

import torch


class ActNormSq:
    """Running mean over samples of ||X_j||_2^2 along tokens, per input column j.

    Matches locuslab/wanda lib/layerwrapper.py `WrappedGPT.add_batch`:
    scaler_row *= n / (n + b); n += b; scaler_row += ||x_j||^2 / n, with b the batch size in samples.
    """

    def __init__(self, columns: int, device: torch.device | str) -> None:
        self.value = torch.zeros(columns, dtype=torch.float32, device=device)
        self.nsamples = 0

    def add_batch(self, x: torch.Tensor) -> None:
        b = x.shape[0] if x.dim() == 3 else 1  # (B, T, d) or (T, d)
        x = x.reshape(-1, x.shape[-1])  # (B*T, d)
        self.value *= self.nsamples / (self.nsamples + b)
        self.nsamples += b
        self.value += torch.linalg.vector_norm(x, dim=0, dtype=torch.float32).pow(2) / self.nsamples


class Hessian:
    """H = (2/n) * sum_x x x^T over calibration tokens, fp32, as a running mean over samples.

    Matches IST-DASLab/sparsegpt `SparseGPT.add_batch`: H *= n / (n + b); n += b; x *= sqrt(2 / n); H += x x^T.
    """

    def __init__(self, columns: int, device: torch.device | str) -> None:
        self.H = torch.zeros(columns, columns, dtype=torch.float32, device=device)
        self.nsamples = 0

    def add_batch(self, x: torch.Tensor) -> None:
        b = x.shape[0] if x.dim() == 3 else 1
        x = x.reshape(-1, x.shape[-1]).float()  # (B*T, d)
        self.H *= self.nsamples / (self.nsamples + b)
        self.nsamples += b
        x = x * (2 / self.nsamples) ** 0.5
        self.H += x.T @ x
