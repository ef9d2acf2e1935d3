"""Rigorous mixing bounds from the Dobrushin ergodicity coefficient.

For a stochastic matrix Q the **Dobrushin coefficient** is

    delta(Q) = max_{x, x'} ||Q(x, .) - Q(x', .)||_TV = 1 - min_{x, x'} sum_z min(Q(x, z), Q(x', z)).

It is sub-multiplicative, delta(Q R) <= delta(Q) delta(R), and contracts total
variation: ||mu Q - nu Q||_TV <= delta(Q) ||mu - nu||_TV. On the full states
T^L with k = L steps, P^L(x, y) is the probability of generating the window
y = (y_1..y_L) from x, the first horizon at which every row can reach every
window (for k < L two windows that differ at position k + 1 have disjoint
futures, so delta(P^k) = 1 when N >= 2). With pi stationary and any start law
mu on full states, pi P^n = pi gives

    d(n) = ||mu P^n - pi||_TV <= delta(P^n) <= delta(P^L)^floor(n / L).

(A prefix state of length j is a full state after L - j steps: shift n by that.)
With two or more attractors delta(P^L) = 1 and no bound follows.

Computation (``method=``):

* ``"exact"`` (N^L <= EXACT_MAX = 1024): the rows of P^k for every full state
  by k structured pushes of the identity (dense [N^L, N^L]), then the maximum
  pairwise TV in blocks. Also names the maximising pair of states.
* ``"minorization"`` (any size): a Doeblin lower bound beta <= sum_y min_x P^L(x, y).
  With g_i(y_1..y_i) = min over full contexts c ending in y_1..y_{i-1} of
  q(y_i | c), every path probability satisfies P^L(x, y) = prod_i q(y_i | ...) >=
  prod_i g_i(y_1..y_i), so beta = sum_y prod_i g_i(y_1..y_i) (accumulated over
  the prefix tree; O(N^L)) and delta(P^L) <= 1 - beta.

Rounding: delta is reported plus a margin (N^L + L) * 4 * machine epsilon, which
dominates the float64 error of the sums and products involved, so the bound is
rigorous with respect to the stored float64 table. :func:`dobrushin_reference`
forms P^L with Python loops and checks every pair (test oracle).

"No useful bound": when delta >= 1 - USEFUL_TOL, :func:`tv_bound` and
:func:`certified_mixing_time` return ``Bound(None, reason)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..errors import StateSpaceTooLargeError

__all__ = ["DobrushinResult", "Bound", "dobrushin", "tv_bound", "certified_mixing_time", "EXACT_MAX", "USEFUL_TOL"]

EXACT_MAX = 1024
USEFUL_TOL = 1e-9
_EPS = np.finfo(np.float64).eps


class Bound(NamedTuple):
    """A bound or None, with the reason in words."""

    value: Any
    reason: str


@dataclass
class DobrushinResult:
    """delta(P^steps) on the full states (an upper bound for ``method="minorization"``).

    Attributes:
      delta: the coefficient (exact up to the rounding margin) or an upper bound on it, in [0, 1].
      steps: the horizon k (L by default).
      method: "exact", "minorization" or "trivial" (k < L: delta = 1).
      pair: for "exact", two full states whose k-step laws are farthest apart.
      minorization_mass: beta for "minorization" (delta <= 1 - beta).
    """

    delta: float
    steps: int
    method: str
    pair: tuple | None = None
    minorization_mass: float | None = None

    @property
    def useful(self) -> bool:
        return self.delta < 1.0 - USEFUL_TOL

    @property
    def reason(self) -> str:
        if self.useful:
            return f"delta(P^{self.steps}) = {self.delta:.6g} < 1 ({self.method})"
        if self.method == "trivial":
            return (f"delta(P^{self.steps}) = 1: with fewer steps than L, windows differing at position "
                    f"{self.steps + 1} have disjoint futures")
        why = {"exact": "some two full states have (almost) disjoint futures after L steps "
                        "(several attractors, a deterministic or a nearly decomposable chain)",
               "minorization": "the Doeblin minorisation mass is ~0 (some window is (almost) unreachable "
                               "from some state in L steps); the exact coefficient may still be < 1 "
                               f"(method='exact' for N^L <= {EXACT_MAX})"}[self.method]
        return f"no useful bound: delta(P^{self.steps}) ~ 1 ({self.delta:.12g}): {why}"

    def tv_bound(self, n: int) -> np.ndarray:
        """float64[n + 1]: min(1, delta^floor(t / steps)) for t = 0..n (valid for full-state starts)."""
        t = np.arange(n + 1)
        with np.errstate(under="ignore"):
            return np.minimum(1.0, self.delta ** (t // self.steps)).astype(np.float64)

    def summary(self) -> dict:
        return {"delta": self.delta, "steps": self.steps, "method": self.method, "useful": self.useful,
                "pair": None if self.pair is None else list(self.pair),
                "minorization_mass": self.minorization_mass, "reason": self.reason}


def _rows_of_power(op, steps: int) -> np.ndarray:
    """R[x, y] = P^steps(x, y) for full states x, y: float64[N^L, N^L]."""
    nf = op.space.num_full
    mu = np.zeros((op.num_states, nf))
    mu[np.arange(nf), np.arange(nf)] = 1.0
    for _ in range(steps):
        mu = op.push(mu)
    return np.ascontiguousarray(mu[:nf].T)  # full states map to full states


def _max_pairwise_tv(rows: np.ndarray, block_bytes: int = 2**26) -> tuple[float, tuple]:
    nf = rows.shape[0]
    b = max(1, block_bytes // (8 * nf * nf))
    best, pair = -1.0, (0, 0)
    for lo in range(0, nf, b):
        hi = min(nf, lo + b)
        overlap = np.minimum(rows[lo:hi, None, :], rows[None, :, :]).sum(axis=-1)  # [B, nf]
        tv = 1.0 - overlap
        i, j = np.unravel_index(int(np.argmax(tv)), tv.shape)
        if tv[i, j] > best:
            best, pair = float(tv[i, j]), (int(lo + i), int(j))
    return best, pair


def _minorization_mass(op) -> float:
    sp_ = op.space
    n, length, nf = sp_.n_tokens, sp_.length, sp_.num_full
    probs = op.probs[:nf]
    acc = np.ones(1)
    for i in range(1, length + 1):
        g = probs.reshape(n ** (length - i + 1), n ** (i - 1), n).min(axis=0)  # [N^(i-1), N]
        acc = (acc[:, None] * g).ravel()  # indexed by (y_1..y_i), big-endian
    return float(acc.sum())


def dobrushin(op, steps: int | None = None, method: str = "auto") -> DobrushinResult:
    """delta(P^steps) on the full states, exactly or as an upper bound (see module docstring).

    Args:
      steps: horizon k (default L). "minorization" needs k = L.
      method: "auto" (exact for N^L <= EXACT_MAX, else minorization), "exact" or "minorization".
    """
    sp_ = op.space
    length = sp_.length
    k = length if steps is None else int(steps)
    if k < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if method not in ("auto", "exact", "minorization"):
        raise ValueError(f"unknown method {method!r}; use auto, exact or minorization")
    nf = sp_.num_full
    margin = (nf + length) * 4 * _EPS
    if sp_.n_tokens == 1:
        return DobrushinResult(0.0, k, "exact", (0, 0))
    if k < length:
        return DobrushinResult(1.0, k, "trivial")
    m = method if method != "auto" else ("exact" if nf <= EXACT_MAX else "minorization")
    if m == "exact":
        if nf > 4 * EXACT_MAX:
            raise StateSpaceTooLargeError(
                f"the exact Dobrushin coefficient needs the dense [{nf}, {nf}] matrix P^{k}; only N^L <= "
                f"{4 * EXACT_MAX} is allowed. Use method='minorization'")
        delta, pair = _max_pairwise_tv(_rows_of_power(op, k))
        return DobrushinResult(float(min(1.0, max(0.0, delta) + margin)), k, "exact", pair)
    if k != length:
        raise ValueError("the minorization bound is computed for steps = L only")
    beta = _minorization_mass(op)
    return DobrushinResult(float(min(1.0, max(0.0, 1.0 - beta) + margin)), k, "minorization",
                           minorization_mass=beta)


def tv_bound(op, n: int, steps: int | None = None, method: str = "auto") -> Bound:
    """Bound(float64[n + 1] with d(t) <= value[t] for every full-state start, or None, reason)."""
    res = dobrushin(op, steps=steps, method=method)
    if not res.useful:
        return Bound(None, res.reason)
    return Bound(res.tv_bound(n), res.reason)


def certified_mixing_time(op, eps: float = 0.25, steps: int | None = None, method: str = "auto",
                          max_steps: int = 10**9) -> Bound:
    """Bound(t with worst-case d(t) <= eps certified, or None, reason): t = steps * ceil(log eps / log delta)."""
    if not 0 < eps < 1:
        raise ValueError(f"eps must lie in (0, 1), got {eps}")
    res = dobrushin(op, steps=steps, method=method)
    if not res.useful:
        return Bound(None, res.reason)
    if res.delta <= 0.0:
        return Bound(res.steps, res.reason)
    t = res.steps * math.ceil(math.log(eps) / math.log(res.delta))
    if t > max_steps:
        return Bound(None, f"no useful bound: the certified time {t:.3g} exceeds {max_steps:g} steps ({res.reason})")
    return Bound(int(t), res.reason)


