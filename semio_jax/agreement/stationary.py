"""Stationary distributions vs sampling (:func:`check_stationary`).

Stationary observables (:func:`check_stationary`). For an attractor A with
exact stationary distribution pi_A, C independent chains start from states
drawn from pi_A (seeded) and run n steps under the model. If pi_A is stationary
for the sampled process, every X_t ~ pi_A, so each chain's time average of an
observable g is an unbiased estimate of pi_A g *at any run length*: no burn-in
bias to argue about. If it is not (a wrong operator), the chains drift towards
the true law and the averages move away. Observables: token frequencies,
n-gram frequencies and the mass of the most probable states.

The statistic of a frequency f (the pooled time average of an indicator over C
chains of n steps) is z = (mean - f) / sqrt(V / C), normal, two-sided, where V
is the EXACT variance of one chain's average at this n, from the exact
autocovariances of the operator (:mod:`semio_jax.agreement.variance`): no
replica standard deviation, so no anti-conservative t test when a run is only
a few relaxation times long and a rare phase's per-chain frequency is mostly 0
and sometimes large. What is left to approximation is the normality of the
pooled mean, and the budget rule decides from the exact operator alone (before
the sample is seen) where it holds: a frequency is tested only when its
equivalent number of independent draws n_eff = f (1 - f) C / V gives at least
``min_effective`` (50) on its rarer side, n_eff min(f, 1 - f) >= 50, i.e. the
pooled count is made of about a hundred or more independent excursions, and
the budget sees the chain's slowest phase often enough: C n m / t_rel >=
``min_excursions`` (100), with t_rel the exact relaxation time of the attractor
(1 / spectral gap; the lazy chain's for a periodic class) and m its rarest
token's exact probability (the expected number of relaxation-time blocks spent
in the rarest token). The second part matters for COMMON events too: on a
chain with a rare sticky phase, the frequency of a common token moves with the
few excursions into that phase, so its pooled mean is skewed however common
it is. When it fails no frequency of the attractor is tested. (A slow phase
made of common tokens in a rare pattern is not seen by this part of the rule.)
The others are listed in the report's notes with the chains they would need. An
n-gram the exact chain forbids but the chains showed fails (p = 0). An
attractor left with no test at all (no frequency, no transition row) makes
the report INCONCLUSIVE, with the budget the first frequency test needs.

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

"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from ..analysis import class_structure, spectral_gap, stationary_result
from ..core.procedure import parse
from ..montecarlo import OccupationSample, sample_occupation
from .stats import AgreementReport, CheckRow, chi2_row, tokens_str
from .variance import MIN_EFFECTIVE, MIN_EXCURSIONS, chains_needed, class_matrix, effective_draws, time_average_variance

__all__ = ["check_stationary", "draw_stationary_samples", "transition_rows", "frequency_rows", "mixing_scale", "MIN_VISITS", "MIN_EXPECTED", "LOGPROB_FLOOR"]

MIN_VISITS = 100  # check_stationary: smallest expected (or observed) number of visits of a tested frequency

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


def transition_rows(a, space, states: np.ndarray, obs: np.ndarray, probs: np.ndarray, min_expected: float,
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
                f"{tokens_str(space, states[i])} -> {y}")
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
        rows.append(chi2_row(f"A{a}: transitions per visited state", chi2, df,
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
        rows.append(chi2_row(f"A{a}: transitions by last {width} token" + "s" * (width > 1), chi2, df,
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


def frequency_rows(op, a: int, pi: np.ndarray, occ, members: np.ndarray, *, top_states: int = 5,
                   ngram_order: int = 2, min_effective: float = MIN_EFFECTIVE, t_rel: float = 1.0,
                   min_excursions: float = MIN_EXCURSIONS) -> tuple[list, int, dict]:
    """Rows of the frequency tests of attractor ``a`` (see the module docstring), how many were left
    untested by the budget rule, and {"chains_needed": chains for the most testable untested one (inf if none),
    "tested": k, "max_variance_lag": ...}.

    ``pi`` float64[N^L] the exact stationary law of ``a`` on the full states, ``occ`` its OccupationSample,
    ``members`` int64[|A|] its states. Each n-gram (n <= ngram_order) and each of the ``top_states`` most
    probable states is an indicator g; its pooled frequency over C chains of n steps from pi has mean pi g and
    the exact variance of :func:`~semio_jax.agreement.variance.time_average_variance` / C; it is tested (normal,
    two-sided) iff n_eff min(f, 1 - f) >= ``min_effective`` and the budget sees at least ``min_excursions``
    relaxation-time blocks of the rarest token, C n m / t_rel >= min_excursions (m the smallest exact token
    probability in the attractor, ``t_rel`` its exact relaxation time): both decided from the operator alone. An
    event the exact chain forbids but the chains showed always fails (p = 0).
    """
    space = op.space
    n_tok = space.n_tokens
    c, n_steps = occ.n_chains, occ.n_steps
    members = np.asarray(members, dtype=np.int64)
    pi_a = pi[members] / pi[members].sum()
    names, exact, est, cols, forbidden = [], [], [], [], []
    for n in range(1, min(ngram_order, space.length) + 1):
        f_exact = pi.reshape(-1, n_tok**n).sum(axis=0)
        f_est = occ.ngram_frequencies(n).value
        code = members % (n_tok**n)
        for g in np.flatnonzero((f_exact > 0) | (f_est > 0)):
            label = "".join(str(x) for x in np.unravel_index(g, (n_tok,) * n)) if n_tok <= 10 else str(g)
            name = f"A{a}: P({n}-gram {label})"
            if f_exact[g] <= 0:
                forbidden.append((name, float(f_est[g])))
                continue
            if f_exact[g] >= 1.0:  # present at every step of every chain: nothing to test
                continue
            names.append(name)
            exact.append(float(f_exact[g]))
            est.append(float(f_est[g]))
            cols.append(code == g)
    freq = occ.state_frequencies()
    where = {int(s): i for i, s in enumerate(members)}
    for s in np.argsort(-pi, kind="stable")[:top_states]:
        if pi[s] <= 0 or int(s) not in where:
            break
        names.append(f"A{a}: pi({tokens_str(space, s)})")
        exact.append(float(pi[s]))
        est.append(float(freq.value[s]))
        cols.append(members == s)
    rows = [CheckRow(name, 0.0, f, 0.0, math.inf, 0.0, "an event the exact chain forbids, sampled")
            for name, f in forbidden]
    info = {"chains_needed": math.inf, "tested": 0}
    if not cols:
        return rows, 0, info
    f = np.array(exact)
    var = time_average_variance(class_matrix(op, members), pi_a, np.stack(cols, axis=1).astype(np.float64),
                                n_steps) / c  # [m]: exact variance of the pooled frequency
    n_eff = effective_draws(f, var)
    ok = np.minimum(f, 1.0 - f) * n_eff >= min_effective
    need = chains_needed(c, f, n_eff, min_effective)
    tokens = pi.reshape(-1, n_tok).sum(axis=0)
    rarest = float(tokens[tokens > 0].min())
    excursions = c * n_steps * rarest / t_rel if t_rel > 0 else math.inf
    if not excursions >= min_excursions:  # the slow phases are seen too few times: no frequency is tested
        ok[:] = False
        need = np.maximum(need, math.ceil(min_excursions * t_rel / (n_steps * rarest)) if math.isfinite(t_rel)
                          else math.inf)
    for i in np.flatnonzero(ok):
        se = math.sqrt(var[i])
        if se > 0:
            z = (est[i] - f[i]) / se
            p = float(2 * stats.norm.sf(abs(z)))
        else:  # a deterministic frequency (the event is always or never there)
            same = math.isclose(est[i], f[i], rel_tol=1e-9, abs_tol=1e-12)
            z, p = (0.0, 1.0) if same else (math.inf, 0.0)
        rows.append(CheckRow(names[i], float(f[i]), est[i], se, float(z), p,
                             f"exact variance; {n_eff[i]:.3g} effective draws"))
    info = {"chains_needed": float(need[~ok].min()) if (~ok).any() else math.inf, "tested": int(ok.sum()),
            "relaxation_time": float(t_rel), "rarest_token": rarest, "excursions": float(excursions)}
    return rows, int((~ok).sum()), info


def mixing_scale(spectrum) -> float:
    """The exact relaxation time of an attractor's chain (1 / spectral gap); for a periodic class, that of
    the lazy chain (I + P) / 2, which sets how fast time averages settle; inf when unknown."""
    if spectrum.period == 1:
        return float(spectrum.relaxation_time)
    lazy = spectrum.lazy_slem
    return 1.0 / (1.0 - float(lazy)) if lazy is not None and lazy < 1 else math.inf


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
                     min_expected: float = MIN_EXPECTED, min_effective: float = MIN_EFFECTIVE,
                     min_excursions: float = MIN_EXCURSIONS) -> AgreementReport:
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
      min_visits: the mean log-prob transition row needs at least this many transitions from
        states with two or more cells.
      min_effective, min_excursions: the budget rule of the frequency rows (see the module docstring).
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
    notes, reasons, freq_info = [], [], {}
    spectra = spectral_gap(op).classes if attractors else []
    for a in attractors:
        pi = st.distribution(a)[: space.num_full]
        occ = sample[a]
        f_rows, untested, info = frequency_rows(op, a, pi, occ, cs.attractors[a], top_states=top_states,
                                                ngram_order=ngram_order, min_effective=min_effective,
                                                t_rel=mixing_scale(spectra[a]), min_excursions=min_excursions)
        rows += f_rows
        rare += untested
        freq_info[int(a)] = info
        if untested:
            notes.append(f"A{a}: {untested} frequencies not tested at {occ.n_chains} x {occ.n_steps} (budget rule: "
                         f"{min_effective:g} effective draws of the rarer side, the exact autocorrelation counted, "
                         f"and {min_excursions:g} relaxation times ({info['relaxation_time']:.3g} steps) in the "
                         f"rarest token; {info['excursions']:.3g} here); the most testable of them needs "
                         f"{info['chains_needed']:.3g} chains x {occ.n_steps} steps")
        n_before = len(rows)
        if transitions:
            if not occ.has_transitions:
                no_transitions.append(int(a))
                continue
            visited, counts = occ.transitions()
            t_rows, t_skipped = transition_rows(a, space, visited, counts, op.probs[visited], min_expected,
                                                 min_visits)
            rows += t_rows
            rare += t_skipped
        if len(rows) == n_before and not f_rows:
            need = freq_info[int(a)]["chains_needed"]
            reasons.append(f"A{a}: the budget {occ.n_chains} chains x {occ.n_steps} steps supports no test"
                           + (f"; the first frequency test needs {need:.3g} chains x {occ.n_steps} steps"
                              if math.isfinite(need) else ""))
    if no_transitions:
        raise ValueError(f"the samples of attractor(s) {no_transitions} carry no transitions; draw them with "
                         "draw_stationary_samples / sample_occupation, or pass transitions=False")
    return AgreementReport(
        title=f"stationary distribution vs sampling ({proc.spec})",
        rows=rows, level=level,
        method="independent chains started from the exact pi; frequencies: normal test with the exact variance of "
               "the pooled time average (exact autocovariances, finite n), two-sided, tested only where the budget "
               f"gives at least {min_effective:g} effective draws of the rarer side; Bonferroni"
               + ("; transitions (chains pooled): Pearson chi-square per visited state and by last tokens, "
                  f"cells with expected count < {min_expected:g} pooled, and the mean log-prob of the sampled "
                  "tokens (normal); a forbidden transition fails" if transitions else ""),
        settings={"n_chains": n_chains, "n_steps": n_steps, "seed": seed, "procedure": proc.spec,
                  "attractors": list(map(int, attractors)), "top_states": top_states, "ngram_order": ngram_order,
                  "min_visits": min_visits, "min_effective": min_effective, "min_excursions": min_excursions,
                  "untested_rare": rare,
                  "transitions": transitions, "min_expected": min_expected, "frequencies": freq_info,
                  "sample_seeds": {int(a): int(sample[a].seed) for a in attractors}},
        inconclusive_reasons=reasons, notes=notes,
    )
