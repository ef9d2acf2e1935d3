"""GTH state reduction: the stationary vector of an irreducible stochastic matrix without subtractions.

Grassmann, Taksar and Heyman (1985). States n-1, ..., 1 are eliminated in
turn: with the exit rate s_k = sum_{j<k} a[k, j] (summed, never 1 - a[k, k]),
column k is divided by s_k and the flow through k is folded into the states
below it, a[i, j] += a[i, k] a[k, j]. Back-substitution from pi_0 = 1 gives
pi_k = sum_{i<k} pi_i a[i, k]; then pi is normalised. Every intermediate is a
sum, product or quotient of non-negative numbers, so each entry of pi carries
a small *relative* error however slowly the chain mixes (O'Cinneide 1993).

:func:`gth` is blocked like an LU factorisation (``panel`` states eliminated on
their own rows and columns, the rest of the matrix updated by one matrix
product); the textbook rank-1 loop is kept as the test oracle in
:mod:`semio_jax.testing.references`.

**Enclosures.** Because GTH is monotone in its (non-negative) data, running it
on entrywise lower and upper bounds of the matrix, with every rounded result
moved outward by its rounding bound, encloses the stationary vector of every
matrix in between: :func:`gth_enclosure` (float64) and
:func:`gth_log_enclosure` (log domain). With the bounds set to the float64
table widened by its rounding against the model's logits, the enclosure
certifies each entry of pi with respect to the model itself. This is the
entrywise stability O'Cinneide (1993, Numer. Math. 65:109-120) proved for GTH,
made a-posteriori and explicit: small relative changes of the transition
probabilities move each pi_j by a small relative amount (by the Markov chain
tree theorem pi_j is a ratio of sums of products of n - 1 transition
probabilities, so relative input changes of rho move it by at most
(1 + rho)^(n-1) / (1 - rho)^(n-1) - 1).

**Log domain.** GTH has no subtractions, so it runs on log-probabilities
(:func:`gth_log`): products become sums and sums log-sum-exps. Classes with
transitions below ~1e-290, or whose float64 entries underflow to 0 although
the model gives them positive probability, are solved there, and their
stationary entries are available in log form when they are below the float64
range themselves.
"""

from __future__ import annotations

import numpy as np

from ..core.operator import TINY
from ..errors import ConvergenceError

__all__ = ["gth", "gth_enclosure", "gth_log", "gth_log_enclosure", "TINY"]

EPS = float(np.finfo(np.float64).eps)
_TINY = TINY


def gth(block: np.ndarray, panel: int = 64) -> np.ndarray:
    """Stationary vector of an irreducible dense stochastic matrix by GTH state reduction (blocked).

    The same reduction as :func:`gth_unblocked` (states n-1, ..., 1 eliminated in turn; the
    exit rate s_k = sum_{j<k} a[k, j] summed, never 1 - a[k, k]), organised like a blocked LU:
    ``panel`` states at a time are eliminated on their own rows and columns, and the rest of the
    matrix receives their rank-``panel`` update as one matrix product. Every quantity is still a
    sum of products of non-negative numbers, so GTH's entrywise accuracy is kept; only the order
    of the additions changes. 1024 states: ~0.1 s instead of ~1 s.
    """
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        try:
            return _gth_blocked(np.array(block, dtype=np.float64, copy=True), panel)
        except FloatingPointError as e:
            raise ConvergenceError(f"GTH left the float64 range ({e}); the log-domain GTH handles such classes") from None


def _gth_blocked(a: np.ndarray, panel: int) -> np.ndarray:
    n = a.shape[0]
    if n == 1:
        return np.ones(1)
    hi = n
    while hi > 1:
        lo = max(1, hi - panel)  # eliminate hi-1, ..., lo; states < lo get the delayed update
        for k in range(hi - 1, lo - 1, -1):
            s = a[k, :k].sum()
            if not s >= _TINY:  # not irreducible, or the reduced rates underflowed (to 0 or subnormal)
                raise ConvergenceError(
                    f"GTH: state {k} has no remaining exit rate (the block is reducible, or its products "
                    f"underflowed below the smallest float64); use method='lu'"
                )
            a[:k, k] /= s
            if k > lo:  # the panel's own columns (all rows < k) and rows (columns < lo)
                a[:k, lo:k] += np.outer(a[:k, k], a[k, lo:k])
                a[lo:k, :lo] += np.outer(a[lo:k, k], a[k, :lo])
        a[:lo, :lo] += a[:lo, lo:hi] @ a[lo:hi, :lo]  # the delayed rank-(hi - lo) update
        hi = lo
    pi = np.zeros(n)
    pi[0] = 1.0
    for k in range(1, n):
        pi[k] = pi[:k] @ a[:k, k]
    return pi / pi.sum()


# ------------------------------------------------------------------ enclosures
def _round_factor(terms: int) -> float:
    """Relative rounding of a sum of ``terms`` products of non-negative floats, with a safety margin."""
    return 1.01 * (terms + 4) * EPS


def gth_enclosure(lo: np.ndarray, hi: np.ndarray, panel: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Rigorous entrywise bounds on the stationary vector of every chain between ``lo`` and ``hi``.

    ``lo <= P <= hi`` entrywise (off the diagonal; the diagonal is never used by GTH). GTH
    is monotone in its data: the eliminated rates grow with the entries, the quotients grow
    with the numerator and shrink with the denominator. Running it on (lo, hi) together,
    dividing lower numerators by upper denominators and vice versa, and moving every rounded
    result outward by its rounding bound (a sum of m non-negative products is within
    (m + 1) eps relatively, BLAS included), gives w_lo <= w <= w_hi for the unnormalised
    vector w (w_0 = 1), hence pi_j in [w_lo_j / sum w_hi, w_hi_j / sum w_lo].

    Returns (pi_lo, pi_hi). Raises ConvergenceError when a lower rate is not positive or an
    entry nears the float64 underflow range (then the log-domain :func:`gth_log_enclosure`).
    """
    a = np.array(lo, dtype=np.float64, copy=True)
    b = np.array(hi, dtype=np.float64, copy=True)
    n = a.shape[0]
    if n == 1:
        return np.ones(1), np.ones(1)
    hi_k = n
    while hi_k > 1:
        low = max(1, hi_k - panel)
        for k in range(hi_k - 1, low - 1, -1):
            f = _round_factor(k)
            s_lo = a[k, :k].sum() * (1.0 - f)
            s_hi = b[k, :k].sum() * (1.0 + f)
            if not (s_lo > _TINY and np.isfinite(s_hi)):
                raise ConvergenceError(f"GTH enclosure: state {k}'s lower exit rate {s_lo:.3g} is not safely "
                                       f"positive in float64; use the log-domain enclosure")
            a[:k, k] = a[:k, k] / s_hi * (1.0 - 4 * EPS)
            b[:k, k] = b[:k, k] / s_lo * (1.0 + 4 * EPS)
            if k > low:
                a[:k, low:k] = (a[:k, low:k] + np.outer(a[:k, k], a[k, low:k])) * (1.0 - 4 * EPS)
                b[:k, low:k] = (b[:k, low:k] + np.outer(b[:k, k], b[k, low:k])) * (1.0 + 4 * EPS)
                a[low:k, :low] = (a[low:k, :low] + np.outer(a[low:k, k], a[k, :low])) * (1.0 - 4 * EPS)
                b[low:k, :low] = (b[low:k, :low] + np.outer(b[low:k, k], b[k, :low])) * (1.0 + 4 * EPS)
        f = _round_factor(hi_k - low)
        a[:low, :low] = (a[:low, :low] + a[:low, low:hi_k] @ a[low:hi_k, :low]) * (1.0 - f)
        b[:low, :low] = (b[:low, :low] + b[:low, low:hi_k] @ b[low:hi_k, :low]) * (1.0 + f)
        hi_k = low
    w_lo, w_hi = np.zeros(n), np.zeros(n)
    w_lo[0] = w_hi[0] = 1.0
    for k in range(1, n):
        f = _round_factor(k)
        w_lo[k] = (w_lo[:k] @ a[:k, k]) * (1.0 - f)
        w_hi[k] = (w_hi[:k] @ b[:k, k]) * (1.0 + f)
    if not (np.all(np.isfinite(w_hi)) and w_lo.min() > _TINY):
        raise ConvergenceError("GTH enclosure: the bounds left the normal float64 range; use the log-domain enclosure")
    f = _round_factor(n)
    pi_lo = w_lo / (w_hi.sum() * (1.0 + f)) * (1.0 - 2 * EPS)
    pi_hi = w_hi / (w_lo.sum() * (1.0 - f)) * (1.0 + 2 * EPS)
    if not pi_lo.min() > _TINY:
        raise ConvergenceError("GTH enclosure: a lower bound fell below the normal float64 range; use the log-domain "
                               "enclosure")
    return pi_lo, pi_hi


def _lse(x: np.ndarray, axis=None) -> np.ndarray:
    """log sum exp along ``axis`` (-inf for an empty or all -inf sum)."""
    m = np.max(x, axis=axis, keepdims=True) if x.size else np.full((1,) * max(x.ndim, 1), -np.inf)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


def gth_log(logblock: np.ndarray) -> np.ndarray:
    """log pi of an irreducible chain given its log transition matrix (-inf for impossible moves).

    GTH in the log domain: products become sums, sums become log-sum-exps, quotients
    differences; nothing underflows, so transitions of 1e-435 (log -1001.6) are as good as
    any. O(n^3) log-add-exps (about 1 s at n = 729 on one core); used where a class has
    transitions below ~1e-290. Raises ConvergenceError if a state has no exit (reducible).
    """
    a = np.array(logblock, dtype=np.float64, copy=True)
    n = a.shape[0]
    if n == 1:
        return np.zeros(1)
    for k in range(n - 1, 0, -1):
        s = _lse(a[k, :k])
        if not np.isfinite(s):
            raise ConvergenceError(f"log-domain GTH: state {k} has no remaining exit (the block is reducible)")
        a[:k, k] -= s
        a[:k, :k] = np.logaddexp(a[:k, :k], a[:k, k, None] + a[None, k, :k])
    logw = np.zeros(n)
    for k in range(1, n):
        logw[k] = _lse(logw[:k] + a[:k, k])
    return logw - _lse(logw)


def gth_log_enclosure(loglo: np.ndarray, loghi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rigorous bounds [log pi_lo, log pi_hi] for every chain with loglo <= log P <= loghi (off the diagonal).

    :func:`gth_log` run on both bounds with the same monotonicity as :func:`gth_enclosure`;
    each computed log-sum-exp of m terms is moved outward by (m + 4) eps + 4 eps |value|
    (log-sum-exp's own error: the relative error of the shifted sum, plus the rounding of the
    final addition), each difference by 4 eps (|a| + |b|).
    """
    a = np.array(loglo, dtype=np.float64, copy=True)
    b = np.array(loghi, dtype=np.float64, copy=True)
    n = a.shape[0]
    if n == 1:
        return np.zeros(1), np.zeros(1)

    def out(x, terms, sign):  # -inf (an exact zero) stays -inf
        return np.where(np.isfinite(x), x + sign * (1.01 * (terms + 4) * EPS + 4 * EPS * np.abs(x)), x)

    with np.errstate(invalid="ignore"):
        for k in range(n - 1, 0, -1):
            s_lo = out(_lse(a[k, :k]), k, -1.0)
            s_hi = out(_lse(b[k, :k]), k, +1.0)
            if not np.isfinite(s_lo):
                raise ConvergenceError(f"log-domain GTH: state {k} has no remaining exit (the block is reducible)")
            a[:k, k] = out(a[:k, k] - s_hi, 1, -1.0)
            b[:k, k] = out(b[:k, k] - s_lo, 1, +1.0)
            a[:k, :k] = out(np.logaddexp(a[:k, :k], a[:k, k, None] + a[None, k, :k]), 2, -1.0)
            b[:k, :k] = out(np.logaddexp(b[:k, :k], b[:k, k, None] + b[None, k, :k]), 2, +1.0)
        w_lo, w_hi = np.zeros(n), np.zeros(n)
        for k in range(1, n):
            w_lo[k] = out(_lse(w_lo[:k] + a[:k, k]), k, -1.0)
            w_hi[k] = out(_lse(w_hi[:k] + b[:k, k]), k, +1.0)
    return w_lo - out(_lse(w_hi), n, +1.0), w_hi - out(_lse(w_lo), n, -1.0)
