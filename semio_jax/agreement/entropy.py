"""Entropy rate vs sampling (:func:`check_entropy_rate`).

Shannon-McMillan-Breiman: along one path, -1/n log P(Y_1..Y_n) -> h. Chains
start from the exact pi of an attractor, so E[-log q(Y_t | X_{t-1})] =
sum_s pi(s) H(s) = h at every t and each chain's average is an unbiased
replica; log q is the MODEL's own (re-evaluated on each sampled context, never
read from the operator).

The test uses the exact variance of each chain's average surprisal at the run
length n (:func:`~semio_jax.agreement.variance.surprisal_variance`: the state
part through the exact autocovariances, the martingale part and their cross
terms), divided by C for the pooled mean: z = (mean - h) / sqrt(Var / C),
normal, two-sided. Assumption: the pooled mean is close to normal. It is the
sum of C n steps of a chain; when the budget covers fewer than
``min_relaxations`` exact relaxation times (C n < min_relaxations * t_rel, t_rel =
1 / spectral gap of the attractor), rare slow phases can make it skewed, so
the attractor is not tested and the report is INCONCLUSIVE with the budget
needed. The model's float32 log-probabilities differ from the exact ones by
round-off: the standard error is floored at 1e-6 (1 + h).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from ..analysis import class_structure, stationary_result
from ..analysis.entropy import entropy_rate
from ..analysis.mixing import spectral_gap
from ..core.procedure import parse
from ..montecarlo import Sampler
from ..montecarlo.estimators import sequence_log_probs
from .stats import AgreementReport, CheckRow
from .variance import surprisal_variance

__all__ = ["check_entropy_rate", "MIN_RELAXATIONS"]

MIN_RELAXATIONS = 500.0  # entropy rate: smallest C n / t_rel for a tested attractor (see module docstring)


def check_entropy_rate(op, model, *, procedure=None, attractors=None, n_chains: int = 64, n_steps: int = 500,
                       seed: int = 0, level: float = 0.01, max_attractors: int = 6,
                       min_relaxations: float = MIN_RELAXATIONS) -> AgreementReport:
    """Test each attractor's exact entropy rate against -1/n log P(path) of chains sampled from ``model``.

    Chain starts are drawn from the exact pi with numpy's default_rng([seed, a]);
    the rollouts of attractor a use seed ``seed * 100_003 + a``. The
    log-probabilities are the model's (re-evaluated on the sampled contexts
    under the sampling procedure). Assumptions and the budget rule: see the
    module docstring (``min_relaxations``).
    """
    proc = parse(procedure) if procedure is not None else op.procedure
    space = op.space
    cs = class_structure(op)
    st = stationary_result(op)
    er = entropy_rate(op)
    if attractors is None:
        attractors = [a for a, m in enumerate(cs.attractors) if m.size > 1][:max_attractors]
    rows, reasons = [], []
    relax = spectral_gap(op).relaxation_time if attractors else []
    for a in attractors:
        t_rel = float(relax[a])
        if not n_chains * n_steps >= min_relaxations * t_rel:
            reasons.append(f"A{a}: {n_chains} x {n_steps} chain-steps cover fewer than {min_relaxations:g} relaxation "
                           f"times ({t_rel:.3g} steps each); needs C n >= {min_relaxations * t_rel:.3g}, e.g. "
                           f"{math.ceil(min_relaxations * t_rel / n_steps)} chains x {n_steps} steps")
            continue
        pi = st.distribution(a)[: space.num_full]
        rng = np.random.default_rng([seed, a])
        starts = rng.choice(space.num_full, size=n_chains, p=pi / pi.sum())
        prompts = np.stack([space.tokens(int(s)) for s in starts])
        sampler = Sampler(model, proc, space.length, space.n_tokens)
        ys = sampler.sample(prompts, n_steps, seed=seed * 100_003 + a)
        lp = sequence_log_probs(model, proc, space.length, prompts, ys)  # [C, n]
        per_chain = -lp.mean(axis=1)
        members = cs.attractors[a]
        _, var = surprisal_variance(op, members, pi[members] / pi[members].sum(), n_steps)
        h = float(er.nats[a])
        se = max(math.sqrt(var / n_chains), 1e-6 * (1.0 + h))
        z = (float(per_chain.mean()) - h) / se
        rows.append(CheckRow(f"A{a}: entropy rate (nats/token)", h, float(per_chain.mean()), se, float(z),
                             float(2 * stats.norm.sf(abs(z))),
                             f"exact {er.bits[a]:.6f} bits; |A|={members.size}; exact variance; t_rel {t_rel:.3g}"))
    return AgreementReport(
        title=f"entropy rate vs -1/n log P(sampled path) ({proc.spec})",
        rows=rows, level=level,
        method="Shannon-McMillan-Breiman; independent chains from the exact pi, model log-probabilities; "
               "normal test with the exact finite-n variance, two-sided; attractors whose relaxation time the "
               f"budget covers fewer than {min_relaxations:g} times are not tested; Bonferroni",
        settings={"n_chains": n_chains, "n_steps": n_steps, "seed": seed, "procedure": proc.spec,
                  "attractors": list(map(int, attractors)), "min_relaxations": min_relaxations},
        inconclusive_reasons=reasons,
    )
