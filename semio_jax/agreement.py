"""Agreement between exact analyses and sampling from the model: statistical tests.

Each check is a family of two-sided tests of H0: "the sampled process has the
exact value", at a stated **family-wise** level alpha (default 0.01) with a
Bonferroni correction: the family passes iff every p-value exceeds alpha / m.
Under H0 the probability that a correct operator fails a check is at most alpha
(up to the normal approximation in the stationary tests); benchmarks/calibration
measures the actual rate.

Stationary observables (:func:`check_stationary`). For an attractor A with
exact stationary distribution pi_A, C independent chains start from states
drawn from pi_A (seeded) and run n steps under the model. If pi_A is stationary
for the sampled process, every X_t ~ pi_A, so each chain's time average of an
observable g is an unbiased estimate of pi_A g *at any run length*: no burn-in
bias to argue about. If it is not (a wrong operator), the chains drift towards
the true law and the averages move away. Observables: token frequencies,
n-gram frequencies and the mass of the most probable states. The statistic is
t = (mean - exact) / se over the C i.i.d. replicas, with Student's t (C - 1
degrees of freedom).

Absorption (:func:`check_basins`). From a start s, C independent chains run up
to a horizon T. The exact probability of having entered attractor a by time T
is computed by pushing e_s through the operator T times (closed classes keep
their mass), and the horizon is chosen so that the exact mass still outside
every attractor is below 1e-6 (or reported). The counts are multinomial, so
each outcome is tested with an exact binomial test.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from .analysis import basins_result, class_structure, stationary_result
from .montecarlo import sample_absorption, sample_occupation
from .sampling import parse

__all__ = ["CheckRow", "AgreementReport", "check_stationary", "check_basins", "absorption_by_horizon"]


@dataclass
class CheckRow:
    """One tested quantity."""

    quantity: str
    exact: float
    estimate: float
    se: float
    z: float
    p_value: float
    note: str = ""


@dataclass
class AgreementReport:
    """A family of tests with a family-wise level.

    Attributes:
      title: what was checked.
      rows: one CheckRow per quantity.
      level: family-wise significance level alpha.
      method: how the p-values were computed.
      settings: everything needed to reproduce the sample (seeds, sizes, procedure).
    """

    title: str
    rows: list
    level: float
    method: str
    settings: dict = field(default_factory=dict)

    @property
    def n_tests(self) -> int:
        return len(self.rows)

    @property
    def threshold(self) -> float:
        """Bonferroni per-test threshold alpha / m."""
        return self.level / max(self.n_tests, 1)

    @property
    def min_p(self) -> float:
        return min((r.p_value for r in self.rows), default=1.0)

    @property
    def passed(self) -> bool:
        return self.min_p > self.threshold

    def failures(self) -> list:
        return [r for r in self.rows if r.p_value <= self.threshold]

    def to_dict(self) -> dict:
        return {
            "title": self.title, "level": self.level, "method": self.method, "n_tests": self.n_tests,
            "threshold": self.threshold, "min_p": self.min_p, "passed": self.passed,
            "settings": self.settings, "rows": [asdict(r) for r in self.rows],
        }

    def table(self, max_rows: int | None = 20) -> str:
        """A readable text table (worst rows first when truncated)."""
        rows = sorted(self.rows, key=lambda r: r.p_value) if max_rows and len(self.rows) > max_rows else self.rows
        shown = rows[:max_rows] if max_rows else rows
        head = f"{'quantity':<40} {'exact':>10} {'sampled':>10} {'s.e.':>9} {'z':>7} {'p':>8}"
        lines = [f"{self.title}", head, "-" * len(head)]
        for r in shown:
            lines.append(f"{r.quantity[:40]:<40} {r.exact:>10.5f} {r.estimate:>10.5f} {r.se:>9.2e} "
                         f"{r.z:>7.2f} {r.p_value:>8.3g}")
        if len(shown) < len(self.rows):
            lines.append(f"... {len(self.rows) - len(shown)} more rows (all with larger p)")
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"{verdict}: {self.n_tests} tests, min p = {self.min_p:.3g}, "
                     f"Bonferroni threshold {self.level:g}/{self.n_tests} = {self.threshold:.2e}")
        return "\n".join(lines)


def _t_row(name: str, exact: float, est, se: float, df: int, note: str = "") -> CheckRow:
    est = float(est)
    se = float(se)
    if se > 0:
        z = (est - exact) / se
        p = float(2 * stats.t.sf(abs(z), df))
    else:  # every replica gave the same value
        same = math.isclose(est, exact, rel_tol=1e-9, abs_tol=1e-12)
        z, p = (0.0, 1.0) if same else (math.copysign(math.inf, est - exact), 0.0)
    return CheckRow(name, float(exact), est, se, float(z), p, note)


def _tokens_str(space, idx: int) -> str:
    return space.label(int(idx))


def check_stationary(op, model, *, procedure=None, attractors=None, n_chains: int = 64,
                     n_steps: int = 2000, seed: int = 0, level: float = 0.01, top_states: int = 5,
                     ngram_order: int = 2, max_attractors: int = 6) -> AgreementReport:
    """Test the exact stationary distributions against chains sampled from ``model``.

    Args:
      op: the exact Operator.
      model: the model to sample from (the same one, unless testing a mistake).
      procedure: the procedure for sampling (default: the operator's own).
      attractors: which attractors to test (default: the first ``max_attractors``
        with more than one state; single-state attractors are trivial).
      n_chains: independent replicas per attractor.
      n_steps: steps per chain.
      seed: master seed; chain starts use numpy's default_rng([seed, a]) and the
        rollouts seed ``seed * 100_003 + a``.
      level: family-wise level alpha.
      top_states: how many of the most probable states to test.
      ngram_order: also test n-gram frequencies up to this order (<= L).
    """
    proc = parse(procedure) if procedure is not None else op.procedure
    space = op.space
    cs = class_structure(op)
    st = stationary_result(op)
    if attractors is None:
        attractors = [a for a, m in enumerate(cs.attractors) if m.size > 1][:max_attractors]
    rows = []
    for a in attractors:
        pi = st.distributions[a][: space.num_full]
        rng = np.random.default_rng([seed, a])
        starts = rng.choice(space.num_full, size=n_chains, p=pi / pi.sum())
        occ = sample_occupation(model, proc, space, starts, n_steps, seed=seed * 100_003 + a)
        df = n_chains - 1
        for n in range(1, min(ngram_order, space.length) + 1):
            exact = pi.reshape(-1, space.n_tokens**n).sum(axis=0)
            est = occ.ngram_frequencies(n)
            for g in range(space.n_tokens**n):
                if exact[g] == 0 and est.value[g] == 0:
                    continue
                label = "".join(str(t) for t in np.unravel_index(g, (space.n_tokens,) * n)) if space.n_tokens <= 10 else str(g)
                rows.append(_t_row(f"A{a}: P({n}-gram {label})", exact[g], est.value[g], est.se[g], df))
        freq = occ.state_frequencies()
        for s in np.argsort(-pi, kind="stable")[:top_states]:
            if pi[s] == 0:
                break
            rows.append(_t_row(f"A{a}: pi({_tokens_str(space, s)})", pi[s], freq.value[s], freq.se[s], df))
    return AgreementReport(
        title=f"stationary distribution vs sampling ({proc.spec})",
        rows=rows, level=level,
        method="independent replicas started from the exact pi; Student t (C-1 df), two-sided; Bonferroni",
        settings={"n_chains": n_chains, "n_steps": n_steps, "seed": seed, "procedure": proc.spec,
                  "attractors": list(map(int, attractors)), "top_states": top_states, "ngram_order": ngram_order},
    )


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


def _choose_horizon(op, start: int, tail: float = 1e-6, cap: int = 20_000) -> int:
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
    h = b.probabilities
    split = np.flatnonzero(b.reachable.sum(axis=1) >= 2)
    chosen: list[int] = []
    if op.space.prefixes:
        chosen += [s for s in op.space.group(1) if s in set(split.tolist())]
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.nansum(np.where(h > 0, h * np.log(h), 0.0), axis=1)
    for s in split[np.argsort(-ent[split], kind="stable")]:
        if len(chosen) >= max_starts:
            break
        if int(s) not in chosen:
            chosen.append(int(s))
    if not chosen:  # no state can reach two attractors (e.g. greedy): one start per basin
        cs = class_structure(op)
        owner = np.argmax(b.reachable, axis=1)
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


def check_basins(op, model, *, starts=None, procedure=None, n_chains: int = 2000, horizon: int | None = None,
                 seed: int = 0, level: float = 0.01, max_starts: int = 6) -> AgreementReport:
    """Test absorption probabilities against chains sampled from ``model``.

    Args:
      starts: state indices to start from (default: :func:`default_starts`).
      horizon: steps per chain (default: chosen per start so the exact
        unabsorbed mass is <= 1e-6, capped at 20,000).
      seed: rollouts from start number i use seed ``seed * 100_003 + i``.
    """
    proc = parse(procedure) if procedure is not None else op.procedure
    cs = class_structure(op)
    h = basins_result(op).probabilities
    starts = default_starts(op, max_starts) if starts is None else [int(s) for s in starts]
    rows = []
    horizons = []
    for i, s in enumerate(starts):
        t = horizon if horizon is not None else _choose_horizon(op, s)
        horizons.append(t)
        exact = absorption_by_horizon(op, s, t)  # [m + 1]
        samp = sample_absorption(model, proc, op.space, s, cs.attractor_of, n_chains, t, seed=seed * 100_003 + i)
        counts = samp.counts()
        for a in range(len(exact)):
            k, p0 = int(counts[a]), float(min(max(exact[a], 0.0), 1.0))
            if p0 == 0.0 and k == 0:
                continue
            name = f"{op.space.label(s)} -> " + (f"A{a}" if a < len(exact) - 1 else "none") + f" by {t}"
            note = f"h={h[s, a]:.6f}" if a < len(exact) - 1 else ""
            se = math.sqrt(p0 * (1 - p0) / n_chains)
            z = (k / n_chains - p0) / se if se > 0 else (0.0 if k == round(p0 * n_chains) else math.inf)
            if p0 in (0.0, 1.0):
                pv = 1.0 if k == p0 * n_chains else 0.0
            else:
                pv = float(stats.binomtest(k, n_chains, p0).pvalue)
            rows.append(CheckRow(name, p0, k / n_chains, se, float(z), pv, note))
    return AgreementReport(
        title=f"absorption probabilities vs sampling ({proc.spec})",
        rows=rows, level=level,
        method="exact finite-horizon absorption probabilities; exact two-sided binomial tests; Bonferroni",
        settings={"n_chains": n_chains, "seed": seed, "procedure": proc.spec, "starts": starts,
                  "horizons": horizons},
    )
