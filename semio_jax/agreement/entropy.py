"""Entropy rate vs sampling (:func:`check_entropy_rate`).

Shannon-McMillan-Breiman: along one path, -1/n log P(Y_1..Y_n) -> h. Chains
start from the exact pi of an attractor, so E[-log q(Y_t | X_{t-1})] =
sum_s pi(s) H(s) = h at every t and each chain's average is an unbiased
replica; log q is the MODEL's own (re-evaluated on each sampled context, never
read from the operator). Student t, C - 1 df.
"""

from __future__ import annotations

import math

import numpy as np

from ..analysis import class_structure, stationary_result
from ..analysis.entropy import entropy_rate
from ..core.procedure import parse
from ..montecarlo import Sampler
from ..montecarlo.estimators import sequence_log_probs
from .stats import AgreementReport, t_row

__all__ = ["check_entropy_rate"]


def check_entropy_rate(op, model, *, procedure=None, attractors=None, n_chains: int = 64, n_steps: int = 500,
                       seed: int = 0, level: float = 0.01, max_attractors: int = 6) -> AgreementReport:
    """Test each attractor's exact entropy rate against -1/n log P(path) of chains sampled from ``model``.

    Chain starts are drawn from the exact pi with numpy's default_rng([seed, a]);
    the rollouts of attractor a use seed ``seed * 100_003 + a``. The
    log-probabilities are the model's (re-evaluated on the sampled contexts
    under the sampling procedure).
    """
    proc = parse(procedure) if procedure is not None else op.procedure
    space = op.space
    cs = class_structure(op)
    st = stationary_result(op)
    er = entropy_rate(op)
    if attractors is None:
        attractors = [a for a, m in enumerate(cs.attractors) if m.size > 1][:max_attractors]
    rows = []
    for a in attractors:
        pi = st.distribution(a)[: space.num_full]
        rng = np.random.default_rng([seed, a])
        starts = rng.choice(space.num_full, size=n_chains, p=pi / pi.sum())
        prompts = np.stack([space.tokens(int(s)) for s in starts])
        sampler = Sampler(model, proc, space.length, space.n_tokens)
        ys = sampler.sample(prompts, n_steps, seed=seed * 100_003 + a)
        lp = sequence_log_probs(model, proc, space.length, prompts, ys)  # [C, n]
        per_chain = -lp.mean(axis=1)
        se = per_chain.std(ddof=1) / math.sqrt(n_chains) if n_chains > 1 else math.inf
        rows.append(t_row(f"A{a}: entropy rate (nats/token)", er.nats[a], per_chain.mean(), se, n_chains - 1,
                           note=f"exact {er.bits[a]:.6f} bits; |A|={cs.attractors[a].size}"))
    return AgreementReport(
        title=f"entropy rate vs -1/n log P(sampled path) ({proc.spec})",
        rows=rows, level=level,
        method="Shannon-McMillan-Breiman; independent chains from the exact pi, model log-probabilities; "
               "Student t (C-1 df), two-sided; Bonferroni",
        settings={"n_chains": n_chains, "n_steps": n_steps, "seed": seed, "procedure": proc.spec,
                  "attractors": list(map(int, attractors))},
    )
