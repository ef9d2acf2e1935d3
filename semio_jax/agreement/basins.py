"""Absorption probabilities vs sampling (:func:`check_basins`).

From a start s, C independent chains run up to a horizon T. The exact
probability of having entered attractor a by time T is computed by pushing e_s
through the operator T times (closed classes keep their mass), and the horizon
is chosen so that the exact mass still outside every attractor is below 1e-6
(or reported). The counts are multinomial, so each outcome is tested with an
exact binomial test.

Assumptions: only that the chains are independent (exact by construction).
The finite-horizon probabilities are exact at any horizon, so the tests are
exact at any budget and any mixing speed; a family with no row is
INCONCLUSIVE. An outcome of exact probability below 1e-12 that no chain showed
gets no row (its test could not reject); one that a chain showed is tested.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from ..analysis import basins_result, class_structure
from ..core.procedure import parse
from ..montecarlo import sample_absorption
from .stats import AgreementReport, CheckRow

__all__ = ["check_basins", "absorption_by_horizon", "default_starts", "draw_absorption_samples", "choose_horizon",
           "NEGLIGIBLE"]

NEGLIGIBLE = 1e-12  # an outcome this improbable and unseen gets no row (under H0 seen with probability <= C * it)


def absorption_by_horizon(op, start: int, horizon: int) -> np.ndarray:
    """Exact P(attractor a entered within ``horizon`` steps from ``start``): float64[m + 1], last = not yet."""
    cs = class_structure(op)
    m = len(cs.attractors)
    dist = np.zeros(op.num_states)
    dist[start] = 1.0
    for _ in range(horizon):
        dist = op.push(dist)
    inside = np.array([dist[members].sum() for members in cs.attractors])
    return np.concatenate([inside, [max(0.0, 1.0 - inside.sum())]])[: m + 1]


def choose_horizon(op, start: int, tail: float = 1e-6, cap: int = 20_000) -> int:
    cs = class_structure(op)
    dist = np.zeros(op.num_states)
    dist[start] = 1.0
    outside = cs.attractor_of < 0
    for t in range(cap + 1):
        if dist[outside].sum() <= tail:
            return max(t, 1)
        dist = op.push(dist)
    return cap


def default_starts(op, max_starts: int = 6) -> list[int]:
    """Starting states worth testing: the one-token prompts, then the most uncertain transient states.

    When no state can reach two attractors (deterministic maps), one transient
    start per basin instead: the sampled outcome must then match exactly.
    """
    b = basins_result(op)
    split = b.split
    chosen: list[int] = []
    if op.space.prefixes:
        chosen += [s for s in op.space.group(1) if s in set(split.tolist())]
    hu = b.split_probabilities  # [U, m], the rows of the split states
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.nansum(np.where(hu > 0, hu * np.log(hu), 0.0), axis=1)  # [U]
    for s in split[np.argsort(-ent, kind="stable")]:
        if len(chosen) >= max_starts:
            break
        if int(s) not in chosen:
            chosen.append(int(s))
    if not chosen:  # no state can reach two attractors (e.g. greedy): one start per basin
        cs = class_structure(op)
        owner = b.owner
        candidates = list(op.space.group(1)) if op.space.prefixes else []
        candidates += [int(s) for s in cs.transient]
        seen = set()
        for s in candidates:
            if owner[s] not in seen:
                seen.add(owner[s])
                chosen.append(int(s))
            if len(chosen) >= max_starts:
                break
    return chosen[:max_starts]


def draw_absorption_samples(op, model, *, starts=None, procedure=None, n_chains: int = 2000,
                            horizon: int | None = None, seed: int = 0, max_starts: int = 6,
                            keep_path: bool = True) -> list:
    """The chains :func:`check_basins` draws, one AbsorptionSample per start (same seeds).

    With ``keep_path=True`` (default) every chain runs the whole horizon and
    keeps its path, so the samples can be passed as ``check_basins(other_op,
    ..., sample=...)`` for an operator with different attractors.
    """
    proc = parse(procedure) if procedure is not None else op.procedure
    cs = class_structure(op)
    starts = default_starts(op, max_starts) if starts is None else [int(s) for s in starts]
    out = []
    for i, s in enumerate(starts):
        t = horizon if horizon is not None else choose_horizon(op, s)
        out.append(sample_absorption(model, proc, op.space, s, cs.attractor_of, n_chains, t,
                                     seed=seed * 100_003 + i, keep_path=keep_path))
    return out


def check_basins(op, model, *, starts=None, procedure=None, n_chains: int = 2000, horizon: int | None = None,
                 seed: int = 0, level: float = 0.01, max_starts: int = 6, sample=None) -> AgreementReport:
    """Test absorption probabilities against chains sampled from ``model``.

    Args:
      starts: state indices to start from (default: :func:`default_starts`).
      horizon: steps per chain (default: chosen per start so the exact
        unabsorbed mass is <= 1e-6, capped at 20,000).
      seed: rollouts from start number i use seed ``seed * 100_003 + i``.
      sample: chains drawn beforehand, one AbsorptionSample per start (a
        list, or a mapping start -> sample); the starts are then the samples'.
        A sample with a recorded path (``keep_path=True``, e.g. from
        :func:`draw_absorption_samples` on another operator) is re-judged with
        this operator's attractors at this operator's horizon (at most the
        recorded length); one without a path must come from an operator with
        the same attractors.
    """
    proc = parse(procedure) if procedure is not None else op.procedure
    cs = class_structure(op)
    basins = basins_result(op)
    if sample is not None:
        samples = list(sample.values()) if isinstance(sample, dict) else list(sample)
        starts = [int(x.start) for x in samples]
        n_chains = min((x.n_chains for x in samples), default=n_chains)
    else:
        samples = None
        starts = default_starts(op, max_starts) if starts is None else [int(s) for s in starts]
    rows = []
    horizons = []
    for i, s in enumerate(starts):
        t = horizon if horizon is not None else choose_horizon(op, s)
        if samples is None:
            samp = sample_absorption(model, proc, op.space, s, cs.attractor_of, n_chains, t,
                                     seed=seed * 100_003 + i)
        elif samples[i].path is not None:
            t = min(t, samples[i].path.shape[1])
            samp = samples[i].relabel(cs.attractor_of, t)
        else:
            samp = samples[i]
            if samp.n_attractors != len(cs.attractors):
                raise ValueError(f"the sample from state {s} was judged with {samp.n_attractors} attractors, the "
                                 f"operator has {len(cs.attractors)}; draw it with keep_path=True to re-judge it")
            t = samp.horizon
        horizons.append(t)
        exact = absorption_by_horizon(op, s, t)  # [m + 1]
        counts = samp.counts()
        for a in range(len(exact)):
            k, p0 = int(counts[a]), float(min(max(exact[a], 0.0), 1.0))
            if p0 < NEGLIGIBLE and k == 0:  # cannot reject; a chain that shows it anyway is tested (and fails)
                continue
            name = f"{op.space.label(s)} -> " + (f"A{a}" if a < len(exact) - 1 else "none") + f" by {t}"
            note = f"h={basins.rows(s)[a]:.6f}" if a < len(exact) - 1 else ""
            c = samp.n_chains
            se = math.sqrt(p0 * (1 - p0) / c)
            z = (k / c - p0) / se if se > 0 else (0.0 if k == round(p0 * c) else math.inf)
            if p0 in (0.0, 1.0):
                pv = 1.0 if k == p0 * c else 0.0
            else:
                pv = float(stats.binomtest(k, c, p0).pvalue)
            rows.append(CheckRow(name, p0, k / c, se, float(z), pv, note))
    return AgreementReport(
        title=f"absorption probabilities vs sampling ({proc.spec})",
        rows=rows, level=level,
        method="exact finite-horizon absorption probabilities; exact two-sided binomial tests; Bonferroni",
        settings={"n_chains": n_chains, "seed": seed, "procedure": proc.spec, "starts": starts,
                  "horizons": horizons},
    )
