"""Metastable exit and passage times vs sampling (:func:`check_metastable`).

Chains start from pi restricted to a core (drawn with default_rng([seed, j]))
and run until they leave the core and until they reach another core; each
chain gives one i.i.d. time per quantity, compared with the exact
pi|core-averaged mean by Student's t (C - 1 df). The horizon makes the exact
probability of not having arrived below 1e-6 (from killed pushes); chains
still running at the horizon are counted at the horizon and reported.

Assumptions. (1) The mean of C i.i.d. first-arrival times is close to normal:
these times are roughly geometric (skewness about 2), so the t test needs
C >= ``min_chains`` (default 100; skewness of the mean <= 0.2); with fewer
chains the report is INCONCLUSIVE. (2) Censoring is negligible: with the
default horizon the exact probability of not having arrived is <= ``tail``;
a horizon passed by the caller under which it is larger makes the row compare
E[tau] with a truncated sample, so that row is not tested and the report is
INCONCLUSIVE with the horizon needed.
"""

from __future__ import annotations

import math

import numpy as np

from ..analysis.metastable import metastable_sets
from ..core.procedure import parse
from ..montecarlo import Sampler
from ..montecarlo.estimators import window_indices
from .stats import AgreementReport, t_row

__all__ = ["check_metastable", "MIN_CHAINS"]

MIN_CHAINS = 100  # smallest number of i.i.d. replicas for a t test on a geometric-like time


def _killed_horizon(op, start_law: np.ndarray, target: np.ndarray, tail: float, cap: int) -> int:
    """Smallest T with exact P(not in ``target`` [bool, S] during 1..T) <= tail (capped), by killed pushes."""
    mu = start_law.copy()
    for t in range(1, cap + 1):
        mu = op.push(mu)
        mu[target] = 0.0
        if mu.sum() <= tail:
            return t
    return cap


def _killed_survival(op, start_law: np.ndarray, target: np.ndarray, horizon: int) -> float:
    """Exact P(not in ``target`` during 1..horizon) from ``start_law``, by killed pushes."""
    mu = start_law.copy()
    for _ in range(int(horizon)):
        mu = op.push(mu)
        mu[target] = 0.0
    return float(mu.sum())


def _first_arrivals(op, sampler, starts: np.ndarray, targets: list, horizon: int, seed: int,
                    chunk: int = 512) -> np.ndarray:
    """int64[len(targets), C]: first t >= 1 with the chain's state in targets[i] (bool[S]); -1 if none."""
    space = op.space
    prompts = np.stack([space.tokens(int(s)) for s in starts])  # full states
    c = starts.size
    first = np.full((len(targets), c), -1, dtype=np.int64)
    tail = prompts.astype(np.int64)
    t_done = 0
    for ys in sampler.generate(prompts, horizon, seed, chunk):
        hist = np.concatenate([tail, np.asarray(ys, dtype=np.int64)], axis=1)
        idx = window_indices(hist, space.n_tokens, space.length)[:, -ys.shape[1]:]  # states after each new token
        for i, tg in enumerate(targets):
            hit = tg[idx]
            any_hit = hit.any(axis=1) & (first[i] < 0)
            first[i, any_hit] = t_done + 1 + np.argmax(hit[any_hit], axis=1)
        t_done += ys.shape[1]
        tail = hist[:, hist.shape[1] - (space.length - 1):] if space.length > 1 else hist[:, :0]
        if (first >= 0).all():
            break
    return first


def check_metastable(op, model, k: int | None = None, *, result=None, procedure=None, n_chains: int = 500,
                     seed: int = 0, level: float = 0.01, horizon: int | None = None, tail: float = 1e-6,
                     max_horizon: int = 200_000, min_chains: int = MIN_CHAINS) -> AgreementReport:
    """Test the exact mean exit times and passage times of the metastable cores against sampling.

    Args:
      k: number of metastable sets (None: chosen by :func:`metastable_sets`).
      result: a precomputed :class:`~semio_jax.analysis.metastable.MetastableResult` of ``op``.
      n_chains: chains per core; starts drawn from pi restricted to the core with
        default_rng([seed, j]); rollouts use seed ``seed * 100_003 + j``.
      horizon: steps per chain (default: exact probability of not having arrived <= ``tail``).

    For each core j two rows: the time to leave core j and the time to reach
    another core (one row when the cores cover the attractor: the two times are
    then equal), each a Student t test of the chains' mean against the exact
    pi|core-averaged expectation.
    """
    proc = parse(procedure) if procedure is not None else op.procedure
    res = result if result is not None else metastable_sets(op, k=k)
    if res.k < 2:
        raise ValueError("the chain has no metastable sets (k = 1: exit times are infinite); pass k >= 2 "
                         "to test a forced decomposition")
    space = op.space
    sampler = Sampler(model, proc, space.length, space.n_tokens)  # one sampler: compiled once
    chunk = 512
    rows, horizons, censored, reasons = [], [], [], []
    if n_chains < min_chains:
        reasons.append(f"{n_chains} chains per core: the t tests on exit times need at least {min_chains}")
    for j, core in enumerate(res.cores):
        w = res.pi[np.searchsorted(res.states, core)]
        w = w / w.sum()
        rng = np.random.default_rng([seed, j])
        starts = core[rng.choice(core.size, size=n_chains, p=w)]
        in_core = np.zeros(op.num_states, dtype=bool)
        in_core[core] = True
        others = np.zeros(op.num_states, dtype=bool)
        for i, c in enumerate(res.cores):
            if i != j:
                others[c] = True
        targets, names, exact = [~in_core], ["leave"], [float(res.exit_times[j])]
        covered = int(others.sum()) + core.size == res.states.size  # leaving = reaching another core
        if res.k > 1 and not covered:
            targets.append(others)
            names.append("reach another core from")
            exact.append(float(res.mfpt_other[j]))
        start_law = np.zeros(op.num_states)
        np.add.at(start_law, core, w)
        if horizon is not None:
            h = int(horizon)
        else:  # long enough, rounded up to whole chunks so that one compiled scan serves every core
            h = max(_killed_horizon(op, start_law, tg, tail, max_horizon) for tg in targets)
            h = h if h <= chunk else chunk * -(-h // chunk)
        horizons.append(int(h))
        short = [horizon is not None and _killed_survival(op, start_law, tg, h) > tail for tg in targets]
        first = _first_arrivals(op, sampler, starts, targets, h, seed * 100_003 + j, chunk)
        for i, name in enumerate(names):
            cens = int((first[i] < 0).sum())
            censored.append(cens)
            times = np.where(first[i] < 0, h, first[i]).astype(np.float64)
            se = times.std(ddof=1) / math.sqrt(n_chains)
            note = f"core {j}: {core.size} states" + (f"; {cens} chains censored at {h}" if cens else "")
            if short[i]:
                need = _killed_horizon(op, start_law, targets[i], tail, max_horizon)
                reasons.append(f"time to {name} core {j}: the horizon {h} leaves exact mass > {tail:g} unarrived; "
                               f"not tested (needs horizon >= {need})")
                continue
            if n_chains < min_chains:
                continue
            rows.append(t_row(f"time to {name} core {j}", exact[i], times.mean(), se, n_chains - 1, note))
    return AgreementReport(
        title=f"metastable exit and passage times vs sampling ({proc.spec})", rows=rows, level=level,
        method="chains from pi restricted to each core; first-arrival times; Student t (C-1 df), two-sided; "
               "Bonferroni",
        settings={"n_chains": n_chains, "seed": seed, "procedure": proc.spec, "k": res.k,
                  "threshold": res.threshold, "horizons": horizons, "censored": censored,
                  "min_chains": min_chains},
        inconclusive_reasons=reasons,
    )
