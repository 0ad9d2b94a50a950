"""SqueezeLLM dense-and-sparse quantization (Kim et al., ICML 2024; SqueezeAILab/SqueezeLLM) as pure tensor functions.

A weight W (rows, cols) is split into
  sparse: range outliers (the IQR rule, `generate_outlier_config.py`) ∪ the most Fisher-sensitive entries
          (`squeezellm/outliers.py::remove_outliers_by_sensitivity`), kept exactly in fp16 as CSR;
  dense:  per output row a non-uniform b-bit code: 1-D k-means with 2^b centroids weighted by the Fisher diagonal
          (`quantization/nuq.py`), stored as a lookup table lut (rows, 2^b) fp16 and indices (rows, cols) uint8.
Decoding (`reconstruct`): Ŵ = lut[indices], the CSR positions *replaced* by their fp16 values, pruned positions
(keep == False) exactly 0. An additive runtime (dense LUT-GEMV + sparse SpMV, as the reference kernels) has to
treat the CSR positions as zero in the dense part; the index stored there (and at pruned positions) is the one of
the centroid nearest 0, so it carries no information.

Deviations from the reference, all deliberate:
- k-means: the reference runs sklearn KMeans (k-means++, max_iter 50) row by row — hours on a 7B model. Here one
  vectorised Lloyd over all rows at once: rows sorted once, clusters are the intervals between midpoints of sorted
  centroids (1-D nearest-centroid assignment), segment sums from fp64 prefix sums; initial centroids by a
  deterministic greedy k-means++ (stratified instead of random candidates); empty clusters moved to the points of
  largest weighted error (sklearn's relocation rule). No randomness. Centroids are rounded to the storage dtype
  (fp16 for the lut) at every step, so the assignment is exactly nearest-centroid for the lut that is exported and
  the objective never increases. On heavy-tailed test rows its objective is within a few % of sklearn's (mostly
  lower); initial centroids at plain weighted quantiles were 1.2–3× worse, hence the k-means++ seeding.
- Range outliers: the reference fixes one r per model by hand (1.5–2.0 so ≈0.45% of all weights fall outside);
  we search r per module by bisection so each module hits the fraction. Per module that makes the rule the same
  as "the largest |w|"; `iqr_threshold` keeps the fixed-r form for a model-wide r.
- Sensitive entries: exactly round(fraction · n) entries (ties by position); the reference keeps g > k-th value.
- Both outlier sets and the k-means see the kept (unpruned) entries only; the reference has no 2:4 support (it
  masks w ≠ 0, which also drops naturally zero weights from its k-means).
- Rows whose Fisher weights are all zero use uniform weights over their dense entries (the reference: all ones).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from quant.primitives import BITS

FP16_MAX = float(torch.finfo(torch.float16).max)


@dataclass(frozen=True)
class DenseSparseSpec:
    bits: int = 4  # dense code width: 2^bits centroids per output row
    outlier_fraction: float = 0.0045  # range outliers (IQR rule), of the kept entries of each module
    sensitive_fraction: float = 0.0005  # largest Fisher values, of the kept entries of each module
    iters: int = 50  # Lloyd iterations at most (the reference's KMeans max_iter)

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise ValueError(
                f"dense_sparse bits {self.bits!r} is not supported; choose one of {', '.join(map(str, BITS))}"
            )
        for name in ("outlier_fraction", "sensitive_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 0.1:
                raise ValueError(f"dense_sparse {name} {v!r} must be a fraction in [0, 0.1), e.g. 0.0045 for 0.45%")
        if isinstance(self.iters, bool) or not isinstance(self.iters, int) or self.iters < 1:
            raise ValueError(f"dense_sparse iters {self.iters!r} must be a positive integer, e.g. 50")

    @property
    def k(self) -> int:
        return 2**self.bits


def _check_matrix(name: str, T: torch.Tensor, shape: torch.Size | None = None) -> None:
    if not isinstance(T, torch.Tensor) or T.dim() != 2 or not T.is_floating_point():
        raise ValueError(f"{name} must be a 2-D floating-point tensor (rows, cols)")
    if T.numel() == 0:
        raise ValueError(f"{name} is empty; give a (rows, cols) matrix with rows, cols ≥ 1")
    if shape is not None and T.shape != shape:
        raise ValueError(f"{name} has shape {tuple(T.shape)}; it must match the weight's {tuple(shape)}")
    if not bool(torch.isfinite(T).all()):
        raise ValueError(f"{name} contains NaN or inf; fix the weight/Fisher computation before quantizing")


def _check_keep(keep: torch.Tensor | None, shape: torch.Size) -> None:
    if keep is not None and (not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool or keep.shape != shape):
        raise ValueError(f"keep must be a bool mask of the weight's shape {tuple(shape)}")


def _round_to(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp64 values rounded to `dtype` (the storage precision) and back."""
    return v.to(dtype).to(torch.float64)


_CANDIDATES = 8  # greedy k-means++ candidates per new centroid (sklearn draws 2 + ln k at random)


def _init_greedy_kpp(xs: torch.Tensor, ws: torch.Tensor, P: tuple, k: int) -> torch.Tensor:
    """Deterministic greedy k-means++ on sorted rows xs (rows, cols), fp64 weights ws, prefix sums P = (P0, P1, P2).

    First centroid: the weighted mean. Each next one: of `_CANDIDATES` points at the stratified quantiles
    (l + ½)/L of the D²-weighted distribution w·D² (k-means++'s sampling law, without randomness), the one that
    lowers the potential most. In 1-D a candidate c only takes the points of its cell between the midpoints to its
    chosen neighbours, so its gain Σ_cell w·(D² − (x − c)²) comes from prefix sums: O(k·cols) per row in all."""
    rows, cols = xs.shape
    dev, f64 = xs.device, torch.float64
    P0, P1, P2 = P
    z = torch.zeros(rows, 1, dtype=f64, device=dev)
    inf = torch.full((rows, 1), float("inf"), dtype=f64, device=dev)
    q = (torch.arange(_CANDIDATES, dtype=f64, device=dev) + 0.5) / _CANDIDATES  # (L,)
    C = P1[:, -1:] / P0[:, -1:]  # (rows, 1) the weighted mean
    D2 = (xs - C) ** 2  # (rows, cols) squared distance to the nearest chosen centroid

    def seg(Pk: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        return Pk.gather(1, hi) - Pk.gather(1, lo)

    for _ in range(k - 1):
        Q = torch.cat([z, (ws * D2).cumsum(1)], 1)  # (rows, cols + 1)
        pick = torch.searchsorted(Q[:, 1:].contiguous(), (q * Q[:, -1:]).contiguous()).clamp(max=cols - 1)
        cand = xs.gather(1, pick)  # (rows, L)
        at = torch.searchsorted(C.contiguous(), cand.contiguous())  # chosen neighbours C[at - 1] < cand ≤ C[at]
        Cx = torch.cat([-inf, C, inf], 1)
        left, right = Cx.gather(1, at), Cx.gather(1, at + 1)
        lo = torch.searchsorted(xs, ((left + cand) * 0.5).contiguous(), right=True)
        hi = torch.searchsorted(xs, ((cand + right) * 0.5).contiguous())
        hi = torch.maximum(hi, lo)
        mine = seg(P2, lo, hi) - 2 * cand * seg(P1, lo, hi) + cand * cand * seg(P0, lo, hi)
        gain = seg(Q, lo, hi) - mine  # (rows, L)
        best = cand.gather(1, gain.argmax(1, keepdim=True))  # (rows, 1)
        D2 = torch.minimum(D2, (xs - best) ** 2)
        C = torch.cat([C, best], 1).sort(1).values
    return C


def weighted_kmeans_1d(
    X: torch.Tensor,
    w: torch.Tensor,
    k: int,
    iters: int,
    *,
    centroid_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Per-row weighted 1-D k-means of X (rows, cols) with weights w ≥ 0 (rows, cols), all rows at once.

    Returns (centroids (rows, k) fp32 ascending, assign (rows, cols) int64, objective) where objective[t] is
    Σ w·(x − c[assign])² after the t-th assignment (t = 0: the initial centroids); Lloyd never increases it. (It
    comes from fp64 prefix sums, so it is exact up to ~1e-15 · Σ w·x².)
    Assignment is to the nearest centroid (a tie at a midpoint goes to the lower one). Centroids are rounded to
    `centroid_dtype` after every update (float16 for an fp16 lut), so they are exactly representable there.
    Initial centroids: `_init_greedy_kpp`. A row whose weights are all zero is clustered with uniform weights (and
    the objective counts it so).
    Empty clusters keep their centroid, or move to the point of largest weighted error while one has error > 0.
    Stops after `iters` updates or when the assignment stops changing. Deterministic."""
    _check_matrix("kmeans X", X)
    _check_matrix("kmeans weights", w, X.shape)
    if bool((w < 0).any()):
        raise ValueError("kmeans weights must be ≥ 0 (Fisher values are squared gradients)")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"kmeans k {k!r} must be a positive integer (2^bits)")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"kmeans iters {iters!r} must be a positive integer, e.g. 50")
    if float(X.detach().abs().max()) > torch.finfo(centroid_dtype).max:
        raise ValueError(f"kmeans X exceeds the range of centroid_dtype {centroid_dtype}; use a wider dtype")
    rows, cols = X.shape
    dev = X.device
    x = X.detach().to(torch.float64)
    wt = w.detach().to(device=dev, dtype=torch.float64)
    wt = torch.where((wt > 0).any(1, keepdim=True), wt, torch.ones_like(wt))
    xs, order = torch.sort(x, dim=1, stable=True)  # (rows, cols) ascending
    ws = wt.gather(1, order)
    z = torch.zeros(rows, 1, dtype=torch.float64, device=dev)
    P0 = torch.cat([z, ws.cumsum(1)], 1)  # (rows, cols + 1) prefix sums of w, w·x, w·x²
    P1 = torch.cat([z, (ws * xs).cumsum(1)], 1)
    P2 = torch.cat([z, (ws * xs * xs).cumsum(1)], 1)

    c = _round_to(_init_greedy_kpp(xs, ws, (P0, P1, P2), k), centroid_dtype).sort(1).values  # (rows, k)

    edge_lo = torch.zeros(rows, 1, dtype=torch.int64, device=dev)
    edge_hi = torch.full((rows, 1), cols, dtype=torch.int64, device=dev)

    def midpoints(c: torch.Tensor) -> torch.Tensor:  # exact in fp64 for fp32/fp16 centroids
        return ((c[:, 1:] + c[:, :-1]) * 0.5).contiguous()  # (rows, k - 1)

    def bounds(c: torch.Tensor) -> torch.Tensor:
        """(rows, k + 1): cluster j is xs[:, b_j : b_j+1], the points in (m_{j-1}, m_j]."""
        return torch.cat([edge_lo, torch.searchsorted(xs, midpoints(c), right=True), edge_hi], 1)

    def sums(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lo, hi = b[:, :-1], b[:, 1:]
        return tuple(P.gather(1, hi) - P.gather(1, lo) for P in (P0, P1, P2))

    def objective(c: torch.Tensor, S) -> float:
        S0, S1, S2 = S  # per cluster Σw(x − c)² = S2 − 2c·S1 + c²·S0 (≥ 0 up to rounding)
        return float((S2 - 2 * c * S1 + c * c * S0).clamp_min(0).sum())

    def update(c: torch.Tensor, b: torch.Tensor, S) -> torch.Tensor:
        S0, S1, _ = S
        lo, hi = b[:, :-1], b[:, 1:]
        filled = S0 > 0
        mean = S1 / torch.where(filled, S0, torch.ones_like(S0))
        # the weighted mean lies in its segment's range; the clamp guards the prefix-sum differences
        mean = torch.minimum(
            torch.maximum(mean, xs.gather(1, lo.clamp(max=cols - 1))), xs.gather(1, (hi - 1).clamp(min=0))
        )
        c_new = torch.where(filled, _round_to(mean, centroid_dtype), c)
        empty = ~filled
        if bool(empty.any()):  # relocate empty clusters to the worst-fit points of their rows
            r = empty.any(1).nonzero().squeeze(1)
            a = torch.searchsorted(midpoints(c)[r], xs[r])  # the current assignment, sorted order
            err = ws[r] * (xs[r] - c_new[r].gather(1, a)) ** 2
            m = min(int(empty[r].sum(1).max()), cols)
            top = err.topk(m, dim=1)  # (R, m)
            rank = (empty[r].cumsum(1) - 1).clamp(0, m - 1)  # the e-th empty cluster takes the e-th worst point
            val = top.values.gather(1, rank)
            seed = _round_to(xs[r].gather(1, top.indices.gather(1, rank)), centroid_dtype)
            move = empty[r] & (empty[r].cumsum(1) <= m) & (val > 0)
            c_new[r] = torch.where(move, seed, c_new[r])
        return c_new.sort(1).values

    b = bounds(c)
    S = sums(b)
    history = [objective(c, S)]
    for _ in range(iters):
        c = update(c, b, S)
        b_new = bounds(c)
        S = sums(b_new)
        history.append(objective(c, S))
        if torch.equal(b_new, b):
            break
        b = b_new
    assign = torch.searchsorted(midpoints(c), x.contiguous())  # (rows, cols): #midpoints < x
    return c.float(), assign, history


def _quartiles(v: torch.Tensor) -> tuple[float, float]:
    """q1, q3 of 1-D v with numpy's default linear interpolation (torch.quantile caps the input size at 2^24)."""
    n = v.numel()
    out = []
    for p in (0.25, 0.75):
        pos = p * (n - 1)
        i = int(pos)
        lo = float(torch.kthvalue(v, i + 1).values)
        hi = float(torch.kthvalue(v, min(i + 2, n)).values)
        out.append(lo + (pos - i) * (hi - lo))
    return out[0], out[1]


def _kept_values(W: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    return (W if keep is None else W[keep]).detach().double().reshape(-1)


def _threshold(q1: float, q3: float, r: float) -> float:
    iqr = q3 - q1
    return max(abs(q1 - r * iqr), abs(q3 + r * iqr))


def iqr_threshold(W: torch.Tensor, r: float, keep: torch.Tensor | None = None) -> float:
    """The reference's range threshold T = max(|q1 − r·IQR|, |q3 + r·IQR|) over the (kept) values of W; entries
    with |w| ≥ T are outliers. Use it directly for a model-wide r as in `generate_outlier_config.py`."""
    v = _kept_values(W, keep)
    return float("inf") if v.numel() == 0 else _threshold(*_quartiles(v), r)


def _range_search(W: torch.Tensor, fraction: float, keep: torch.Tensor | None) -> tuple[float, float]:
    """(r, T): the r ≥ 0 of the IQR rule whose outliers |w| ≥ T(r) are closest in number to `fraction` of the kept
    entries, by bisection (T(r) grows with r, so the count falls). (inf, inf) for fraction 0 or nothing kept."""
    v = _kept_values(W, keep)
    n = v.numel()
    if fraction <= 0 or n == 0:
        return float("inf"), float("inf")
    q1, q3 = _quartiles(v)
    iqr = q3 - q1
    if iqr <= 0:  # degenerate module (at least half its values equal): no r changes T
        return 0.0, _threshold(q1, q3, 0.0)
    a = v.abs().sort().values
    target = fraction * n

    def count(r: float) -> int:
        T = torch.tensor([_threshold(q1, q3, r)], dtype=torch.float64, device=a.device)
        return n - int(torch.searchsorted(a, T))

    lo, hi = 0.0, max(1.0, (float(a[-1]) - q3) / iqr + 1.0)  # count(hi) = 0
    if count(lo) <= target:
        return lo, _threshold(q1, q3, lo)
    for _ in range(100):  # invariant: count(lo) > target ≥ count(hi)
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if count(mid) > target:
            lo = mid
        else:
            hi = mid
    r = lo if abs(count(lo) - target) < abs(count(hi) - target) else hi
    return r, _threshold(q1, q3, r)


def range_outlier_r(W: torch.Tensor, fraction: float, keep: torch.Tensor | None = None) -> float:
    """The IQR multiplier r that `range_outlier_mask` uses for this module (inf when fraction is 0)."""
    return _range_search(W, fraction, keep)[0]


def range_outlier_mask(W: torch.Tensor, fraction: float, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Bool mask (rows, cols) of the IQR-rule range outliers |w| ≥ T(r), r searched per module so that ≈ `fraction`
    of the kept entries are outliers; never a pruned entry; all False for fraction 0."""
    _check_matrix("weight", W)
    _check_keep(keep, W.shape)
    return _range_mask(W, _range_search(W, fraction, keep)[1], keep)


def _range_mask(W: torch.Tensor, T: float, keep: torch.Tensor | None) -> torch.Tensor:
    mask = W.detach().double().abs() >= T  # all False for T = inf
    return mask if keep is None else mask & keep


def sensitive_mask(fisher: torch.Tensor, fraction: float, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Bool mask of the round(fraction · n_kept) largest Fisher values among the kept entries (ties: lowest flat
    position first); all False for fraction 0."""
    _check_matrix("fisher", fisher)
    _check_keep(keep, fisher.shape)
    f = fisher.detach().double().reshape(-1)
    kept = torch.ones_like(f, dtype=torch.bool) if keep is None else keep.reshape(-1)
    m = round(fraction * int(kept.sum()))
    if m <= 0:
        return torch.zeros(fisher.shape, dtype=torch.bool, device=fisher.device)
    f = torch.where(kept, f, torch.full_like(f, float("-inf")))
    t = torch.kthvalue(f, f.numel() - m + 1).values  # the m-th largest
    above = f > t
    tied = f == t
    mask = above | (tied & (tied.cumsum(0) <= m - int(above.sum())))
    return mask.reshape(fisher.shape)


@dataclass
class DenseSparseResult:
    W: torch.Tensor  # fp32 reconstruction (rows, cols): exactly reconstruct(lut, indices, crow, col, values, keep)
    lut: torch.Tensor  # fp16 (rows, 2^bits), ascending per row
    indices: torch.Tensor  # uint8 (rows, cols); CSR and pruned positions hold the index of the centroid nearest 0
    crow_indices: torch.Tensor  # int64 (rows + 1,): CSR row pointers of the outliers
    col_indices: torch.Tensor  # int64 (nnz,), ascending within each row
    values: torch.Tensor  # fp16 (nnz,): the outliers' weights
    keep: torch.Tensor | None  # the pruning mask that was given
    range_r: float  # the IQR multiplier found for this module (inf when outlier_fraction is 0)
    n_range: int  # range outliers
    n_sensitive: int  # sensitive entries (some may also be range outliers)
    objective: list[float]  # the k-means objective per iteration

    @property
    def nnz(self) -> int:
        return self.values.numel()

    def outlier_mask(self) -> torch.Tensor:
        rows, cols = self.indices.shape
        mask = torch.zeros(rows, cols, dtype=torch.bool, device=self.indices.device)
        mask[_csr_rows(self.crow_indices), self.col_indices] = True
        return mask

    def to_sparse_csr(self) -> torch.Tensor:
        return torch.sparse_csr_tensor(
            self.crow_indices, self.col_indices, self.values, tuple(self.indices.shape), check_invariants=True
        )


def _csr_rows(crow: torch.Tensor) -> torch.Tensor:
    """The row of every CSR entry, (nnz,) int64."""
    return torch.repeat_interleave(torch.arange(crow.numel() - 1, device=crow.device), crow.diff())


def reconstruct(
    lut: torch.Tensor,
    indices: torch.Tensor,
    crow: torch.Tensor,
    col: torch.Tensor,
    values: torch.Tensor,
    keep: torch.Tensor | None,
    shape: tuple[int, int],
) -> torch.Tensor:
    """Decode the exported form to fp32 (rows, cols): lut[indices], CSR positions replaced by their values,
    positions with keep == False exactly 0."""
    rows, cols = shape
    if indices.shape != (rows, cols) or indices.dtype != torch.uint8:
        raise ValueError(f"indices must be uint8 of shape {(rows, cols)}, got {indices.dtype} {tuple(indices.shape)}")
    if lut.dim() != 2 or lut.shape[0] != rows:
        raise ValueError(f"lut must be (rows={rows}, 2^bits), got {tuple(lut.shape)}")
    if crow.shape != (rows + 1,) or col.shape != values.shape or col.dim() != 1:
        raise ValueError("outliers must be CSR: crow (rows + 1,), col and values (nnz,) of equal length")
    _check_keep(keep, torch.Size(shape))
    W = lut.float().gather(1, indices.long())
    W[_csr_rows(crow.long()), col.long()] = values.float()
    return W if keep is None else W.masked_fill(~keep, 0.0)


def dense_and_sparse(
    W: torch.Tensor, fisher: torch.Tensor, spec: DenseSparseSpec, keep: torch.Tensor | None = None
) -> DenseSparseResult:
    """SqueezeLLM dense-and-sparse quantization of W (rows, cols) with its Fisher diagonal (same shape); W is not
    modified. keep: a pruning mask (e.g. 2:4); pruned entries decode to exactly 0 and take no part in outlier
    selection or k-means. Values must fit fp16 (the lut and the outliers are stored in fp16)."""
    _check_matrix("weight", W)
    _check_matrix("fisher", fisher, W.shape)
    _check_keep(keep, W.shape)
    if bool((fisher < 0).any()):
        raise ValueError("fisher has negative entries; it must be a sum of squared gradients")
    if float(W.detach().abs().max()) > FP16_MAX:
        raise ValueError(f"weight has |w| > {FP16_MAX:g}, beyond fp16 (the lut and outliers are fp16)")
    kept = torch.ones(W.shape, dtype=torch.bool, device=W.device) if keep is None else keep.to(W.device)
    Wf = W.detach().float()
    r, T = _range_search(Wf, spec.outlier_fraction, keep)
    in_range = _range_mask(Wf, T, keep)
    sensitive = sensitive_mask(fisher, spec.sensitive_fraction, keep)
    outliers = in_range | sensitive  # (rows, cols), kept positions only
    dense = kept & ~outliers

    # k-means over the dense entries: the others sit at 0 with weight 0 (their index: the centroid nearest 0)
    X = torch.where(dense, Wf, torch.zeros_like(Wf))
    wk = torch.where(dense, fisher.detach().float(), torch.zeros_like(Wf))
    no_weight = ~(wk > 0).any(1, keepdim=True)  # rows without Fisher mass: uniform over their dense entries
    wk = torch.where(no_weight & dense, torch.ones_like(wk), wk)
    c, assign, history = weighted_kmeans_1d(X, wk, spec.k, spec.iters, centroid_dtype=torch.float16)
    lut = c.half()  # exact: the centroids are fp16 values
    indices = assign.to(torch.uint8)

    crow = torch.cat([torch.zeros(1, dtype=torch.int64, device=W.device), outliers.sum(1).cumsum(0)])
    col = outliers.nonzero()[:, 1]  # row-major, so ascending within each row
    values = Wf[outliers].half()
    W_hat = reconstruct(lut, indices, crow, col, values, keep, tuple(W.shape))
    return DenseSparseResult(
        W_hat, lut, indices, crow, col, values, keep, r, int(in_range.sum()), int(sensitive.sum()), history
    )


def fisher_diagonal(
    model: torch.nn.Module,
    windows: torch.Tensor,
    linears: dict[str, torch.nn.Linear],
    device: torch.device | str,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Fisher diagonal of each Linear's weight: Σ over windows of the squared per-sample gradient of
    loss = model(input_ids=w[None], labels=w[None]).loss (SqueezeLLM-gradients: batch size 1, squared and summed;
    the reference uses 100 C4 samples of 512 tokens). fp32, on each weight's device, keyed like `linears`.

    windows: (n, seqlen) integer token ids. Only the target weights require grad during the passes; the gradients
    come from torch.autograd.grad, so no .grad is written; requires_grad flags and the train/eval mode are restored.
    A non-finite gradient raises ValueError naming the Linear and the window."""
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.is_floating_point():
        raise ValueError("fisher windows must be an integer tensor (n, seqlen) of token ids")
    if windows.shape[0] == 0:
        raise ValueError("fisher needs at least one calibration window")
    if not linears:
        raise ValueError("fisher needs at least one Linear to compute the diagonal for")
    names = list(linears)
    weights = [linears[n].weight for n in names]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    extra = [w for w in weights if not any(w is p for p in params)]  # a Linear outside the model: restore it too
    extra_flags = [w.requires_grad for w in extra]
    was_training = model.training
    acc = {n: torch.zeros(w.shape, dtype=torch.float32, device=w.device) for n, w in zip(names, weights, strict=True)}
    try:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        for w in weights:
            w.requires_grad_(True)
        with torch.enable_grad():
            for i in tqdm(range(windows.shape[0]), desc="fisher", disable=not progress):
                ids = windows[i : i + 1].to(device)
                loss = model(input_ids=ids, labels=ids).loss
                grads = torch.autograd.grad(loss, weights, allow_unused=True)
                for n, g in zip(names, grads, strict=True):
                    if g is None:
                        continue  # the loss does not reach this weight: its Fisher stays 0
                    if not bool(torch.isfinite(g).all()):
                        raise ValueError(f"fisher: non-finite gradient for {n} on window {i}; check the model/data")
                    acc[n] += g.float().pow(2)
                del loss, grads
    finally:
        for p, f in zip(params, flags, strict=True):
            p.requires_grad_(f)
        for w, f in zip(extra, extra_flags, strict=True):
            w.requires_grad_(f)
        model.train(was_training)
    return acc
