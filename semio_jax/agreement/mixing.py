"""State laws behind d(n) vs sampling (:func:`check_tv`), and the helpers shared with sensitivity.

Laws at fixed times. C independent chains run from one start; their states at
time n are an i.i.d. sample of size C from the exact law mu_n = e_s P^n. Each
chosen n gets one Pearson chi-square goodness-of-fit test of the sampled states
against mu_n (:func:`~semio_jax.agreement.stats.gof_test`, cells pooled below
``min_expected``). The whole law is tested (not only its TV distance to pi,
whose sampling distribution is awkward); the row shows the exact d(n) and the
plug-in TV of the sample to the limit law for reading. z = (chi2 - df) / sqrt(2 df).

Assumptions: the chains are independent (exact by construction) and Pearson's
statistic is close to chi-square, which pooling every cell below
``min_expected`` expected chains secures; a law whose expected counts fit in
one cell tests nothing and gives no row, so a family with no row at all is
INCONCLUSIVE (more chains split the law into cells).
"""

from __future__ import annotations

import math

import numpy as np

from ..analysis.mixing import limit_distribution
from ..core.procedure import parse
from ..montecarlo import Sampler
from .stats import AgreementReport, CheckRow, gof_test

__all__ = ["check_tv", "laws_at_times", "states_at_times", "law_row"]


def states_at_times(op, sampler, start: int, times, n_chains: int, seed: int) -> dict:
    """{t: int64[C]} state index of each of C independent chains from ``start`` after t steps (sampled)."""
    space = op.space
    toks = space.tokens(int(start))
    k = toks.size
    t_max = int(max(times))
    prompts = np.tile(toks, (n_chains, 1))
    ys = sampler.sample(prompts, t_max, seed=seed) if t_max > 0 else np.zeros((n_chains, 0), np.int64)
    hist = np.concatenate([prompts.astype(np.int64), np.asarray(ys, dtype=np.int64)], axis=1)  # [C, k + t_max]
    out = {}
    for t in times:
        end = k + int(t)
        width = min(end, space.length)
        out[int(t)] = space.indices(hist[:, end - width:end])
    return out


def laws_at_times(op, start: int, times) -> dict:
    """{t: float64[S]} exact law of the state after t steps from ``start``."""
    mu = np.zeros(op.num_states)
    mu[int(start)] = 1.0
    out, t = {}, 0
    for target in sorted(set(int(x) for x in times)):
        while t < target:
            mu = op.push(mu)
            t += 1
        out[target] = mu.copy()
    return out


def law_row(name: str, counts: np.ndarray, law: np.ndarray, exact_tv: float, est_tv: float,
             min_expected: float) -> CheckRow | None:
    """The chi-square row of one sampled law; None when it tests nothing (a single cell, no impossible state)."""
    chi2, df, p = gof_test(counts, law, min_expected)
    if df == 0 and p == 1.0:
        return None
    c = counts.sum()
    noise = float(0.5 * np.sqrt(2.0 * law * (1.0 - law) / (math.pi * c)).sum())  # ~E TV(sample, law)
    z = (chi2 - df) / math.sqrt(2 * df) if df > 0 and math.isfinite(chi2) else (0.0 if p > 0 else math.inf)
    return CheckRow(name, float(exact_tv), float(est_tv), noise, float(z), p, f"chi2={chi2:.2f}, df={df}")


def check_tv(op, model, start, n_values=(1, 2, 4, 8), *, procedure=None, n_chains: int = 2000, seed: int = 0,
             level: float = 0.01, min_expected: float = 5.0) -> AgreementReport:
    """Test the exact laws behind d(n) = ||e_start P^n - pi||_TV against chains sampled from ``model``.

    Args:
      start: a state index or a prompt (token sequence, oldest first).
      n_values: the times n tested (one chi-square test each, Bonferroni).
      n_chains: independent chains (rollout seed ``seed * 100_003``).
      min_expected: smallest expected count of a cell before pooling.

    Rows: exact = d(n), estimate = TV(sampled law, limit law) (biased up by
    about ``se``, the expected TV of a sample from its own law); the p-value is
    that of the chi-square test of the whole law at time n.
    """
    proc = parse(procedure) if procedure is not None else op.procedure
    space = op.space
    s = int(start) if np.ndim(start) == 0 else space.index(start)
    times = sorted(set(int(n) for n in n_values))
    if not times or times[0] < 0:
        raise ValueError(f"n_values must be non-negative times, got {n_values!r}")
    laws = laws_at_times(op, s, times)
    sampler = Sampler(model, proc, space.length, space.n_tokens)
    sampled = states_at_times(op, sampler, s, times, n_chains, seed * 100_003)
    lim = limit_distribution(op, s)
    rows = []
    for t in times:
        counts = np.bincount(sampled[t], minlength=op.num_states)
        exact_tv = 0.5 * np.abs(laws[t] - lim).sum()
        est_tv = 0.5 * np.abs(counts / n_chains - lim).sum()
        rows.append(law_row(f"{space.label(s)}: law at t={t} (d={exact_tv:.4f})", counts, laws[t], exact_tv,
                             est_tv, min_expected))
    rows = [r for r in rows if r is not None]  # a law in one cell tests nothing
    return AgreementReport(
        title=f"state laws behind d(n) vs sampling ({proc.spec})", rows=rows, level=level,
        method="independent chains from one start; Pearson chi-square goodness of fit of the state law at each n "
               f"(cells with expected count >= {min_expected:g}, the rest pooled); Bonferroni",
        settings={"n_chains": n_chains, "seed": seed, "procedure": proc.spec, "start": s, "n_values": times,
                  "min_expected": min_expected},
    )
