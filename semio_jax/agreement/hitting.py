"""Hitting times vs sampling (:func:`check_hitting`).

The truncated time min(tau, T) has exact mean sum_{t<T} P(tau > t) (T-step
killed pushes), valid at any horizon: a t-test on the chains' mean, plus exact
binomial tests of P(tau <= t) at the exact quartiles and of P(tau > T).
"""

from __future__ import annotations

import math

import numpy as np

from ..analysis.hitting import hitting_times_result, state_set
from ..core.procedure import parse
from ..montecarlo.estimators import sample_hitting
from .stats import AgreementReport, binomial_row, one_start, t_row

__all__ = ["check_hitting"]


def check_hitting(op, model, target, start, *, procedure=None, n_chains: int = 1000, horizon: int | None = None,
                  seed: int = 0, level: float = 0.01, tail: float = 1e-6, max_horizon: int = 20_000) -> AgreementReport:
    """Test the exact law of the hitting time of ``target`` from ``start`` against sampled chains.

    Args:
      target: state indices or a bool mask [S].
      start: a state index or a prompt.
      horizon: steps per chain (default: the first T with exact P(tau > T) <= ``tail``, at most ``max_horizon``).
      seed: seed of the rollouts.
    """
    proc = parse(procedure) if procedure is not None else op.procedure
    space = op.space
    mask = state_set(op, target)
    s0 = one_start(op, start)
    hres = hitting_times_result(op, mask)
    d = np.zeros(op.num_states)
    d[s0] = 1.0
    d[mask] = 0.0
    surv = [d.sum()]  # surv[t] = P(tau > t)
    limit = max_horizon if horizon is None else int(horizon)
    while len(surv) <= limit and (horizon is not None or surv[-1] > tail):
        d = op.push(d)
        d[mask] = 0.0
        surv.append(d.sum())
    t_h = len(surv) - 1
    surv = np.array(surv)
    exact_mean = float(surv[:t_h].sum())
    samp = sample_hitting(model, proc, space, s0, mask, n_chains, t_h, seed=seed)
    times = samp.truncated()
    se = times.std(ddof=1) / math.sqrt(n_chains) if n_chains > 1 else math.inf
    label = space.label(s0)
    rows = [t_row(f"{label}: E[min(tau, {t_h})]", exact_mean, times.mean(), se, n_chains - 1,
                   note=f"E[tau] exact = {hres.times[s0]:.6g}")]
    cdf = 1.0 - surv
    hit_by = np.where(samp.time >= 0, samp.time, t_h + 1)
    used = set()
    for q in (0.25, 0.5, 0.75):
        t = int(np.searchsorted(cdf, q))
        if t > t_h or t in used or cdf[t] in (0.0, 1.0):
            continue
        used.add(t)
        rows.append(binomial_row(f"{label}: P(tau <= {t})", int((hit_by <= t).sum()), n_chains, float(cdf[t])))
    k_out = int((samp.time < 0).sum())
    if surv[t_h] > tail or k_out:  # a short horizon (or a sampled miss): test the unhit mass too
        rows.append(binomial_row(f"{label}: P(tau > {t_h})", k_out, n_chains, float(surv[t_h])))
    return AgreementReport(
        title=f"hitting time of {int(mask.sum())} target state(s) from {label} vs sampling ({proc.spec})",
        rows=rows, level=level,
        method="exact law of tau by killed pushes; t-test (C-1 df) on the truncated mean, exact binomial tests "
               "on P(tau <= t); Bonferroni",
        settings={"n_chains": n_chains, "horizon": t_h, "seed": seed, "procedure": proc.spec, "start": s0,
                  "target": np.flatnonzero(mask)[:50].tolist(), "n_target": int(mask.sum())},
    )
