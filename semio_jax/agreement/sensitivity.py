"""Sensitivity of futures to a one-token perturbation vs sampling (:func:`check_sensitivity`).

C independent chains from the prompt and C from the perturbed state; each
sampled state law at each time t gets a Pearson chi-square goodness-of-fit test
against the exact law (as in :mod:`semio_jax.agreement.mixing`, with its
assumptions: independent chains, cells pooled below ``min_expected``; a law in
one cell gives no row, and a family with none is INCONCLUSIVE).
"""

from __future__ import annotations

import numpy as np

from ..analysis.sensitivity import perturbations
from ..core.procedure import parse
from ..montecarlo import Sampler
from .mixing import law_row, laws_at_times, states_at_times
from .stats import AgreementReport

__all__ = ["check_sensitivity"]


def check_sensitivity(op, model, prompt, perturbed=None, t_values=(1, 2, 4, 8), *, procedure=None,
                      n_chains: int = 2000, seed: int = 0, level: float = 0.01,
                      min_expected: float = 5.0) -> AgreementReport:
    """Test the exact future laws of a prompt and of a one-token perturbation against sampling.

    Args:
      prompt: a state index or token sequence.
      perturbed: the perturbed state (index or tokens); default: the one-token
        perturbation whose future differs most from the prompt's at max(t_values).
      t_values: the times tested; one chi-square test per (start, t), Bonferroni.
      n_chains: chains per start (rollout seeds ``seed * 100_003`` and ``seed * 100_003 + 1``).

    Rows: exact = D(t) = ||e_prompt P^t - e_perturbed P^t||_TV, estimate = the TV
    between the two sampled laws (the same on both rows of a t); the p-value is
    the chi-square test of that row's start.
    """
    proc = parse(procedure) if procedure is not None else op.procedure
    space = op.space
    a = int(prompt) if np.ndim(prompt) == 0 else space.index(prompt)
    times = sorted(set(int(t) for t in t_values))
    if not times or times[0] < 1:
        raise ValueError(f"t_values must be times >= 1, got {t_values!r}")
    if perturbed is None:
        cands, _, _ = perturbations(space, a)
        if cands.size == 0:
            raise ValueError("the prompt has no one-token perturbations (N = 1)")
        la = laws_at_times(op, a, [times[-1]])[times[-1]]
        tvs = [0.5 * np.abs(laws_at_times(op, int(b), [times[-1]])[times[-1]] - la).sum() for b in cands]
        b = int(cands[int(np.argmax(tvs))])
    else:
        b = int(perturbed) if np.ndim(perturbed) == 0 else space.index(perturbed)
    laws = {x: laws_at_times(op, x, times) for x in (a, b)}
    sampler = Sampler(model, proc, space.length, space.n_tokens)  # one sampler: compiled once
    samples = {x: states_at_times(op, sampler, x, times, n_chains, seed * 100_003 + i)
               for i, x in enumerate((a, b))}
    rows = []
    for t in times:
        ca = np.bincount(samples[a][t], minlength=op.num_states)
        cb = np.bincount(samples[b][t], minlength=op.num_states)
        exact_d = 0.5 * np.abs(laws[a][t] - laws[b][t]).sum()
        est_d = 0.5 * np.abs(ca - cb).sum() / n_chains
        for x, counts in ((a, ca), (b, cb)):
            rows.append(law_row(f"{space.label(x)}: law at t={t} (D={exact_d:.4f})", counts, laws[x][t],
                                 exact_d, est_d, min_expected))
    rows = [r for r in rows if r is not None]  # a law in one cell tests nothing
    return AgreementReport(
        title=f"futures of {space.label(a)} vs {space.label(b)}, exact vs sampling ({proc.spec})", rows=rows,
        level=level,
        method="independent chains from each start; Pearson chi-square goodness of fit of each state law at each t "
               f"(cells with expected count >= {min_expected:g}, the rest pooled); Bonferroni",
        settings={"n_chains": n_chains, "seed": seed, "procedure": proc.spec, "prompt": a, "perturbed": b,
                  "t_values": times, "min_expected": min_expected},
    )
