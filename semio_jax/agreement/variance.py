"""Exact variance of time averages of a stationary chain, and the budget rule built on it.

A chain started from its stationary law pi on a closed class A (transition
matrix P_A) visits X_1..X_n, each distributed as pi. For an observable g the
time average g_n = (1/n) sum_t g(X_t) has mean pi g at every n and the exact
finite-n variance

    Var g_n = (1/n^2) [ n gamma_0 + 2 sum_{k=1}^{n-1} (n - k) gamma_k ],
    gamma_k = Cov_pi(g(X_0), g(X_k)) = pi( gc * P^k gc ),   gc = g - pi g,

summed here term by term from the operator's own rows (k pulls of gc through
P_A), no asymptotic variance and no relaxation-time estimate involved. The sum
stops early only with a certificate: for j > k, |gamma_j| <= pi|gc| osc(P^k gc) / 2
(pi gc = 0, and the oscillation max - min of P^j gc never grows with j), so
the neglected terms are bounded by that times sum_{j>k} 2 (n - j) and the sum
stops once this bound is below ``rtol`` times the accumulated value.

Budget rule. The pooled mean of C independent chains has variance Var g_n / C.
For an indicator of an event of probability f, the equivalent number of
independent draws is n_eff = f (1 - f) / (Var g_n / C) (C n for i.i.d. draws,
about C n / (2 tau) for a chain that stays put for tau steps at a time). The
normal approximation of the pooled frequency is used only when
n_eff min(f, 1 - f) >= ``min_effective``: the sum is then made of at least about
2 min_effective independent excursions into the rarer side (for geometric
sojourns), its skewness is at most about 2 / sqrt(2 min_effective) and, in a
two-sided test, the first-order skewness corrections of the two tails cancel.
Both quantities come from the exact operator, so the rule is decided before
looking at the sample. The chains needed for the rule to hold scale as
C * min_effective / (n_eff min(f, 1 - f)) (the variance is exactly 1 / C).

Surprisal (entropy rate). With l_t = -log P(X_{t-1}, Y_t) = H(X_{t-1}) + m_t, where
H(s) is the entropy of row s and E[m_t | past] = 0, the sum S = sum_{t=1}^n l_t has
Var S = Var sum_{t<n} H(X_t) + n sum_s pi(s) V(s) + 2 sum_{j=0}^{n-2} (n-1-j) c_j, with V(s)
the variance of -log P(s, .) under row s and c_j = r . P^j Hc, r = pi W, W(s, succ(s, y)) =
P(s, y) (-log P(s, y) - H(s)) (the martingale increments are uncorrelated with the past and
with each other). r sums to 0, so |c_j| <= |r|_1 osc(P^j Hc) / 2 certifies the early stop
as above.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["class_matrix", "time_average_variance", "effective_draws", "chains_needed", "surprisal_variance",
           "MIN_EFFECTIVE", "MIN_EXCURSIONS"]

MIN_EFFECTIVE = 50.0  # budget rule: smallest n_eff * min(f, 1 - f) for a tested frequency (see module docstring)
MIN_EXCURSIONS = 100.0  # budget rule: smallest C n m / t_rel (rarest token mass m) for any tested frequency


def class_matrix(op, members: np.ndarray) -> sp.csr_matrix:
    """The operator restricted to a closed class: float64 CSR [|A|, |A|] (rows sum to 1)."""
    return op.block(members)


def time_average_variance(p_a: sp.csr_matrix, pi_a: np.ndarray, g: np.ndarray, n: int,
                          rtol: float = 1e-10) -> np.ndarray:
    """Exact Var of (1/n) sum_{t=1}^n g(X_t), X_0 ~ pi: float64[m] for observables ``g`` float64[|A|, m].

    ``p_a`` [|A|, |A|] the class's rows, ``pi_a`` [|A|] its stationary law (summing to 1).
    """
    if n < 1:
        raise ValueError(f"the run length must be >= 1, got {n}")
    g = np.asarray(g, dtype=np.float64)
    pi_a = np.asarray(pi_a, dtype=np.float64)
    gc = g - pi_a @ g  # [|A|, m], centred under pi
    abs_mean = pi_a @ np.abs(gc)  # [m]: pi|gc|
    acc = n * (pi_a @ (gc * gc))  # [m]: n gamma_0
    h = gc
    for k in range(1, n):
        h = p_a @ h  # [|A|, m]: P^k gc
        acc = acc + 2.0 * (n - k) * (pi_a @ (gc * h))
        rest = float(n - k - 1) * float(n - k)  # sum_{j=k+1}^{n-1} 2 (n - j)
        bound = 0.5 * abs_mean * (h.max(axis=0) - h.min(axis=0)) * rest
        if np.all(bound <= rtol * np.abs(acc)):
            break
    return np.maximum(acc, 0.0) / float(n) ** 2


def effective_draws(f: np.ndarray, var_pooled: np.ndarray) -> np.ndarray:
    """n_eff = f (1 - f) / Var(pooled frequency): float64, inf where the variance is 0."""
    f = np.asarray(f, dtype=np.float64)
    v = np.asarray(var_pooled, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, f * (1.0 - f) / np.where(v > 0, v, 1.0), np.inf)


def chains_needed(n_chains: int, f: np.ndarray, n_eff: np.ndarray, min_effective: float = MIN_EFFECTIVE) -> np.ndarray:
    """Chains (at the same run length) at which n_eff min(f, 1 - f) reaches ``min_effective``."""
    side = np.minimum(f, 1.0 - f) * n_eff
    with np.errstate(divide="ignore"):
        return np.where(side > 0, n_chains * min_effective / np.where(side > 0, side, 1.0), np.inf)


def surprisal_variance(op, members: np.ndarray, pi_a: np.ndarray, n: int, rtol: float = 1e-10) -> tuple[float, float]:
    """(h, Var of (1/n) sum_{t=1}^n -log P(X_{t-1}, Y_t)) for the chain on the closed class ``members`` started
    from ``pi_a`` (see the module docstring): the exact entropy rate in nats and the exact finite-n variance."""
    if n < 1:
        raise ValueError(f"the run length must be >= 1, got {n}")
    members = np.asarray(members, dtype=np.int64)
    local = np.full(op.num_states, -1, dtype=np.int64)
    local[members] = np.arange(members.size)
    probs = np.asarray(op.probs[members], dtype=np.float64)  # [|A|, N]
    succ = op.space.successors_of(members[:, None], np.arange(op.n_tokens))  # [|A|, N], arithmetic
    succ = local[succ]  # successor inside the class (-1 only where probs == 0)
    pos = probs > 0
    ell = np.where(pos, -np.log(np.where(pos, probs, 1.0)), 0.0)  # [|A|, N] surprisal
    h_row = (probs * ell).sum(axis=1)  # [|A|] row entropies H(s)
    v_row = (probs * (ell - h_row[:, None]) ** 2).sum(axis=1)  # [|A|] V(s)
    h = float(pi_a @ h_row)
    hc = h_row - h
    w = np.where(pos, probs * (ell - h_row[:, None]), 0.0) * pi_a[:, None]  # [|A|, N]: pi(s) W(s, succ)
    r = np.zeros(members.size)
    np.add.at(r, succ[pos], w[pos])  # r = pi W, sums to 0
    p_a = class_matrix(op, members)
    u = pi_a * hc  # gamma_k = u . P^k Hc
    acc = n * float(u @ hc) + n * float(pi_a @ v_row) + (2.0 * (n - 1) * float(r @ hc) if n > 1 else 0.0)
    scale = float(np.abs(u).sum()) + float(np.abs(r).sum())
    vec = hc
    for k in range(1, n):
        vec = p_a @ vec  # P^k Hc
        acc += 2.0 * (n - k) * float(u @ vec)
        if k <= n - 2:
            acc += 2.0 * (n - 1 - k) * float(r @ vec)
        rest = float(n - k) * float(n - k + 1)
        if 0.5 * scale * float(vec.max() - vec.min()) * rest <= rtol * abs(acc):
            break
    return h, max(acc, 0.0) / float(n) ** 2
