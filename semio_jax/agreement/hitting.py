"""Hitting times vs sampling (:func:`check_hitting`).

The truncated time min(tau, T) has exact mean sum_{t<T} P(tau > t) (T-step
killed pushes), valid at any horizon, and exact moments too: with
M = min(tau, T), E M^2 = sum_{t<T} (2t + 1) P(tau > t) and E M^3 = sum_{t<T}
(3t^2 + 3t + 1) P(tau > t). The chains are i.i.d., so their mean is tested with
the exact variance (z = (mean - E M) / sqrt(Var M / C), normal, two-sided),
plus exact binomial tests of P(tau <= t) at the exact quartiles and of
P(tau > T). Assumption of the mean row: the mean of C draws is close to
normal; it is tested only when the exact skewness of M over sqrt(C) is at most
``max_skew`` (default 0.2; a hitting time with a heavy exact tail needs more
chains), otherwise the report is INCONCLUSIVE with the chains needed (the
binomial rows, exact at any C, stay).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from ..analysis.hitting import hitting_times_result, state_set
from ..core.procedure import parse
from ..montecarlo.estimators import sample_hitting
from .stats import AgreementReport, CheckRow, binomial_row, one_start

__all__ = ["check_hitting", "MAX_SKEW"]

MAX_SKEW = 0.2  # largest exact skewness / sqrt(C) of a mean tested with the normal law


def check_hitting(op, model, target, start, *, procedure=None, n_chains: int = 1000, horizon: int | None = None,
                  seed: int = 0, level: float = 0.01, tail: float = 1e-6, max_horizon: int = 20_000,
                  max_skew: float = MAX_SKEW) -> AgreementReport:
    """Test the exact law of the hitting time of ``target`` from ``start`` against sampled chains.

    Args:
      target: state indices or a bool mask [S].
      start: a state index or a prompt.
      horizon: steps per chain (default: the first T with exact P(tau > T) <= ``tail``, at most ``max_horizon``).
      seed: seed of the rollouts.
      max_skew: the budget rule of the mean row (see the module docstring).
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
    label = space.label(s0)
    tt = np.arange(t_h, dtype=np.float64)
    m2 = float(((2 * tt + 1) * surv[:t_h]).sum())
    m3 = float(((3 * tt**2 + 3 * tt + 1) * surv[:t_h]).sum())
    var = max(m2 - exact_mean**2, 0.0)
    skew = (m3 - 3 * exact_mean * var - exact_mean**3) / var**1.5 if var > 0 else 0.0
    rows, reasons = [], []
    if abs(skew) / math.sqrt(n_chains) <= max_skew:
        se = math.sqrt(var / n_chains)
        est = float(times.mean())
        if se > 0:
            z = (est - exact_mean) / se
            p = float(2 * stats.norm.sf(abs(z)))
        else:  # a deterministic hitting time
            z, p = (0.0, 1.0) if math.isclose(est, exact_mean, abs_tol=1e-9) else (math.inf, 0.0)
        rows.append(CheckRow(f"{label}: E[min(tau, {t_h})]", exact_mean, est, se, float(z), p,
                             f"E[tau] exact = {hres.times[s0]:.6g}; exact variance, skewness {skew:.3g}"))
    else:
        reasons.append(f"{label}: the mean hitting time is not tested: its exact skewness {skew:.3g} needs "
                       f"C >= {math.ceil((skew / max_skew) ** 2)} chains for the normal law (C = {n_chains})")
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
        method="exact law of tau by killed pushes; normal test with the exact variance on the truncated mean "
               f"(when skewness / sqrt(C) <= {max_skew:g}), exact binomial tests on P(tau <= t); Bonferroni",
        settings={"n_chains": n_chains, "horizon": t_h, "seed": seed, "procedure": proc.spec, "start": s0,
                  "target": np.flatnonzero(mask)[:50].tolist(), "n_target": int(mask.sum()), "max_skew": max_skew},
        inconclusive_reasons=reasons,
    )
