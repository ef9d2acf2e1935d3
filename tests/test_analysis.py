"""Analyses (classes, stationary distributions, basins, greedy dynamics) against slow references."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import semio_jax as sj
from semio_jax.testing import references
from semio_jax import sampling as S
from semio_jax.analysis import functional_graph, greedy_dynamics, reachable_attractors
from semio_jax.testing.references import basins_reference
from semio_jax.testing.references import classes_reference
from semio_jax.analysis.greedy import greedy_map
from semio_jax.testing.references import greedy_reference
from semio_jax.analysis.stationary import gth
from semio_jax.testing.references import stationary_reference
from semio_jax.testing import operators, spaces, token_permutations

from helpers import dense_reference, exact_absorption, exact_stationary, period_by_traces, relabel, traced_peak

EPS = np.finfo(np.float64).eps
any_operator = st.one_of(operators(), operators(kind="multi"), operators(kind="deterministic"))
# small logit scales: well-conditioned chains on which float64 references are accurate
mild_operator = st.one_of(operators(scale=2.0), operators(kind="multi", scale=2.0))
# large scales: probabilities down to e^-40, slowly mixing and nearly decomposable chains
# The exact (rational) references get slow on big classes of stiff chains (denominators of
# probabilities like e^-60 are huge), so these strategies keep to <= 40 states.
_small = spaces(max_states=40)
_small_multi = spaces(min_tokens=2, max_states=40)
stiff_operator = st.one_of(operators(scale=20.0, allow_neg_inf=False, spaces_strategy=_small),
                           operators(kind="multi", scale=20.0, allow_neg_inf=False, spaces_strategy=_small_multi),
                           operators(kind="leaky", spaces_strategy=_small))
leaky_operator = operators(kind="leaky", spaces_strategy=_small)


def as_sets(arrays) -> list[frozenset]:
    return [frozenset(int(x) for x in a) for a in arrays]


def chain_operator(p: np.ndarray) -> sj.Operator:
    """An arbitrary N x N stochastic matrix as an operator: with L = 1, succ(s, y) = y."""
    return sj.Operator(sj.StateSpace(p.shape[0], 1, prefixes=False), p)


# ================================================================= classes
@pytest.mark.property
@given(any_operator)
def test_classes_match_reference(op):
    check_classes(op)


@pytest.mark.parametrize("n,length,prefixes", [(2, 4, True), (3, 3, True), (3, 2, False), (1, 3, True)])
def test_full_support_shortcut_matches_reference(n, length, prefixes):
    # every row has full support: class_structure answers without a graph search (de Bruijn graph)
    space = sj.StateSpace(n, length, prefixes=prefixes)
    probs = np.random.default_rng(n * 10 + length).dirichlet(np.ones(n), size=space.num_states)
    check_classes(sj.Operator(space, probs))


def test_full_support_shortcut_holds_one_vector():
    # without prefix states the shortcut keeps the class's index array and nothing else of size S:
    # labels and attractor_of are zero-stride views (they were two more int64 vectors)
    space = sj.StateSpace(2, 16, prefixes=False)
    op = sj.Operator(space, np.random.default_rng(3).dirichlet(np.ones(2), size=space.num_states))
    _ = op.support  # (the operator's own cached mask, not the decomposition's)
    cs, peak = traced_peak(sj.class_structure, op)
    assert peak <= 1.25 * 8 * space.num_states
    assert not cs.labels.flags.writeable and not cs.attractor_of.flags.writeable


def check_classes(op):
    cs = sj.class_structure(op)
    ref_closed, ref_periods = classes_reference(op.probs, op.successors)
    assert [a.tolist() for a in cs.attractors] == ref_closed
    assert cs.periods == ref_periods == [period_by_traces(op, a) for a in cs.attractors]
    assert sj.periods(op) == cs.periods
    for a in cs.attractors:
        assert a.dtype == np.int64 and (np.diff(a) > 0).all()
    inside = np.zeros(op.num_states, dtype=bool)
    for i, a in enumerate(cs.attractors):
        inside[a] = True
        assert (cs.attractor_of[a] == i).all()
    np.testing.assert_array_equal(sj.transient_states(op), np.flatnonzero(~inside))
    assert (cs.attractor_of[~inside] == -1).all()
    # prefix states are always transient
    assert (cs.attractor_of[op.space.num_full:] == -1).all()
    # labels are the communicating classes: equal labels iff mutually reachable
    reach = dense_reference(op) > 0
    closure = reach | np.eye(op.num_states, dtype=bool)
    for _ in range(int(np.ceil(np.log2(max(op.num_states, 2)))) + 1):
        closure = closure | ((closure.astype(np.int64) @ closure.astype(np.int64)) > 0)
    mutual = closure & closure.T
    np.testing.assert_array_equal(cs.labels[:, None] == cs.labels[None, :], mutual)
    assert cs.n_classes == len(np.unique(cs.labels))


def test_periodic_examples():
    # two-cycle and three-cycle in one chain, plus a transient state feeding both
    p = np.zeros((6, 6))
    p[0, 1] = p[1, 0] = 1.0
    p[2, 3] = p[3, 4] = p[4, 2] = 1.0
    p[5, 0] = p[5, 2] = 0.5
    op = chain_operator(p)
    assert as_sets(sj.attractors(op)) == [frozenset({0, 1}), frozenset({2, 3, 4})]
    assert sj.periods(op) == [2, 3]
    assert sj.transient_states(op).tolist() == [5]
    # a class with cycles of lengths 2 and 3 is aperiodic; lengths 2 and 4 give period 2
    p = np.zeros((3, 3))
    p[0, 1] = 1.0
    p[1, 0] = p[1, 2] = 0.5
    p[2, 0] = 1.0
    assert sj.periods(chain_operator(p)) == [1]
    p = np.zeros((4, 4))
    p[0, 1] = 1.0
    p[1, 0] = p[1, 2] = 0.5
    p[2, 3] = 1.0
    p[3, 0] = 1.0
    assert sj.periods(chain_operator(p)) == [2]


def test_de_bruijn_alternation_has_period_two():
    # N = 2, L = 2: after token y comes 1 - y. Attractor {01, 10} with period 2; 00 and 11 transient.
    logits = np.array([[-np.inf, 0.0], [0.0, -np.inf]])
    op = sj.build_operator(sj.NGramModel(logits), sj.StateSpace(2, 2))
    assert as_sets(sj.attractors(op)) == [frozenset({1, 2})]
    assert sj.periods(op) == [2]
    np.testing.assert_allclose(sj.stationary(op)[0][:4], [0, 0.5, 0.5, 0], atol=1e-15)


def test_near_deterministic_rows_keep_their_tiny_edges():
    """Regressions: a row [1.0, 1.9e-22] has max == 1.0 but two edges.

    The two states communicate (the operator is not deterministic), and the
    hitting-time / absorption systems I - Q must not cancel 1 - 1.0 = 0 on
    their diagonal (which made them singular).
    """
    logits = np.array([[0.0, -50.0, -60.0], [-50.0, 0.0, -np.inf], [0.0, -np.inf, -45.0]])
    op = chain_operator(references.probabilities_reference(S.temperature(1.0), logits))
    assert op.probs[0, 0] == 1.0 and op.probs[0, 1] > 0
    assert not op.is_deterministic
    assert as_sets(sj.attractors(op)) == [frozenset({0, 1, 2})]
    exact = _exact_vector(op, [0, 1, 2])
    for method in ("gth", "lu"):
        res = sj.stationary_result(op, method=method)
        np.testing.assert_allclose(res.distributions[0], exact, rtol=1e-12)
        assert res.hitting_times[0] > 1e21
        if method == "lu":
            assert res.error_bounds[0] is None  # tau * eps >> 1: nothing can be certified by the residual
        else:  # GTH's enclosure certifies every entry however slowly the chain mixes
            rel = np.abs(res.distributions[0] / exact - 1.0)
            assert res.relative_bounds[0] is not None and rel.max() <= res.relative_bounds[0] < 1e-12
            assert np.abs(res.distributions[0] - exact).sum() <= res.error_bounds[0]
    # power iteration stops early on such a chain (its steps move 1e-22 of mass); its result is
    # wrong, and the bound must not pretend otherwise
    res = sj.stationary_result(op, method="power")
    err = np.abs(res.distributions[0] - exact).sum()
    assert res.error_bounds[0] is None or err <= res.error_bounds[0]
    # absorption: a state that stays put with probability 1 - 4e-20
    p = np.array([[1.0, 1e-20, 3e-20], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    h = sj.basins(chain_operator(p))
    np.testing.assert_allclose(h, [[0.25, 0.75], [1, 0], [0, 1]], rtol=1e-14)


# ============================================================== stationary
def _exact_vector(op, members) -> np.ndarray:
    out = np.zeros(op.num_states)
    for s, v in exact_stationary(op, members).items():
        out[s] = float(v)
    return out


@pytest.mark.property
@given(any_operator)
def test_stationary_is_stationary(op):
    res = sj.stationary_result(op)
    dense = dense_reference(op)
    atts = sj.attractors(op)
    assert res.distributions.shape == (len(atts), op.num_states)
    for i, members in enumerate(atts):
        pi = res.distributions[i]
        assert (pi >= 0).all()
        assert abs(pi.sum() - 1.0) <= 1e-14
        outside = np.ones(op.num_states, dtype=bool)
        outside[members] = False
        assert (pi[outside] == 0).all(), "pi must be supported on its attractor"
        assert (pi[members] > 0).all(), "an irreducible class has full support"
        resid = np.abs(pi @ dense - pi).sum()
        assert resid <= 1e-12
        assert res.residuals[i] <= 1e-12 and abs(res.residuals[i] - resid) <= 1e-14
        assert res.methods[i] == "gth" and res.reference_states[i] in set(members.tolist())


@pytest.mark.property
@given(mild_operator)
def test_stationary_matches_lstsq_reference(op):
    for i, members in enumerate(sj.attractors(op)):
        ref = stationary_reference(op.probs, op.successors, members)
        for method in ("gth", "lu"):
            pi = sj.stationary(op, method=method)[i]
            np.testing.assert_allclose(pi, ref, rtol=0, atol=1e-10)


@pytest.mark.property
@given(st.one_of(any_operator, stiff_operator))
def test_stationary_error_bounds_hold(op):
    """The certified bound is >= the actual L1 error against the exact (rational) answer.

    The bound must hold as reported, the error measured in exact rational arithmetic (no
    slack at all). A solver reporting a bound of 0 fails this test.
    """
    atts = sj.attractors(op)
    exact = [_exact_vector(op, m) for m in atts]
    rational = [exact_stationary(op, m) for m in atts]
    for method in ("gth", "lu"):
        try:
            res = sj.stationary_result(op, method=method)
        except sj.ConvergenceError:  # LU may decline a chain too stiff for it (an error, never a wrong answer)
            assert method == "lu"
            continue
        for i in range(len(atts)):
            if method == "lu" and res.error_bounds[i] is None:  # tau * eps too large for the residual bound
                assert res.hitting_times[i] is None or res.hitting_times[i] * EPS > 1e-3
                continue
            assert res.error_bounds[i] is not None
            pi_hat = res.distributions[i]
            # the L1 error in exact rational arithmetic: no rounding anywhere in the comparison
            err = sum(abs(Fraction(float(pi_hat[s])) - v) for s, v in rational[i].items())
            err += sum(Fraction(float(x)) for s, x in enumerate(pi_hat) if s not in rational[i])
            assert err <= Fraction(res.error_bounds[i]), (method, float(err), res.error_bounds[i])
        # GTH is accurate however stiff the chain: relative accuracy entrywise
    gth_res = sj.stationary_result(op, method="gth")
    for i, members in enumerate(atts):
        rel = np.abs(gth_res.distributions[i][members] / exact[i][members] - 1.0)
        assert rel.max() <= 1e-10 * len(members), rel.max()


@pytest.mark.property
@given(leaky_operator)
def test_leaky_chains(op):
    """Nearly deterministic chains (rows like [1.0, 4e-18]): answers right, or bounds honest.

    Regression: I - Q_j was built as identity minus Q, so 1 - p_ii cancelled to 0
    (or to rounding noise): the solves raised "singular matrix", or LU returned a
    pi with L1 error 2.0 together with a negative hitting time and a "certified"
    bound of 2.5e-16.
    """
    atts = sj.attractors(op)
    for method in ("gth", "lu"):
        try:
            res = sj.stationary_result(op, method=method)
        except sj.ConvergenceError:  # LU may refuse a very stiff chain (a clear error, not a crash)
            assert method == "lu"
            continue
        for i, members in enumerate(atts):
            exact = _exact_vector(op, members)
            err = np.abs(res.distributions[i] - exact).sum()
            assert res.hitting_times[i] is None or res.hitting_times[i] >= 0.0
            if res.error_bounds[i] is not None:
                assert err <= res.error_bounds[i], (method, err, res.error_bounds[i])
            if method == "gth":  # GTH never subtracts: accurate however stiff
                assert np.max(np.abs(res.distributions[i][members] / exact[members] - 1)) <= 1e-10 * len(members)
    try:
        res = sj.basins_result(op)
    except sj.ConvergenceError:
        return
    exact, _ = exact_absorption(op, atts)
    assert np.abs(res.probabilities - exact).max() <= res.error_bound + 1e-14


@pytest.mark.property
@given(operators(kind="ergodic", scale=2.0,
                 procedure_strategy=lambda n: st.floats(0.5, 3.0).map(S.temperature)))
def test_power_method_agrees(op):
    try:
        res = sj.stationary_result(op, method="power", max_iter=20_000)
    except sj.ConvergenceError:  # documented outcome on a slowly mixing chain
        assume(False)
    assert res.methods == ["power"]
    exact = _exact_vector(op, sj.attractors(op)[0])
    err = np.abs(res.distributions[0] - exact).sum()
    assert err <= 1e-9
    assert res.error_bounds[0] is not None  # power certifies tau_j from its pi (krylov.hitting_time_certificate)
    # tau_j = max_{i != j} E_i[T_j]: at least one step on a class of two or more states, 0 on a single state
    assert res.hitting_times[0] >= (1.0 if sj.attractors(op)[0].size > 1 else 0.0)
    assert err <= res.error_bounds[0]


def test_unknown_method():
    op = chain_operator(np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="unknown stationary method"):
        sj.stationary_result(op, method="magic")


def _birth_death(n: int, up, down) -> tuple[np.ndarray, np.ndarray]:
    """Tridiagonal chain with dyadic rates (so every row sums to exactly 1) and its exact pi."""
    p = np.zeros((n, n))
    for i in range(n):
        if i + 1 < n:
            p[i, i + 1] = up[i]
        if i > 0:
            p[i, i - 1] = down[i]
        p[i, i] = 1.0 - p[i].sum()
        assert Fraction(p[i, i]) + sum(Fraction(x) for j, x in enumerate(p[i]) if j != i) == 1
    # detailed balance: pi_{i+1} / pi_i = up_i / down_{i+1}, in exact rationals
    w = [Fraction(1)]
    for i in range(n - 1):
        w.append(w[-1] * Fraction(up[i]) / Fraction(down[i + 1]))
    z = sum(w)
    return p, np.array([float(x / z) for x in w])


@pytest.mark.parametrize("coupling", [2.0**-30, 2.0**-45])
def test_nearly_decomposable_chain(coupling):
    """Two blocks of 20 states coupled by ~1e-9 (and ~3e-14): pi in closed form by detailed balance."""
    n = 40
    up = [0.25 if i % 3 else 0.5 for i in range(n)]
    down = [0.5 if i % 2 else 0.25 for i in range(n)]
    up[19] = coupling  # block {0..19} -> {20..39}
    down[20] = coupling / 4  # and back, four times less likely
    p, pi_exact = _birth_death(n, up, down)
    op = chain_operator(p)
    assert len(sj.attractors(op)) == 1
    gth_res = sj.stationary_result(op, method="gth")
    pi = gth_res.distributions[0]
    # GTH: high relative accuracy in every entry, including the tiny ones
    assert np.max(np.abs(pi / pi_exact - 1.0)) <= 1e-12
    tau = gth_res.hitting_times[0]  # the chain mixes slowly and tau says so (or cannot be certified)
    assert tau is None or tau > 1e8
    lu_res = sj.stationary_result(op, method="lu")
    err_lu = np.abs(lu_res.distributions[0] - pi_exact).sum()
    assert err_lu <= 1e-12  # LU on the M-matrix I - Q_j is accurate too (far better than its bound)
    # The certificate 4 tau (residual + rounding) is honest: it cannot go below ~tau * eps.
    # With coupling 2^-30 (tau ~ 8e10) it certifies ~3e-3; with 2^-45 (tau ~ 3e15) nothing.
    tau, bound = lu_res.hitting_times[0], lu_res.error_bounds[0]
    if coupling > 1e-12:
        assert tau is not None and 1e10 < tau < 1e12
        assert bound is not None and err_lu <= bound and bound >= tau * EPS
    else:
        assert bound is None
    # GTH's enclosure is not limited by tau: it certifies every entry relatively, whatever the coupling
    err_gth = np.abs(pi - pi_exact).sum()
    assert gth_res.relative_bounds[0] is not None and gth_res.relative_bounds[0] < 1e-9
    assert np.max(np.abs(pi / pi_exact - 1.0)) <= gth_res.relative_bounds[0]
    assert err_gth <= gth_res.error_bounds[0]
    auto = sj.stationary_result(op)
    assert auto.methods == ["gth"]
    with pytest.raises(sj.ConvergenceError, match="power iteration did not reach"):
        sj.stationary_result(op, method="power", max_iter=2000)


def test_gth_small_examples():
    np.testing.assert_allclose(gth(np.array([[0.0, 1.0], [0.5, 0.5]])), [1 / 3, 2 / 3], rtol=1e-15)
    np.testing.assert_array_equal(gth(np.array([[1.0]])), [1.0])
    with pytest.raises(sj.ConvergenceError, match="reducible"):
        gth(np.array([[0.5, 0.5], [0.0, 1.0]]))  # the last state cannot leave itself


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 200), panel=st.sampled_from([1, 2, 7, 64]), seed=st.integers(0, 2**16),
       coupling=st.sampled_from([1.0, 1e-8, 1e-40]))
def test_blocked_gth_equals_the_rank1_loop(n, panel, seed, coupling):
    """Blocked GTH reorders additions only: entrywise relative agreement, also on nearly decomposable blocks."""
    from semio_jax.testing.references import gth_unblocked

    rng = np.random.default_rng(seed)
    p = rng.random((n, n)) ** 4
    half = n // 2
    p[:half, half:] *= coupling  # two nearly uncoupled halves when coupling is tiny
    p[half:, :half] *= coupling
    p /= p.sum(axis=1, keepdims=True)
    blocked, ref = gth(p, panel=panel), gth_unblocked(p)
    assert np.all(blocked > 0)
    np.testing.assert_allclose(blocked, ref, rtol=1e-12 * n, atol=0)


def test_gth_goes_to_the_log_domain_when_float64_elimination_underflows():
    # The real case: the trained dyck model at temperature 0.03 has transition
    # probabilities down to ~1e-169; float64 GTH's reduced rates underflow to 0 although
    # the chain is irreducible. GTH must continue in the log domain and say so.
    from semio_models.checkpoint import load

    op = sj.build_operator(load("dyck"), sj.StateSpace(3, 6), "temperature=0.03")
    res = sj.stationary_result(op)
    assert res.methods == ["gth (log domain)"]
    assert sj.stationary_result(op, method="gth").methods == ["gth (log domain)"]
    lu = sj.stationary_result(op, method="lu")
    assert res.residuals[0] <= 1e-12 and res.error_bounds[0] is not None and res.error_bounds[0] < 1e-6
    # the certified entrywise bound holds against the independent LU solve wherever LU is accurate
    big = lu.values[0] > 1e-6
    rel = np.abs(res.values[0][big] / lu.values[0][big] - 1.0)
    assert rel.max() <= res.relative_bounds[0] + 1e-9


# ================================================================== basins
@pytest.mark.property
@given(any_operator)
def test_basins_properties(op):
    res = sj.basins_result(op)
    h = res.probabilities
    atts = sj.attractors(op)
    m = len(atts)
    assert h.shape == (op.num_states, m)
    assert (h >= 0).all() and (h <= 1).all()
    np.testing.assert_allclose(h.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert res.max_row_error <= 1e-12
    for a, members in enumerate(atts):
        assert (h[members, a] == 1.0).all()
        for b in range(m):
            if b != a:
                assert (h[members, b] == 0.0).all()
    # harmonic: h = P h off the attractors
    dense = dense_reference(op)
    np.testing.assert_allclose(dense @ h, h, rtol=0, atol=1e-12)
    # strict basins: exactly the rows that reach one attractor only, and there h == 1 exactly
    exact, exact_one = exact_absorption(op, atts)
    for a in range(m):
        strict = sj.strict_basins(op)[a]
        np.testing.assert_array_equal(strict, np.flatnonzero(exact_one[:, a]))
        assert (h[strict, a] == 1.0).all()
    # reachability is exact, and zero probabilities are exact zeros
    np.testing.assert_array_equal(res.reachable, exact > 0)
    np.testing.assert_array_equal(reachable_attractors(op), exact > 0)  # graph search vs exact rationals
    assert (h[~res.reachable] == 0).all()
    assert res.n_solved == int((res.reachable.sum(axis=1) >= 2).sum())


@pytest.mark.property
@given(st.one_of(any_operator, stiff_operator, operators(kind="multi", scale=2.0)))
def test_basins_match_exact_within_bound(op):
    res = sj.basins_result(op)
    exact, _, rational = exact_absorption(op, sj.attractors(op), rational=True)
    got = res.probabilities
    # the max error in exact rational arithmetic: a bound of 0 fails wherever the float answer is inexact
    err = max((abs(Fraction(float(got[s, a])) - v) for s, row in enumerate(rational) for a, v in enumerate(row)),
              default=Fraction(0))
    assert err <= Fraction(res.error_bound), (float(err), res.error_bound)
    if res.n_solved == 0:
        assert res.error_bound == 0.0 and res.residual == 0.0 and res.max_absorption_time is None
        np.testing.assert_array_equal(res.probabilities, exact)


@pytest.mark.property
@given(st.one_of(operators(kind="multi", scale=2.0), operators(scale=2.0)))
def test_basins_match_iteration_reference(op):
    atts = sj.attractors(op)
    ref = basins_reference(op.probs, op.successors, atts)
    # the reference iterates at most 100,000 times; on a slowly absorbing chain it returns an
    # unconverged iterate, which is no oracle: keep only the cases where it reached a fixed point
    step = np.einsum("sy,sya->sa", op.probs, ref[op.successors])
    outside = sj.class_structure(op).attractor_of < 0
    assume(np.max(np.abs(step - ref)[outside], initial=0.0) < 1e-15)
    np.testing.assert_allclose(sj.basins(op), ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_basins_bound_holds_where_the_solve_is_inexact(seed):
    """Random absorbing chains whose split rows are not exactly representable: the reported bound
    covers the error measured in exact rationals, and that error is positive (a bound of 0 fails)."""
    rng = np.random.default_rng(seed)
    n = 24
    p = rng.random((n, n)) ** 4 * (rng.random((n, n)) < 0.4)
    p[0], p[1] = 0.0, 0.0
    p[0, 0] = p[1, 1] = 1.0  # two absorbing states
    p[2:, 0] += 0.01
    p[2:, 1] += 0.02 * rng.random(n - 2)
    p /= p.sum(axis=1, keepdims=True)
    op = chain_operator(p)
    res = sj.basins_result(op)
    assert res.n_solved == n - 2
    _, _, rational = exact_absorption(op, sj.attractors(op), rational=True)
    got = res.probabilities
    err = max(abs(Fraction(float(got[s, a])) - v) for s, row in enumerate(rational) for a, v in enumerate(row))
    assert 0 < err <= Fraction(res.error_bound), (float(err), res.error_bound)


def test_gamblers_ruin():
    """Absorbing ends 0 and n-1, up with probability p: h_top(i) = (1 - r^i) / (1 - r^(n-1)), r = q/p."""
    n, pu = 12, 0.375
    p = np.zeros((n, n))
    p[0, 0] = p[n - 1, n - 1] = 1.0
    for i in range(1, n - 1):
        p[i, i + 1] = pu
        p[i, i - 1] = 1 - pu
    op = chain_operator(p)
    assert as_sets(sj.attractors(op)) == [frozenset({0}), frozenset({n - 1})]
    r = (1 - pu) / pu
    top = np.array([(1 - r**i) / (1 - r ** (n - 1)) for i in range(n)])
    h = sj.basins(op)
    np.testing.assert_allclose(h[:, 1], top, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(h[:, 0], 1 - top, rtol=1e-13, atol=1e-15)
    res = sj.basins_result(op)
    assert res.n_solved == n - 2 and res.error_bound < 1e-12
    assert [s.tolist() for s in sj.strict_basins(op)] == [[0], [n - 1]]


# ============================================================ relabelling
@pytest.mark.property
@given(st.data())
def test_relabelling_tokens_commutes(data):
    op = data.draw(st.one_of(operators(kind="multi"), operators(), operators(kind="deterministic")))
    perm = data.draw(token_permutations(op.n_tokens))
    op2, sigma = relabel(op, perm)
    atts, atts2 = sj.attractors(op), sj.attractors(op2)
    mapped = [frozenset(int(sigma[s]) for s in a) for a in atts]
    assert sorted(as_sets(atts2), key=min) == sorted(mapped, key=min)
    where = {a: as_sets(atts2).index(mapped[a]) for a in range(len(atts))}  # attractor a of op -> a' of op2
    assert [sj.periods(op2)[where[a]] for a in range(len(atts))] == sj.periods(op)
    pi, pi2 = sj.stationary(op), sj.stationary(op2)
    h, h2 = sj.basins(op), sj.basins(op2)
    for a in range(len(atts)):
        np.testing.assert_allclose(pi2[where[a]][sigma], pi[a], rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(h2[sigma, where[a]], h[:, a], rtol=0, atol=1e-10)
        np.testing.assert_array_equal(np.sort(sigma[sj.strict_basins(op)[a]]), sj.strict_basins(op2)[where[a]])
    np.testing.assert_array_equal(sj.transient_states(op2), np.sort(sigma[sj.transient_states(op)]))


# ================================================================== greedy
@pytest.mark.property
@given(st.integers(1, 60).flatmap(lambda n: st.lists(st.integers(0, n - 1), min_size=n, max_size=n)))
def test_functional_graph_matches_reference(f):
    f = np.asarray(f, dtype=np.int64)
    g = functional_graph(f)
    cycles, cycle_of, tail = greedy_reference(f)
    assert [c.tolist() for c in g.cycles] == cycles
    np.testing.assert_array_equal(g.cycle_of, cycle_of)
    np.testing.assert_array_equal(g.tail, tail)
    np.testing.assert_array_equal(g.on_cycle, g.tail == 0)
    for i, c in enumerate(g.cycles):
        assert c[0] == c.min()
        per = len(c)
        assert g.periods[i] == per
        for s in c:
            assert g.orbit(int(s), per)[-1] == s  # f^period(c) = c
            assert all(g.orbit(int(s), j)[-1] != s for j in range(1, per))  # and not earlier
        np.testing.assert_array_equal(g.basin(i), np.flatnonzero(g.cycle_of == i))
    for s in range(f.size):  # the orbit reaches its cycle after exactly `tail` steps
        x = g.orbit(s, int(g.tail[s]))[-1]
        assert g.on_cycle[x] and g.cycle_of[s] == g.cycle_of[x]
        if g.tail[s] > 0:
            assert not g.on_cycle[g.orbit(s, int(g.tail[s]) - 1)[-1]]
    assert g.tail.max(initial=0) + max(g.periods) <= f.size


@pytest.mark.property
@given(operators(kind="deterministic"))
def test_greedy_dynamics_of_deterministic_operators(op):
    assert op.is_deterministic
    g = greedy_dynamics(op)
    f = op.successors[np.arange(op.num_states), np.argmax(op.probs, axis=1)]
    np.testing.assert_array_equal(g.map, f)
    np.testing.assert_array_equal(greedy_map(op), f)
    cycles, cycle_of, tail = greedy_reference(f)
    assert [c.tolist() for c in g.cycles] == cycles
    np.testing.assert_array_equal(g.tail, tail)
    # the cycles are the attractors of the chain, their lengths the periods
    assert as_sets(g.cycles) == as_sets(sj.attractors(op))
    assert g.periods == sj.periods(op) == classes_reference(op.probs, op.successors)[1]
    # basins are 0/1 and follow the orbits
    h = sj.basins(op)
    assert set(np.unique(h).tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(np.argmax(h, axis=1), g.cycle_of)
    assert sj.basins_result(op).n_solved == 0
    for i, members in enumerate(sj.attractors(op)):
        pi = sj.stationary(op)[i]
        np.testing.assert_allclose(pi[members], 1.0 / len(members), rtol=1e-12)


@pytest.mark.property
@given(operators())
def test_greedy_map_is_argmax_of_logits_with_ties_to_lowest(op):
    f = greedy_map(op)
    for s in range(op.num_states):
        row = op.logits[s]
        best = min(y for y in range(op.n_tokens) if row[y] == row.max())
        assert f[s] == op.space.successor(s, best)
    # the same map as the greedy operator's
    g_op = op.with_procedure("greedy")
    np.testing.assert_array_equal(greedy_map(g_op), f)
    np.testing.assert_array_equal(
        g_op.successors[np.arange(op.num_states), np.argmax(g_op.probs, axis=1)], f)


# ================================================================== caching
def test_analyses_are_cached(ngram3):
    op = sj.build_operator(ngram3, sj.StateSpace(3, 2), "top_k=2")
    assert sj.stationary_result(op) is sj.stationary_result(op)
    assert sj.basins_result(op) is sj.basins_result(op)
    assert sj.class_structure(op) is sj.class_structure(op)
    assert sj.stationary_result(op, method="lu") is not sj.stationary_result(op)


@pytest.mark.property
@given(spaces(max_states=60))
def test_uniform_chain(space):
    # all logits equal: one attractor (all full states), uniform stationary law on it
    op = sj.Operator(space, np.full((space.num_states, space.n_tokens), 1.0 / space.n_tokens))
    assert as_sets(sj.attractors(op)) == [frozenset(range(space.num_full))]
    np.testing.assert_allclose(sj.stationary(op)[0][: space.num_full], 1.0 / space.num_full, rtol=1e-12)
    assert sj.periods(op) == [1]
    np.testing.assert_array_equal(sj.basins(op), np.ones((space.num_states, 1)))
    assert math.isclose(sj.stationary(op)[0].sum(), 1.0, rel_tol=0, abs_tol=1e-14)
