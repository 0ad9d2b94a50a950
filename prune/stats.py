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


class ChannelStats:
    """Per input channel: Wanda's ||X_j||^2 running mean, the per-sample token sum of x_j (zyxxmu/DSnoT
    lib/layerwrapper.py `sum_metric_row`), and the exact mean and variance of x_j over all tokens.

    Deviation: the reference averages per-batch variances (ignoring differences between batch means); we keep
    running sums and return the pooled variance.
    """

    def __init__(self, columns: int, device: torch.device | str) -> None:
        self.norm_sq = ActNormSq(columns, device)
        self.sum_row = torch.zeros(columns, dtype=torch.float64, device=device)
        self._s1 = torch.zeros(columns, dtype=torch.float64, device=device)
        self._s2 = torch.zeros(columns, dtype=torch.float64, device=device)
        self.ntokens = 0

    @property
    def nsamples(self) -> int:
        return self.norm_sq.nsamples

    def add_batch(self, x: torch.Tensor) -> None:
        b = x.shape[0] if x.dim() == 3 else 1
        n = self.norm_sq.nsamples
        self.norm_sq.add_batch(x)
        flat = x.reshape(-1, x.shape[-1]).double()  # (B*T, d)
        s1 = flat.sum(0)
        self.sum_row = self.sum_row * n / (n + b) + s1 / (n + b)
        self._s1 += s1
        self._s2 += flat.pow(2).sum(0)
        self.ntokens += flat.shape[0]

    @property
    def var(self) -> torch.Tensor:
        return (self._s2 / self.ntokens - (self._s1 / self.ntokens) ** 2).clamp_min(0).float()


class StatsGroup:
    """Several accumulators fed the same inputs (e.g. a Hessian for SparseGPT and channel stats for DSnoT);
    a part may be None (a method that needs no data)."""

    def __init__(self, *parts) -> None:
        self.parts = parts

    @property
    def nsamples(self) -> int:
        return min(p.nsamples for p in self.parts if p is not None)

    def add_batch(self, x: torch.Tensor) -> None:
        for p in self.parts:
            if p is not None:
                p.add_batch(x)
