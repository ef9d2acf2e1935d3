"""Transient token marginals vs sampling (:func:`check_evolution`).

Independent chains from one start; the count of chains whose t-th generated
token is y is Binomial(C, P(Y_t = y)): exact binomial tests per (t, y).

Assumptions: only that the chains are independent (exact by construction);
the binomial tests are exact at any number of chains and any mixing speed. A
family with no row (every marginal deterministic and matched) is INCONCLUSIVE.
"""

from __future__ import annotations

import numpy as np

from ..analysis.evolution import token_marginals
from ..core.procedure import parse
from ..montecarlo import Sampler
from .stats import AgreementReport, binomial_row, one_start

__all__ = ["check_evolution"]


def check_evolution(op, model, start, n: int, *, procedure=None, n_chains: int = 4000, seed: int = 0,
                    level: float = 0.01) -> AgreementReport:
    """Test the exact token marginals P(Y_t = y), t = 1..n, against chains sampled from ``start``.

    The rollouts use seed ``seed``; every (t, y) with a non-trivial exact
    probability (or a sampled count where the exact one is 0) is one exact
    binomial test.
    """
    proc = parse(procedure) if procedure is not None else op.procedure
    space = op.space
    s0 = one_start(op, start)
    exact = token_marginals(op, s0, n)  # [n, N]
    prompts = np.tile(space.tokens(s0), (n_chains, 1))
    ys = Sampler(model, proc, space.length, space.n_tokens).sample(prompts, n, seed=seed)  # [C, n]
    rows = []
    for t in range(n):
        counts = np.bincount(ys[:, t], minlength=space.n_tokens)
        for y in range(space.n_tokens):
            p0, k = float(exact[t, y]), int(counts[y])
            if (p0 == 0.0 and k == 0) or (p0 == 1.0 and k == n_chains):
                continue
            rows.append(binomial_row(f"{space.label(s0)}: P(Y_{t + 1} = {y})", k, n_chains, p0))
    return AgreementReport(
        title=f"token marginals after {space.label(s0)} vs sampling ({proc.spec})",
        rows=rows, level=level,
        method="exact token marginals by pushing the state distribution; exact two-sided binomial tests; Bonferroni",
        settings={"n_chains": n_chains, "n_steps": n, "seed": seed, "procedure": proc.spec, "start": s0},
    )
