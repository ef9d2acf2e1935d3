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
degrees of freedom). Where every replica gives the same frequency (se = 0)
the t statistic is undefined: a frequency f that no chain showed gets the
p-value (1 - f)^C, a bound on P(no chain in the set), since each chain is in
it at its first step with probability f (and one every chain always showed,
f^C); so a rare n-gram missed by a short run is no alarm, a common one is.

Transitions (rows of :func:`check_stationary`). The pi-based rows above see a
wrong operator only through its stationary law, and a mistake can change rows
a lot while barely moving pi (a model shown L-1 tokens instead of L). So the
same chains are also tested transition by transition: at each visit to a full
state s the next token is drawn from the row P(s, .), independently of the
past given s (strong Markov property). For any weights w(s, y) the sum over
the steps of w(s_t, y_t) - E_P(s_t) w is a martingale whose predictable
quadratic variation is the sum of the row variances Var_P(s_t) w; the
martingale central limit theorem makes the residuals O[s, y] - n_s P(s, y)
(n_s visits to s, O their next-token counts, chains pooled) jointly normal
with the multinomial covariance of each row, uncorrelated across states, as
the counts grow (Billingsley 1961, "Statistical methods in Markov chains"):
no Markov-correlation correction is needed. Three rows per attractor:
Pearson's chi-square over every visited state (each row's cells with
expected count < ``min_expected`` pooled, as in :func:`check_tv`; broad
mistakes), the same residuals summed over the states that share their last
two tokens (chi-square with the summed covariance; mistakes spread thinly
over many states in a common direction) and the mean log-probability of the
sampled tokens under the exact rows (one degree of freedom, normal; the
direction of a temperature mistake). A sampled transition that the exact
operator forbids fails at once (p = 0).

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

from ..analysis import basins_result, class_structure, stationary_result
from ..montecarlo import sample_absorption, sample_occupation
from ..core.procedure import parse

__all__ = ["CheckRow", "AgreementReport", "check_stationary", "check_basins", "absorption_by_horizon",
           "draw_stationary_samples", "draw_absorption_samples"]


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


MIN_VISITS = 100  # check_stationary: smallest expected (or observed) number of visits of a tested frequency


def _t_row(name: str, exact: float, est, se: float, df: int, note: str = "",
           frequency: bool = False) -> CheckRow:
    est = float(est)
    se = float(se)
    if se > 0:
        z = (est - exact) / se
        p = float(2 * stats.t.sf(abs(z), df))
    else:  # every replica gave the same value
        same = math.isclose(est, exact, rel_tol=1e-9, abs_tol=1e-12)
        z, p = (0.0, 1.0) if same else (math.copysign(math.inf, est - exact), 0.0)
        if not same and frequency and 0.0 < exact < 1.0 and est in (0.0, 1.0):
            # A frequency that no chain (or every chain, always) showed. Each of the df + 1 chains is
            # in the set at its first step with probability `exact` (it starts from pi), so
            # P(all chains at 0) <= (1 - exact)^C and P(all at 1) <= exact^C: a valid p-value
            # where the t statistic is undefined (a rare event missed by a short run is no alarm).
            p = float((1.0 - exact) ** (df + 1) if est == 0.0 else exact ** (df + 1))
    return CheckRow(name, float(exact), est, se, float(z), p, note)


def _tokens_str(space, idx: int) -> str:
    return space.label(int(idx))


MIN_EXPECTED = 5.0  # transition tests: smallest expected count of a cell before pooling
LOGPROB_FLOOR = 0.01  # mean log-prob row: log q clipped below at log(LOGPROB_FLOOR) (rare tokens bounded)


def _pool_cells(obs: np.ndarray, exp: np.ndarray, min_expected: float):
    """Cells of each row [k, N] (see module docstring): (cell id int64[k, N] in 0..N, valid bool[k, N]).

    Per row: a token with expected count >= min_expected is its own cell; the others form one rest
    cell (id N), merged into the kept cell of smallest expectation when the rest's expectation is
    below min_expected; tokens of exact probability 0 are in no cell (valid False).
    """
    k, n = exp.shape
    valid = exp > 0
    keep = exp >= min_expected
    cell = np.where(keep, np.arange(n)[None, :], n)
    rest_e = np.where(keep | ~valid, 0.0, exp).sum(axis=1)
    small = (rest_e > 0) & (rest_e < min_expected) & keep.any(axis=1)
    if small.any():
        target = np.argmin(np.where(keep, exp, np.inf), axis=1)
        rows = np.flatnonzero(small)
        merge = (~keep[rows]) & valid[rows]
        cell[rows] = np.where(merge, target[rows, None], cell[rows])
    return cell, valid


def _cell_sums(x: np.ndarray, cell: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Sum x [k, N] within the cells of each row: float64[k, N + 1] (column N: the rest cell)."""
    k, n = x.shape
    out = np.zeros((k, n + 1))
    np.add.at(out, (np.repeat(np.arange(k), n).reshape(k, n)[valid], cell[valid]), x[valid])
    return out


def _transition_rows(a, space, states: np.ndarray, obs: np.ndarray, probs: np.ndarray, min_expected: float,
                     min_visits: float) -> tuple[list, int]:
    """Rows of the transition tests of attractor ``a`` (see the module docstring), and how many were skipped.

    ``states`` int64[k] full states left at least once, ``obs`` int64[k, N] next-token counts
    (chains pooled), ``probs`` float64[k, N] their exact rows.
    """
    n_tok = space.n_tokens
    visits = obs.sum(axis=1).astype(np.float64)
    total = float(visits.sum())
    exp = visits[:, None] * probs
    rows, skipped = [], 0
    forbidden = (probs <= 0) & (obs > 0)
    if forbidden.any():
        i, y = np.argwhere(forbidden)[0]
        note = (f"{int(obs[forbidden].sum())} sampled transitions the exact operator forbids, e.g. "
                f"{_tokens_str(space, states[i])} -> {y}")
        rows.append(CheckRow(f"A{a}: transitions the exact operator forbids", 0.0, float(obs[forbidden].sum()),
                             0.0, math.inf, 0.0, note))
    # 1. Pearson chi-square over the visited states, cells pooled per state
    cell, valid = _pool_cells(obs, exp, min_expected)
    o_c, e_c = _cell_sums(obs.astype(np.float64), cell, valid), _cell_sums(exp, cell, valid)
    used = e_c > 0
    df = int(np.maximum(used.sum(axis=1) - 1, 0).sum())
    if df > 0:
        chi2 = float(np.where(used, (o_c - e_c) ** 2 / np.where(used, e_c, 1.0), 0.0).sum())
        tested = int((used.sum(axis=1) >= 2).sum())
        rows.append(_chi2_row(f"A{a}: transitions per visited state", chi2, df,
                              f"{tested} of {states.size} visited states tested, {int(total)} transitions"))
    else:
        skipped += 1
    # 2. residuals summed over the states sharing their last two tokens
    width = min(2, space.length)
    if n_tok**width > 4096:
        width = 1
    groups = states % (n_tok**width)
    chi2, df, n_groups = _grouped_chi2(obs, probs, visits, groups, min_expected)
    if df > 0:
        rows.append(_chi2_row(f"A{a}: transitions by last {width} token" + "s" * (width > 1), chi2, df,
                              f"{n_groups} groups of states, {int(total)} transitions"))
    else:
        skipped += 1
    # 3. mean log-probability of the sampled tokens (clipped weights; rare tokens pooled as in 1)
    w = np.log(np.maximum(probs, LOGPROB_FLOOR))
    w_c = _cell_sums(exp * w, cell, valid) / np.where(used, e_c, 1.0)  # expectation-weighted mean per cell
    obs_sum = float((o_c * w_c).sum())
    exp_sum = float((e_c * w_c).sum())
    # per state: n_s Var(w over cells) = sum_c e_c w_c^2 - (sum_c e_c w_c)^2 / n_s
    v_s = (e_c * w_c**2).sum(axis=1) - (e_c * w_c).sum(axis=1) ** 2 / np.maximum(visits, 1.0)
    var = float(np.maximum(v_s, 0.0).sum())
    informative = float(visits[used.sum(axis=1) >= 2].sum())
    if var > 0 and informative >= min_visits:
        se = math.sqrt(var) / total
        z = (obs_sum - exp_sum) / math.sqrt(var)
        rows.append(CheckRow(f"A{a}: mean log-prob of sampled transitions", exp_sum / total,
                             obs_sum / total, se, float(z), float(2 * stats.norm.sf(abs(z))),
                             f"log q clipped at log {LOGPROB_FLOOR:g}; {int(informative)} transitions from "
                             "states with two or more cells"))
    else:
        skipped += 1
    return rows, skipped


def _chi2_row(name: str, chi2: float, df: int, note: str) -> CheckRow:
    z = (chi2 - df) / math.sqrt(2 * df)
    return CheckRow(name + " (chi2)", float(df), float(chi2), math.sqrt(2 * df), float(z),
                    float(stats.chi2.sf(chi2, df)), f"chi2={chi2:.2f}, df={df}; {note}")


def _grouped_chi2(obs, probs, visits, groups, min_expected) -> tuple[float, int, int]:
    """Chi-square of the next-token residuals summed within each group of states.

    Per group g: r = sum_s (O_s - n_s P_s), covariance V = sum_s n_s (diag P_s - P_s P_s^T); tokens
    with summed expectation < min_expected pooled into one cell (merged into the smallest kept cell
    when itself below it); statistic r^T V^+ r with df = rank V, summed over groups.
    """
    n = probs.shape[1]
    order = np.argsort(groups, kind="stable")
    g_sorted = groups[order]
    cuts = np.flatnonzero(np.diff(g_sorted)) + 1
    chi2, df, used = 0.0, 0, 0
    for idx in np.split(order, cuts):
        if idx.size == 0:
            continue
        q = probs[idx]
        nv = visits[idx]
        e = nv @ q
        r = obs[idx].sum(axis=0) - e
        cov = np.diag(e) - (q * nv[:, None]).T @ q
        keep = e >= min_expected
        if keep.sum() == 0:
            continue
        rest = (~keep) & (e > 0)
        kept = np.flatnonzero(keep)
        a = np.zeros((kept.size, n))
        a[np.arange(kept.size), kept] = 1.0  # aggregation: cells x tokens
        if rest.any():
            if e[rest].sum() >= min_expected:
                a = np.vstack([a, rest.astype(np.float64)])
            else:
                a[int(np.argmin(e[kept]))] += rest
        ra, va = a @ r, a @ cov @ a.T
        if va.shape[0] < 2:
            continue
        w, vecs = np.linalg.eigh(va)
        good = w > 1e-9 * max(float(w.max()), 1e-300)
        if not good.any():
            continue
        proj = vecs[:, good].T @ ra
        chi2 += float((proj**2 / w[good]).sum())
        df += int(good.sum())
        used += 1
    return chi2, df, used


def draw_stationary_samples(op, model, *, procedure=None, attractors=None, n_chains: int = 64,
                            n_steps: int = 2000, seed: int = 0, max_attractors: int = 6) -> dict:
    """The chains :func:`check_stationary` draws: {attractor index: OccupationSample}.

    Starts from the exact pi of each attractor of ``op`` (numpy's
    default_rng([seed, a])), rollouts seeded ``seed * 100_003 + a``. Pass the
    result as ``check_stationary(..., sample=...)`` to test several exact
    operators against one sampling run.
    """
    proc = parse(procedure) if procedure is not None else op.procedure
    space = op.space
    cs = class_structure(op)
    st = stationary_result(op)
    if attractors is None:
        attractors = [a for a, m in enumerate(cs.attractors) if m.size > 1][:max_attractors]
    out = {}
    for a in attractors:
        pi = st.distribution(a)[: space.num_full]
        rng = np.random.default_rng([seed, a])
        starts = rng.choice(space.num_full, size=n_chains, p=pi / pi.sum())
        out[int(a)] = sample_occupation(model, proc, space, starts, n_steps, seed=seed * 100_003 + a)
    return out


def check_stationary(op, model, *, procedure=None, attractors=None, n_chains: int = 64,
                     n_steps: int = 2000, seed: int = 0, level: float = 0.01, top_states: int = 5,
                     ngram_order: int = 2, max_attractors: int = 6, sample=None,
                     min_visits: float = MIN_VISITS, transitions: bool = True,
                     min_expected: float = MIN_EXPECTED) -> AgreementReport:
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
      min_visits: a frequency is tested only when its exact or its sampled total
        number of visits (over all chains and steps) is at least this: the t
        test is badly anti-conservative for rarer events (a 2-gram expected 5
        times and seen once gives t = -4). An event the exact chain forbids but
        the chains showed is always tested (and fails).
      transitions: also test the sampled transitions against the exact rows (three rows per
        attractor, see the module docstring; needs a sample that recorded them, as
        :func:`draw_stationary_samples` does). These see mistakes that change rows but barely
        move pi.
      min_expected: transition tests: smallest expected count of a cell before pooling.
      sample: chains drawn beforehand (then ``model``, ``n_chains``, ``n_steps``
        and ``seed`` are not used for sampling): an OccupationSample (tested
        against the first tested attractor) or a mapping {attractor index of
        ``op``: OccupationSample}, e.g. from :func:`draw_stationary_samples`
        on another operator. One sampling run can so be compared with several
        exact operators (benchmarks/calibration.py does this).
    """
    from ..montecarlo import OccupationSample

    proc = parse(procedure) if procedure is not None else op.procedure
    space = op.space
    cs = class_structure(op)
    st = stationary_result(op)
    if sample is not None:
        if isinstance(sample, OccupationSample):
            if attractors is None:
                attractors = [a for a, m in enumerate(cs.attractors) if m.size > 1][:1] or [0]
            sample = {int(attractors[0]): sample}
        sample = {int(a): occ for a, occ in dict(sample).items()}
        if attractors is None:
            attractors = list(sample)
        for a in attractors:
            if a not in sample or not 0 <= a < len(cs.attractors):
                raise ValueError(f"no pre-drawn sample for attractor {a} (samples for {sorted(sample)}; "
                                 f"the operator has {len(cs.attractors)} attractors)")
            if sample[a].space != space:
                raise ValueError(f"the sample for attractor {a} was drawn on {sample[a].space!r}, not {space!r}")
    elif attractors is None:
        attractors = [a for a, m in enumerate(cs.attractors) if m.size > 1][:max_attractors]
    if sample is None:
        sample = draw_stationary_samples(op, model, procedure=proc, attractors=attractors, n_chains=n_chains,
                                         n_steps=n_steps, seed=seed)
    else:
        n_chains = min((occ.n_chains for occ in sample.values()), default=n_chains)
        n_steps = min((occ.n_steps for occ in sample.values()), default=n_steps)
    rows = []
    rare = 0
    no_transitions = []
    for a in attractors:
        pi = st.distribution(a)[: space.num_full]
        occ = sample[a]
        df = occ.n_chains - 1
        visits = occ.n_chains * occ.n_steps  # chain-steps: a frequency f means f * visits expected visits

        def frequent(f_exact, f_est):
            return f_exact == 0 or max(f_exact, f_est) * visits >= min_visits

        for n in range(1, min(ngram_order, space.length) + 1):
            exact = pi.reshape(-1, space.n_tokens**n).sum(axis=0)
            est = occ.ngram_frequencies(n)
            for g in range(space.n_tokens**n):
                if exact[g] == 0 and est.value[g] == 0:
                    continue
                if not frequent(exact[g], est.value[g]):
                    rare += 1
                    continue
                label = "".join(str(t) for t in np.unravel_index(g, (space.n_tokens,) * n)) if space.n_tokens <= 10 else str(g)
                rows.append(_t_row(f"A{a}: P({n}-gram {label})", exact[g], est.value[g], est.se[g], df,
                                   frequency=True))
        freq = occ.state_frequencies()
        for s in np.argsort(-pi, kind="stable")[:top_states]:
            if pi[s] == 0:
                break
            if not frequent(pi[s], freq.value[s]):
                rare += 1
                continue
            rows.append(_t_row(f"A{a}: pi({_tokens_str(space, s)})", pi[s], freq.value[s], freq.se[s], df,
                               frequency=True))
        if transitions:
            if not occ.has_transitions:
                no_transitions.append(int(a))
                continue
            visited, counts = occ.transitions()
            t_rows, t_skipped = _transition_rows(a, space, visited, counts, op.probs[visited], min_expected,
                                                 min_visits)
            rows += t_rows
            rare += t_skipped
    if no_transitions:
        raise ValueError(f"the samples of attractor(s) {no_transitions} carry no transitions; draw them with "
                         "draw_stationary_samples / sample_occupation, or pass transitions=False")
    return AgreementReport(
        title=f"stationary distribution vs sampling ({proc.spec})",
        rows=rows, level=level,
        method="independent replicas started from the exact pi; Student t (C-1 df), two-sided; Bonferroni; "
               f"frequencies with fewer than {min_visits:g} expected and observed visits in all are not tested"
               + ("; transitions (chains pooled): Pearson chi-square per visited state and by last tokens, "
                  f"cells with expected count < {min_expected:g} pooled, and the mean log-prob of the sampled "
                  "tokens (normal); a forbidden transition fails" if transitions else ""),
        settings={"n_chains": n_chains, "n_steps": n_steps, "seed": seed, "procedure": proc.spec,
                  "attractors": list(map(int, attractors)), "top_states": top_states, "ngram_order": ngram_order,
                  "min_visits": min_visits, "untested_rare": rare, "transitions": transitions,
                  "min_expected": min_expected,
                  "sample_seeds": {int(a): int(sample[a].seed) for a in attractors}},
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
        t = horizon if horizon is not None else _choose_horizon(op, s)
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
        t = horizon if horizon is not None else _choose_horizon(op, s)
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
            if p0 == 0.0 and k == 0:
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


# ------------------------------------------------------------------------------------------
# Entropy rate, transient evolution, hitting times and trajectories vs sampling.
#
# Entropy rate (check_entropy_rate). Shannon-McMillan-Breiman: along one path,
# -1/n log P(Y_1..Y_n) -> h. Chains start from the exact pi of an attractor, so
# E[-log q(Y_t | X_{t-1})] = sum_s pi(s) H(s) = h at every t and each chain's
# average is an unbiased replica; log q is the MODEL's own (re-evaluated on
# each sampled context, never read from the operator). Student t, C - 1 df.
# Evolution (check_evolution). Independent chains from one start; the count
# of chains whose t-th generated token is y is Binomial(C, P(Y_t = y)): exact
# binomial tests per (t, y). Hitting (check_hitting). The truncated time
# min(tau, T) has exact mean sum_{t<T} P(tau > t) (T-step killed pushes),
# valid at any horizon: a t-test on the chains' mean, plus exact binomial
# tests of P(tau <= t) at the exact quartiles and of P(tau > T).
# Trajectories (check_trajectories). The number of chains that generate the
# MAP (and the greedy) string is Binomial(C, P(string)): exact binomial tests;
# the mean model log-probability of the sampled strings has exact expectation
# -H(Y_1..Y_n) (path_entropy): a t-test over chains.

def _binomial_row(name: str, k: int, c: int, p0: float, note: str = "") -> CheckRow:
    p0 = float(min(max(p0, 0.0), 1.0))
    se = math.sqrt(p0 * (1 - p0) / c)
    if p0 in (0.0, 1.0):
        ok = k == round(p0 * c)
        z, pv = (0.0, 1.0) if ok else (math.inf, 0.0)
    else:
        z = (k / c - p0) / se
        pv = float(stats.binomtest(int(k), int(c), p0).pvalue)
    return CheckRow(name, p0, k / c, se, float(z), pv, note)


def _one_start(op, start) -> int:
    from ..analysis.evolution import resolve_start
    from ..errors import PromptError

    s0, _ = resolve_start(op, start)
    if s0 is None:
        raise PromptError("sampling checks need one start state (an index or a prompt), not a distribution")
    return s0


def check_entropy_rate(op, model, *, procedure=None, attractors=None, n_chains: int = 64, n_steps: int = 500,
                       seed: int = 0, level: float = 0.01, max_attractors: int = 6) -> AgreementReport:
    """Test each attractor's exact entropy rate against -1/n log P(path) of chains sampled from ``model``.

    Chain starts are drawn from the exact pi with numpy's default_rng([seed, a]);
    the rollouts of attractor a use seed ``seed * 100_003 + a``. The
    log-probabilities are the model's (re-evaluated on the sampled contexts
    under the sampling procedure).
    """
    from ..analysis.entropy import entropy_rate
    from ..montecarlo import Sampler
    from ..montecarlo.estimators import sequence_log_probs

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
        rows.append(_t_row(f"A{a}: entropy rate (nats/token)", er.nats[a], per_chain.mean(), se, n_chains - 1,
                           note=f"exact {er.bits[a]:.6f} bits; |A|={cs.attractors[a].size}"))
    return AgreementReport(
        title=f"entropy rate vs -1/n log P(sampled path) ({proc.spec})",
        rows=rows, level=level,
        method="Shannon-McMillan-Breiman; independent chains from the exact pi, model log-probabilities; "
               "Student t (C-1 df), two-sided; Bonferroni",
        settings={"n_chains": n_chains, "n_steps": n_steps, "seed": seed, "procedure": proc.spec,
                  "attractors": list(map(int, attractors))},
    )


def check_evolution(op, model, start, n: int, *, procedure=None, n_chains: int = 4000, seed: int = 0,
                    level: float = 0.01) -> AgreementReport:
    """Test the exact token marginals P(Y_t = y), t = 1..n, against chains sampled from ``start``.

    The rollouts use seed ``seed``; every (t, y) with a non-trivial exact
    probability (or a sampled count where the exact one is 0) is one exact
    binomial test.
    """
    from ..analysis.evolution import token_marginals
    from ..montecarlo import Sampler

    proc = parse(procedure) if procedure is not None else op.procedure
    space = op.space
    s0 = _one_start(op, start)
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
            rows.append(_binomial_row(f"{space.label(s0)}: P(Y_{t + 1} = {y})", k, n_chains, p0))
    return AgreementReport(
        title=f"token marginals after {space.label(s0)} vs sampling ({proc.spec})",
        rows=rows, level=level,
        method="exact token marginals by pushing the state distribution; exact two-sided binomial tests; Bonferroni",
        settings={"n_chains": n_chains, "n_steps": n, "seed": seed, "procedure": proc.spec, "start": s0},
    )


def check_hitting(op, model, target, start, *, procedure=None, n_chains: int = 1000, horizon: int | None = None,
                  seed: int = 0, level: float = 0.01, tail: float = 1e-6, max_horizon: int = 20_000) -> AgreementReport:
    """Test the exact law of the hitting time of ``target`` from ``start`` against sampled chains.

    Args:
      target: state indices or a bool mask [S].
      start: a state index or a prompt.
      horizon: steps per chain (default: the first T with exact P(tau > T) <= ``tail``, at most ``max_horizon``).
      seed: seed of the rollouts.
    """
    from ..analysis.hitting import hitting_times_result, state_set
    from ..montecarlo.estimators import sample_hitting

    proc = parse(procedure) if procedure is not None else op.procedure
    space = op.space
    mask = state_set(op, target)
    s0 = _one_start(op, start)
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
    rows = [_t_row(f"{label}: E[min(tau, {t_h})]", exact_mean, times.mean(), se, n_chains - 1,
                   note=f"E[tau] exact = {hres.times[s0]:.6g}")]
    cdf = 1.0 - surv
    hit_by = np.where(samp.time >= 0, samp.time, t_h + 1)
    used = set()
    for q in (0.25, 0.5, 0.75):
        t = int(np.searchsorted(cdf, q))
        if t > t_h or t in used or cdf[t] in (0.0, 1.0):
            continue
        used.add(t)
        rows.append(_binomial_row(f"{label}: P(tau <= {t})", int((hit_by <= t).sum()), n_chains, float(cdf[t])))
    k_out = int((samp.time < 0).sum())
    if surv[t_h] > tail or k_out:  # a short horizon (or a sampled miss): test the unhit mass too
        rows.append(_binomial_row(f"{label}: P(tau > {t_h})", k_out, n_chains, float(surv[t_h])))
    return AgreementReport(
        title=f"hitting time of {int(mask.sum())} target state(s) from {label} vs sampling ({proc.spec})",
        rows=rows, level=level,
        method="exact law of tau by killed pushes; t-test (C-1 df) on the truncated mean, exact binomial tests "
               "on P(tau <= t); Bonferroni",
        settings={"n_chains": n_chains, "horizon": t_h, "seed": seed, "procedure": proc.spec, "start": s0,
                  "target": np.flatnonzero(mask)[:50].tolist(), "n_target": int(mask.sum())},
    )


def check_trajectories(op, model, start, n: int, *, procedure=None, n_chains: int = 4000, seed: int = 0,
                       level: float = 0.01) -> AgreementReport:
    """Test the exact MAP/greedy string probabilities and E[log P(Y_1..Y_n)] = -H against sampled strings.

    Rollouts use seed ``seed``; log-probabilities of the sampled strings are
    the model's own (re-evaluated on each context under the procedure).
    """
    from ..analysis.entropy import path_entropy
    from ..analysis.trajectories import greedy_trajectory, map_trajectory
    from ..montecarlo import Sampler
    from ..montecarlo.estimators import sequence_log_probs

    proc = parse(procedure) if procedure is not None else op.procedure
    space = op.space
    s0 = _one_start(op, start)
    label = space.label(s0)
    best = map_trajectory(op, s0, n)
    gr = greedy_trajectory(op, s0, n)
    h = path_entropy(op, s0, n)
    prompts = np.tile(space.tokens(s0), (n_chains, 1))
    ys = Sampler(model, proc, space.length, space.n_tokens).sample(prompts, n, seed=seed)  # [C, n]
    rows = [_binomial_row(f"{label}: P(MAP {best.text(space.n_tokens)})", int((ys == best.tokens).all(axis=1).sum()),
                          n_chains, best.prob, note="map")]
    if not np.array_equal(gr.tokens, best.tokens):
        rows.append(_binomial_row(f"{label}: P(greedy {gr.text(space.n_tokens)})",
                                  int((ys == gr.tokens).all(axis=1).sum()), n_chains, gr.prob, note="greedy"))
    lp = sequence_log_probs(model, proc, space.length, prompts, ys).sum(axis=1)  # [C]
    se = lp.std(ddof=1) / math.sqrt(n_chains) if n_chains > 1 else math.inf
    rows.append(_t_row(f"{label}: E[log P(Y_1..Y_{n})]", -h.nats, lp.mean(), se, n_chains - 1,
                       note=f"H = {h.bits:.6f} bits"))
    return AgreementReport(
        title=f"{n}-token trajectories after {label} vs sampling ({proc.spec})",
        rows=rows, level=level,
        method="exact binomial tests on the MAP/greedy string frequencies; t-test (C-1 df) on the mean model "
               "log-probability vs -H(Y_1..Y_n); Bonferroni",
        settings={"n_chains": n_chains, "n_steps": n, "seed": seed, "procedure": proc.spec, "start": s0,
                  "map_tokens": best.tokens.tolist(), "greedy_tokens": gr.tokens.tolist()},
    )


__all__ += ["check_entropy_rate", "check_evolution", "check_hitting", "check_trajectories"]


# ------------------------------------------------------------------------------------------
# Mixing, sensitivity and metastability vs sampling.
#
# Laws at fixed times (check_tv, check_sensitivity). C independent chains run
# from one start; their states at time n are an i.i.d. sample of size C from
# the exact law mu_n = e_s P^n. Each chosen n gets one Pearson chi-square
# goodness-of-fit test of the sampled states against mu_n: cells are the states
# with expected count C mu_n(x) >= min_expected; the remaining states (rare or
# impossible ones) are pooled into one cell, merged into the smallest kept cell
# when its own expected count is below min_expected; df = cells - 1. A chain
# found in a state of exact probability 0 with no pooled mass gives p = 0.
# The whole law is tested (not only its TV distance to pi, whose sampling
# distribution is awkward); the row shows the exact d(n) and the plug-in TV of
# the sample to the limit law for reading. z = (chi2 - df) / sqrt(2 df).
# Metastable cores (check_metastable). Chains start from pi restricted to a
# core (drawn with default_rng([seed, j])) and run until they leave the core
# and until they reach another core; each chain gives one i.i.d. time per
# quantity, compared with the exact pi|core-averaged mean by Student's t
# (C - 1 df). The horizon makes the exact probability of not having arrived
# below 1e-6 (from killed pushes); chains still running at the horizon are
# counted at the horizon and reported.

def _gof_test(counts: np.ndarray, probs: np.ndarray, min_expected: float) -> tuple[float, int, float]:
    """(chi2, df, p) of observed ``counts`` [S] against ``probs`` [S] with pooling (see above)."""
    c = int(counts.sum())
    expected = c * probs
    keep = expected >= min_expected
    obs = list(counts[keep].astype(np.float64))
    exp = list(expected[keep])
    rest_obs, rest_exp = float(counts[~keep].sum()), float(expected[~keep].sum())
    if rest_exp > 0 or rest_obs > 0:
        if rest_exp <= 0.0:
            return math.inf, max(len(obs) - 1, 0), 0.0  # sampled a state the exact law says is impossible
        if rest_exp >= min_expected or not exp:
            obs.append(rest_obs)
            exp.append(rest_exp)
        else:
            j = int(np.argmin(exp))
            obs[j] += rest_obs
            exp[j] += rest_exp
    obs_a, exp_a = np.array(obs), np.array(exp)
    df = obs_a.size - 1
    if df <= 0:
        return 0.0, 0, 1.0
    chi2 = float(((obs_a - exp_a) ** 2 / exp_a).sum())
    return chi2, df, float(stats.chi2.sf(chi2, df))


def _states_at_times(op, sampler, start: int, times, n_chains: int, seed: int) -> dict:
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


def _laws_at_times(op, start: int, times) -> dict:
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


def _law_row(name: str, counts: np.ndarray, law: np.ndarray, exact_tv: float, est_tv: float,
             min_expected: float) -> CheckRow:
    chi2, df, p = _gof_test(counts, law, min_expected)
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
    from ..analysis.mixing import limit_distribution

    proc = parse(procedure) if procedure is not None else op.procedure
    space = op.space
    s = int(start) if np.ndim(start) == 0 else space.index(start)
    times = sorted(set(int(n) for n in n_values))
    if not times or times[0] < 0:
        raise ValueError(f"n_values must be non-negative times, got {n_values!r}")
    laws = _laws_at_times(op, s, times)
    from ..montecarlo import Sampler

    sampler = Sampler(model, proc, space.length, space.n_tokens)
    sampled = _states_at_times(op, sampler, s, times, n_chains, seed * 100_003)
    lim = limit_distribution(op, s)
    rows = []
    for t in times:
        counts = np.bincount(sampled[t], minlength=op.num_states)
        exact_tv = 0.5 * np.abs(laws[t] - lim).sum()
        est_tv = 0.5 * np.abs(counts / n_chains - lim).sum()
        rows.append(_law_row(f"{space.label(s)}: law at t={t} (d={exact_tv:.4f})", counts, laws[t], exact_tv,
                             est_tv, min_expected))
    return AgreementReport(
        title=f"state laws behind d(n) vs sampling ({proc.spec})", rows=rows, level=level,
        method="independent chains from one start; Pearson chi-square goodness of fit of the state law at each n "
               f"(cells with expected count >= {min_expected:g}, the rest pooled); Bonferroni",
        settings={"n_chains": n_chains, "seed": seed, "procedure": proc.spec, "start": s, "n_values": times,
                  "min_expected": min_expected},
    )


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
    from ..analysis.sensitivity import perturbations

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
        la = _laws_at_times(op, a, [times[-1]])[times[-1]]
        tvs = [0.5 * np.abs(_laws_at_times(op, int(b), [times[-1]])[times[-1]] - la).sum() for b in cands]
        b = int(cands[int(np.argmax(tvs))])
    else:
        b = int(perturbed) if np.ndim(perturbed) == 0 else space.index(perturbed)
    laws = {x: _laws_at_times(op, x, times) for x in (a, b)}
    from ..montecarlo import Sampler

    sampler = Sampler(model, proc, space.length, space.n_tokens)  # one sampler: compiled once
    samples = {x: _states_at_times(op, sampler, x, times, n_chains, seed * 100_003 + i)
               for i, x in enumerate((a, b))}
    rows = []
    for t in times:
        ca = np.bincount(samples[a][t], minlength=op.num_states)
        cb = np.bincount(samples[b][t], minlength=op.num_states)
        exact_d = 0.5 * np.abs(laws[a][t] - laws[b][t]).sum()
        est_d = 0.5 * np.abs(ca - cb).sum() / n_chains
        for x, counts in ((a, ca), (b, cb)):
            rows.append(_law_row(f"{space.label(x)}: law at t={t} (D={exact_d:.4f})", counts, laws[x][t],
                                 exact_d, est_d, min_expected))
    return AgreementReport(
        title=f"futures of {space.label(a)} vs {space.label(b)}, exact vs sampling ({proc.spec})", rows=rows,
        level=level,
        method="independent chains from each start; Pearson chi-square goodness of fit of each state law at each t "
               f"(cells with expected count >= {min_expected:g}, the rest pooled); Bonferroni",
        settings={"n_chains": n_chains, "seed": seed, "procedure": proc.spec, "prompt": a, "perturbed": b,
                  "t_values": times, "min_expected": min_expected},
    )


def _killed_horizon(op, start_law: np.ndarray, target: np.ndarray, tail: float, cap: int) -> int:
    """Smallest T with exact P(not in ``target`` [bool, S] during 1..T) <= tail (capped), by killed pushes."""
    mu = start_law.copy()
    for t in range(1, cap + 1):
        mu = op.push(mu)
        mu[target] = 0.0
        if mu.sum() <= tail:
            return t
    return cap


def _first_arrivals(op, sampler, starts: np.ndarray, targets: list, horizon: int, seed: int,
                    chunk: int = 512) -> np.ndarray:
    """int64[len(targets), C]: first t >= 1 with the chain's state in targets[i] (bool[S]); -1 if none."""
    from ..montecarlo.estimators import window_indices

    space = op.space
    prompts = np.stack([space.tokens(int(s)) for s in starts])  # full states
    c = starts.size
    first = np.full((len(targets), c), -1, dtype=np.int64)
    tail = prompts.astype(np.int64)
    t_done = 0
    for ys in sampler.generate(prompts, horizon, seed, chunk):
        hist = np.concatenate([tail, np.asarray(ys, dtype=np.int64)], axis=1)
        idx = window_indices(hist, space.n_tokens, space.length)[:, -ys.shape[1]:]  # states after each new token
        for i, tg in enumerate(targets):
            hit = tg[idx]
            any_hit = hit.any(axis=1) & (first[i] < 0)
            first[i, any_hit] = t_done + 1 + np.argmax(hit[any_hit], axis=1)
        t_done += ys.shape[1]
        tail = hist[:, hist.shape[1] - (space.length - 1):] if space.length > 1 else hist[:, :0]
        if (first >= 0).all():
            break
    return first


def check_metastable(op, model, k: int | None = None, *, result=None, procedure=None, n_chains: int = 500,
                     seed: int = 0, level: float = 0.01, horizon: int | None = None, tail: float = 1e-6,
                     max_horizon: int = 200_000) -> AgreementReport:
    """Test the exact mean exit times and passage times of the metastable cores against sampling.

    Args:
      k: number of metastable sets (None: chosen by :func:`metastable_sets`).
      result: a precomputed :class:`~semio_jax.analysis.metastable.MetastableResult` of ``op``.
      n_chains: chains per core; starts drawn from pi restricted to the core with
        default_rng([seed, j]); rollouts use seed ``seed * 100_003 + j``.
      horizon: steps per chain (default: exact probability of not having arrived <= ``tail``).

    For each core j two rows: the time to leave core j and the time to reach
    another core (one row when the cores cover the attractor: the two times are
    then equal), each a Student t test of the chains' mean against the exact
    pi|core-averaged expectation.
    """
    from ..analysis.metastable import metastable_sets

    from ..montecarlo import Sampler

    proc = parse(procedure) if procedure is not None else op.procedure
    res = result if result is not None else metastable_sets(op, k=k)
    if res.k < 2:
        raise ValueError("the chain has no metastable sets (k = 1: exit times are infinite); pass k >= 2 "
                         "to test a forced decomposition")
    space = op.space
    sampler = Sampler(model, proc, space.length, space.n_tokens)  # one sampler: compiled once
    chunk = 512
    rows, horizons, censored = [], [], []
    for j, core in enumerate(res.cores):
        w = res.pi[np.searchsorted(res.states, core)]
        w = w / w.sum()
        rng = np.random.default_rng([seed, j])
        starts = core[rng.choice(core.size, size=n_chains, p=w)]
        in_core = np.zeros(op.num_states, dtype=bool)
        in_core[core] = True
        others = np.zeros(op.num_states, dtype=bool)
        for i, c in enumerate(res.cores):
            if i != j:
                others[c] = True
        targets, names, exact = [~in_core], ["leave"], [float(res.exit_times[j])]
        covered = int(others.sum()) + core.size == res.states.size  # leaving = reaching another core
        if res.k > 1 and not covered:
            targets.append(others)
            names.append("reach another core from")
            exact.append(float(res.mfpt_other[j]))
        start_law = np.zeros(op.num_states)
        np.add.at(start_law, core, w)
        if horizon is not None:
            h = int(horizon)
        else:  # long enough, rounded up to whole chunks so that one compiled scan serves every core
            h = max(_killed_horizon(op, start_law, tg, tail, max_horizon) for tg in targets)
            h = h if h <= chunk else chunk * -(-h // chunk)
        horizons.append(int(h))
        first = _first_arrivals(op, sampler, starts, targets, h, seed * 100_003 + j, chunk)
        for i, name in enumerate(names):
            cens = int((first[i] < 0).sum())
            censored.append(cens)
            times = np.where(first[i] < 0, h, first[i]).astype(np.float64)
            se = times.std(ddof=1) / math.sqrt(n_chains)
            note = f"core {j}: {core.size} states" + (f"; {cens} chains censored at {h}" if cens else "")
            rows.append(_t_row(f"time to {name} core {j}", exact[i], times.mean(), se, n_chains - 1, note))
    return AgreementReport(
        title=f"metastable exit and passage times vs sampling ({proc.spec})", rows=rows, level=level,
        method="chains from pi restricted to each core; first-arrival times; Student t (C-1 df), two-sided; "
               "Bonferroni",
        settings={"n_chains": n_chains, "seed": seed, "procedure": proc.spec, "k": res.k,
                  "threshold": res.threshold, "horizons": horizons, "censored": censored},
    )


__all__ += ["check_tv", "check_sensitivity", "check_metastable"]
