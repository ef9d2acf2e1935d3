"""Entropy: the entropy rate of each attractor and the exact entropy of generated strings.

Write H(s) = -sum_y q(y|s) log q(y|s) for the conditional entropy of the next
token in state s (0 log 0 = 0), in nats; bits = nats / log 2.

**Entropy rate.** On an attractor C with stationary distribution pi_C, the
token process started from pi_C has entropy rate

    h_C = lim H(Y_1..Y_n) / n = sum_{s in C} pi_C(s) H(s).

(The state chain and the token process have the same entropy rate: the next
state is succ(s, y), and distinct tokens give distinct successors.) The value
is also the almost-sure limit of -1/n log P(Y_1..Y_n) along a single sampled
path (Shannon-McMillan-Breiman), which is what
:func:`semio_jax.agreement.check_entropy_rate` tests. The error of h_C
inherits the stationary certificate: with sum(pi_hat - pi) = 0,

    |h_hat - h| <= ||pi_hat - pi||_1 * (max_C H - min_C H) / 2  (+ rounding),

reported as ``error_bounds`` (None where the stationary bound is not certified).

**Path entropy.** From a start state s_0 the generated string Y_1..Y_n and the
state path determine each other (X_t is a function of s_0 and Y_1..Y_t), so by
the chain rule

    H(Y_1..Y_n) = sum_{t=1}^{n} H(Y_t | Y_1..Y_{t-1}) = sum_{t=1}^{n} E[H(X_{t-1})],

computed by pushing the state distribution d_{t-1} and summing d_{t-1} . H.
For a *distribution* start this sum is H(Y_1..Y_n | X_0) (the string entropy
given the start state), e.g. n h_C from pi_C. The entropy of the state
distribution H(d_t) is reported too; from a single start H(X_n) <= H(Y_1..Y_n).

All in float64; no iteration beyond the n pushes. Slow references:
:func:`entropy_rate_reference` (dense eigenvector, -sum pi P log P over edges)
and :func:`path_entropy_reference` (enumerating all N^n strings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._cache import cached_analysis
from .classes import class_structure
from .evolution import resolve_start
from .stationary import stationary_result

__all__ = [
    "EntropyRateResult", "PathEntropyResult", "conditional_entropies", "entropy_rate", "path_entropy",
]

LN2 = math.log(2.0)


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along ``axis`` (0 log 0 = 0)."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=axis)


@cached_analysis("conditional_entropies")
def conditional_entropies(op) -> np.ndarray:
    """float64[S]: H(q(.|s)) in nats for every state s."""
    h = _entropy(op.probs, axis=1)
    h.setflags(write=False)
    return h


@dataclass
class EntropyRateResult:
    """Entropy rate of each attractor.

    Attributes:
      nats: h per attractor, in nats per token.
      bits: the same in bits per token.
      error_bounds: bound on |h_hat - h| in nats (None where pi is not certified).
      sizes: number of states of each attractor.
      max_conditional_entropy: max_{s in C} H(s) per attractor (nats).
    """

    nats: list
    bits: list
    error_bounds: list = field(default_factory=list)
    sizes: list = field(default_factory=list)
    max_conditional_entropy: list = field(default_factory=list)

    def summary(self) -> list[dict]:
        return [{"attractor": a, "size": int(sz), "entropy_rate_nats": h, "entropy_rate_bits": b,
                 "error_bound_nats": e}
                for a, (h, b, e, sz) in enumerate(zip(self.nats, self.bits, self.error_bounds, self.sizes))]


@cached_analysis("entropy_rate")
def entropy_rate(op) -> EntropyRateResult:
    """h_C = sum_s pi_C(s) H(q(.|s)) for every attractor C (see module docstring)."""
    cs = class_structure(op)
    st = stationary_result(op)
    cond = conditional_entropies(op)
    nats, bounds, sizes, hmax = [], [], [], []
    for a, members in enumerate(cs.attractors):
        pi = st.distribution(a)[members]
        hc = cond[members]
        h = float(pi @ hc)
        nats.append(h)
        sizes.append(int(members.size))
        hmax.append(float(hc.max()))
        eb = st.error_bounds[a] if a < len(st.error_bounds) else None
        rounding = 4 * np.finfo(float).eps * members.size * float(hc.max())
        bounds.append(None if eb is None else float(eb * (hc.max() - hc.min()) / 2 + rounding))
    return EntropyRateResult(nats=nats, bits=[h / LN2 for h in nats], error_bounds=bounds, sizes=sizes,
                             max_conditional_entropy=hmax)


@dataclass
class PathEntropyResult:
    """Exact entropy of the n-token string generated from a start.

    Attributes:
      start: the start state (None for a distribution start).
      n: number of generated tokens.
      nats: H(Y_1..Y_n) (given X_0 for a distribution start), in nats.
      bits: the same in bits.
      per_step: float64[n], H(Y_t | Y_1..Y_{t-1}) = E[H(X_{t-1})] in nats (sums to ``nats``).
      state_entropy: float64[n + 1], entropy of the state distribution after t steps (nats).
    """

    start: int | None
    n: int
    nats: float
    bits: float
    per_step: np.ndarray
    state_entropy: np.ndarray

    @property
    def final_state_entropy(self) -> float:
        """Entropy (nats) of the state distribution after n steps."""
        return float(self.state_entropy[-1])

    def summary(self) -> dict:
        return {"start": self.start, "n": self.n, "entropy_nats": self.nats, "entropy_bits": self.bits,
                "final_state_entropy_nats": self.final_state_entropy}


def path_entropy(op, start, n: int) -> PathEntropyResult:
    """H(Y_1..Y_n) from ``start`` (state index, prompt tokens or distribution), exactly."""
    if int(n) != n or n < 0:
        raise ValueError(f"the number of steps must be an integer >= 0, got {n!r}")
    n = int(n)
    s0, d = resolve_start(op, start)
    cond = conditional_entropies(op)
    per_step = np.empty(n)
    state_h = np.empty(n + 1)
    state_h[0] = _entropy(d)
    for t in range(n):
        per_step[t] = d @ cond
        d = op.push(d)
        state_h[t + 1] = _entropy(d)
    total = float(per_step.sum())
    return PathEntropyResult(start=s0, n=n, nats=total, bits=total / LN2, per_step=per_step, state_entropy=state_h)


# -------------------------------------------------------------- references


