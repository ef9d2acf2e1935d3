"""Trajectories vs sampling (:func:`check_trajectories`).

The number of chains that generate the MAP (and the greedy) string is
Binomial(C, P(string)): exact binomial tests; the mean model log-probability
of the sampled strings has exact expectation -H(Y_1..Y_n) (path_entropy): a
t-test over chains.

Assumptions: independent chains (exact by construction); the binomial tests
are exact at any C. The t test needs the mean of C i.i.d. path log-probabilities
to be close to normal: it is run only with C >= ``min_chains`` (default 100),
otherwise that row is not tested and the report is INCONCLUSIVE.
"""

from __future__ import annotations

import math

import numpy as np

from ..analysis.entropy import path_entropy
from ..analysis.trajectories import greedy_trajectory, map_trajectory
from ..core.procedure import parse
from ..montecarlo import Sampler
from ..montecarlo.estimators import sequence_log_probs
from .stats import AgreementReport, binomial_row, one_start, t_row

__all__ = ["check_trajectories", "MIN_CHAINS"]

MIN_CHAINS = 100  # smallest number of i.i.d. replicas for the t test on the path log-probability


def check_trajectories(op, model, start, n: int, *, procedure=None, n_chains: int = 4000, seed: int = 0,
                       level: float = 0.01, min_chains: int = MIN_CHAINS) -> AgreementReport:
    """Test the exact MAP/greedy string probabilities and E[log P(Y_1..Y_n)] = -H against sampled strings.

    Rollouts use seed ``seed``; log-probabilities of the sampled strings are
    the model's own (re-evaluated on each context under the procedure).
    Assumptions and ``min_chains``: see the module docstring.
    """
    proc = parse(procedure) if procedure is not None else op.procedure
    space = op.space
    s0 = one_start(op, start)
    label = space.label(s0)
    best = map_trajectory(op, s0, n)
    gr = greedy_trajectory(op, s0, n)
    h = path_entropy(op, s0, n)
    prompts = np.tile(space.tokens(s0), (n_chains, 1))
    ys = Sampler(model, proc, space.length, space.n_tokens).sample(prompts, n, seed=seed)  # [C, n]
    rows = [binomial_row(f"{label}: P(MAP {best.text(space.n_tokens)})", int((ys == best.tokens).all(axis=1).sum()),
                          n_chains, best.prob, note="map")]
    if not np.array_equal(gr.tokens, best.tokens):
        rows.append(binomial_row(f"{label}: P(greedy {gr.text(space.n_tokens)})",
                                  int((ys == gr.tokens).all(axis=1).sum()), n_chains, gr.prob, note="greedy"))
    reasons = []
    if n_chains >= min_chains:
        lp = sequence_log_probs(model, proc, space.length, prompts, ys).sum(axis=1)  # [C]
        se = lp.std(ddof=1) / math.sqrt(n_chains)
        rows.append(t_row(f"{label}: E[log P(Y_1..Y_{n})]", -h.nats, lp.mean(), se, n_chains - 1,
                          note=f"H = {h.bits:.6f} bits"))
    else:
        reasons.append(f"E[log P(Y_1..Y_{n})] not tested: the t test needs at least {min_chains} chains "
                       f"(C = {n_chains})")
    return AgreementReport(
        title=f"{n}-token trajectories after {label} vs sampling ({proc.spec})",
        rows=rows, level=level,
        method="exact binomial tests on the MAP/greedy string frequencies; t-test (C-1 df) on the mean model "
               "log-probability vs -H(Y_1..Y_n); Bonferroni",
        settings={"n_chains": n_chains, "n_steps": n, "seed": seed, "procedure": proc.spec, "start": s0,
                  "map_tokens": best.tokens.tolist(), "greedy_tokens": gr.tokens.tolist(), "min_chains": min_chains},
        inconclusive_reasons=reasons,
    )
