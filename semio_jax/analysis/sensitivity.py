"""Sensitivity to the prompt: how fast one-token perturbations are forgotten.

For a prompt s (a state) and a perturbation s' of it (the same tokens except
one position, changed to another token: (N - 1) * len(s) perturbations), the
futures X_t ~ e_s P^t and X'_t ~ e_s' P^t are compared exactly (structured
pushes, float64), for t = 1..n:

    D(t) = ||e_s P^t - e_s' P^t||_TV                    (state laws),
    D_tok(t) = ||law(Y_t | s) - law(Y_t | s')||_TV     (law of the t-th generated token),

D_tok <= D (Y_t is a function of X_t). D is non-increasing in t (P contracts
TV); D_tok need not be (it is the TV of a marginal, not of a Markov state).

**Semiotic Lyapunov exponent.** The exponential rate of D,

    lambda(s, s') = slope of the least-squares line through (t, log D(t)) over the tail,

with the tail the second half of 1..n (points with D(t) <= FLOOR = 1e-12 are
dropped: they are rounding; if fewer than 3 points are left, the last points
above the floor anywhere are used (at least 2). The rate is -inf if D reaches
exactly 0 - the futures coincide, as for an n-gram model once the perturbed
token leaves the window - or if fewer than 2 values lie above the floor
(faster than float64 can measure). When the fit could not use the requested
tail (D fell below the floor before it), the rate describes a pre-asymptotic
stretch and the flag ``asymptotic`` is False: the spectral relation below is
an asymptotic statement and need not hold for such rates (a chain with many
eigenvalues of similar modulus, like a near-i.i.d. model, can fall by 1e-10
in a few steps through a non-exponential transient). lambda <= 0 means contraction: the model forgets the change.

Relation to the spectrum: when s and s' end in the same aperiodic attractor,
D(t) <= d_s(t) + d_s'(t) = O(t^(m-1) rho^t), where rho is the largest modulus
of the non-Perron eigenvalues of P that the difference can excite: the SLEM of
the attractor (:mod:`~semio_jax.analysis.mixing`) and the spectral radius of
the transient block (prefix states are nilpotent, so only transient full
states matter). Hence asymptotically lambda <= log max(SLEM, rho_transient),
reported as ``log_rate_bound``. If s and s' can end in different attractors,
D(t) tends to the TV distance of their limit laws (``limit_tv``) and lambda -> 0.
"""

from __future__ import annotations

from scipy.sparse import csgraph
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from .basins import basins_result
from .classes import class_structure
from .mixing import DENSE_MAX, limit_distribution, spectral_gap

__all__ = ["SensitivityResult", "prompt_sensitivity", "perturbations", "future_tv", "lyapunov_rate", "last_tokens", "FLOOR"]

FLOOR = 1e-12


def last_tokens(space) -> np.ndarray:
    """int64[S]: the most recent token of every state."""
    out = np.empty(space.num_states, dtype=np.int64)
    for k, off in space.iter_groups():
        out[off:off + space.n_tokens**k] = np.arange(space.n_tokens**k) % space.n_tokens
    return out


def perturbations(space, prompt: int, positions=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All one-token changes of state ``prompt``: (states, positions, new tokens), each int64[m]."""
    toks = space.tokens(int(prompt))
    pos_list = range(toks.size) if positions is None else [int(p) for p in positions]
    states, pos, new = [], [], []
    for p in pos_list:
        if not 0 <= p < toks.size:
            raise ValueError(f"position {p} outside the prompt of {toks.size} tokens")
        for y in range(space.n_tokens):
            if y != toks[p]:
                t2 = toks.copy()
                t2[p] = y
                states.append(space.index(t2))
                pos.append(p)
                new.append(y)
    return np.array(states, dtype=np.int64), np.array(pos, dtype=np.int64), np.array(new, dtype=np.int64)


def _evolve(op, starts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """D(t) and D_tok(t), t = 1..n, between the future of starts[0] and that of each other start: [m - 1, n] each."""
    m = starts.size
    mu = np.zeros((op.num_states, m))
    mu[starts, np.arange(m)] = 1.0
    last = last_tokens(op.space)
    onehot = np.zeros((op.num_states, op.n_tokens))
    onehot[np.arange(op.num_states), last] = 1.0
    state_tv = np.empty((m - 1, n))
    token_tv = np.empty((m - 1, n))
    for t in range(n):
        mu = op.push(mu)
        state_tv[:, t] = 0.5 * np.abs(mu[:, 1:] - mu[:, :1]).sum(axis=0)
        tok = onehot.T @ mu  # [N, m]
        token_tv[:, t] = 0.5 * np.abs(tok[:, 1:] - tok[:, :1]).sum(axis=0)
    return state_tv, token_tv


def future_tv(op, a: int, b: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(D[n], D_tok[n]) for t = 1..n between the futures of states a and b (exact)."""
    s, tk = _evolve(op, np.array([int(a), int(b)]), n)
    return s[0], tk[0]


def lyapunov_rate(d: np.ndarray, tail: float = 0.5, floor: float = FLOOR) -> tuple[float, tuple[int, int]]:
    """Least-squares slope of log d(t) against t (d[0] is t = 1) over the tail (see module docstring).

    Returns (rate, (first t, last t) of the fit); rate = -inf if d reaches 0 (window (t0, t0) where it does).
    """
    d = np.asarray(d, dtype=np.float64)
    n = d.size
    t = np.arange(1, n + 1)
    zero = np.flatnonzero(d <= 0.0)
    if zero.size:
        return float("-inf"), (int(t[zero[0]]), int(t[zero[0]]))
    lo = max(0, int(np.floor(n * (1.0 - tail))))
    sel = np.flatnonzero((t > lo) & (d > floor))
    if sel.size < 3:
        above = np.flatnonzero(d > floor)
        if above.size < 2:
            return float("-inf"), (int(t[above[-1]]) if above.size else 1, n)
        sel = above[-max(2, above.size // 2):]
    x, y = t[sel].astype(np.float64), np.log(d[sel])
    slope = float(np.polyfit(x, y, 1)[0])
    return slope, (int(x[0]), int(x[-1]))


@dataclass
class SensitivityResult:
    """Exact sensitivity of the futures of a prompt to every one-token perturbation.

    Attributes:
      prompt: the state index; prompt_label its tokens.
      perturbed, positions, tokens: int64[m], the perturbed states, changed positions and new tokens.
      labels: the perturbed states' labels.
      state_tv: float64[m, n], D(t) for t = 1..n.
      token_tv: float64[m, n], D_tok(t).
      rates: float64[m], the fitted exponential rates (semiotic Lyapunov exponents).
      fit_windows: list of (t0, t1) per perturbation.
      asymptotic: bool[m], the fit lies inside the requested tail (else pre-asymptotic, see docstring).
      limit_tv: float64[m], TV between the limit laws (> 0: the perturbation changes the attractor mix).
      log_slem: log of the largest SLEM among the attractors reachable from the prompt or a perturbation.
      log_rate_bound: log max(SLEM, spectral radius of the reachable transient full states)
        (None when the transient block is too large for a dense eigenvalue solve).
    """

    prompt: int
    prompt_label: str
    perturbed: np.ndarray
    positions: np.ndarray
    tokens: np.ndarray
    labels: list
    state_tv: np.ndarray
    token_tv: np.ndarray
    rates: np.ndarray
    fit_windows: list
    limit_tv: np.ndarray
    log_slem: float
    log_rate_bound: float | None
    asymptotic: np.ndarray = None

    @property
    def max_rate(self) -> float:
        """The slowest forgetting among the perturbations (the top semiotic Lyapunov exponent)."""
        return float(np.max(self.rates)) if self.rates.size else float("-inf")

    def by_position(self) -> np.ndarray:
        """float64[len(prompt), n]: the mean D(t) of the perturbations of each position."""
        k = len(self.prompt_label) if self.positions.size == 0 else int(self.positions.max()) + 1
        out = np.zeros((k, self.state_tv.shape[1]))
        for p in range(k):
            sel = self.positions == p
            if sel.any():
                out[p] = self.state_tv[sel].mean(axis=0)
        return out

    def summary(self) -> dict:
        return {
            "prompt": self.prompt_label, "n_perturbations": int(self.perturbed.size),
            "n_steps": int(self.state_tv.shape[1]),
            "max_rate": self.max_rate, "log_slem": self.log_slem, "log_rate_bound": self.log_rate_bound,
            "n_pre_asymptotic": int((~self.asymptotic).sum()) if self.asymptotic is not None else 0,
            "mean_tv_t1": float(self.state_tv[:, 0].mean()) if self.perturbed.size else 0.0,
            "max_limit_tv": float(self.limit_tv.max()) if self.perturbed.size else 0.0,
        }


def _transient_radius(op, starts: np.ndarray) -> float | None:
    """Spectral radius of P restricted to the transient full states reachable from ``starts`` (0 if none)."""
    cs = class_structure(op)
    nf = op.space.num_full
    adj = op.adjacency()
    seen = np.zeros(op.num_states, dtype=bool)
    for s in starts:
        seen[csgraph.breadth_first_order(adj, int(s), directed=True, return_predecessors=False)] = True
    tr = np.flatnonzero(seen & (cs.attractor_of < 0) & (np.arange(op.num_states) < nf))
    if tr.size == 0:
        return 0.0
    if tr.size > DENSE_MAX:
        return None
    block = op.block(tr).toarray()
    return float(np.max(np.abs(sla.eigvals(block)))) if tr.size else 0.0


def prompt_sensitivity(op, prompt, n: int = 64, positions=None, tail: float = 0.5) -> SensitivityResult:
    """Exact one-token sensitivity of a prompt (see module docstring).

    Args:
      op: the Operator.
      prompt: a state index or a token sequence (oldest first).
      n: number of steps t = 1..n.
      positions: which positions to perturb (default all).
      tail: fraction of 1..n used for the rate fit.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    space = op.space
    s = int(prompt) if np.ndim(prompt) == 0 else space.index(prompt)
    states, pos, new = perturbations(space, s, positions)
    starts = np.concatenate([[s], states])
    state_tv, token_tv = _evolve(op, starts, n)
    fits = [lyapunov_rate(state_tv[i], tail) for i in range(states.size)]
    rates = np.array([f[0] for f in fits])
    lo = max(0, int(np.floor(n * (1.0 - tail))))
    asym = np.array([bool(np.isneginf(r) or w[0] > lo) for r, w in zip(rates, (f[1] for f in fits))], dtype=bool)
    lim0 = limit_distribution(op, s)
    limit_tv = np.array([0.5 * np.abs(limit_distribution(op, int(x)) - lim0).sum() for x in states])
    reach = basins_result(op).reachable_rows(starts).any(axis=0)
    gaps = spectral_gap(op)
    slems = [gaps.classes[a].slem for a in np.flatnonzero(reach)]
    slem = max(slems) if slems else 0.0
    log_slem = float(np.log(slem)) if slem > 0 else float("-inf")
    rho = _transient_radius(op, starts)
    bound = None if rho is None else max(slem, rho)
    log_bound = None if bound is None else (float(np.log(bound)) if bound > 0 else float("-inf"))
    return SensitivityResult(
        prompt=s, prompt_label=space.label(s), perturbed=states, positions=pos, tokens=new,
        labels=[space.label(int(x)) for x in states], state_tv=state_tv, token_tv=token_tv, rates=rates,
        fit_windows=[f[1] for f in fits], limit_tv=limit_tv, log_slem=log_slem, log_rate_bound=log_bound,
        asymptotic=asym)


