"""The zero-temperature limit vs a brute-force reference, vs exact stationary laws at t = 0.02, and its refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import semio_jax as sj
from semio_jax.analysis.zero_temperature import allowed_tokens, log_escape_time, min_in_tree
from semio_jax.core.procedure import compose, greedy, min_p, temperature, top_k, top_p
from semio_jax.testing import operators, spaces
from semio_jax.testing.references import (hitting_times_reference, min_in_tree_reference,
                                          probabilities_reference, zero_temperature_reference)


def _procs(n):
    """temperature(t), optionally with top_k(k), k >= 2 (top_k=1 is greedy: refused)."""
    t = st.sampled_from([0.1, 0.5, 1.0, 2.0]).map(temperature)
    if n < 2:
        return t
    return st.one_of(t, st.tuples(t, st.integers(2, n)).map(lambda a: compose(a[0], top_k(a[1]))))


_SMALL = spaces(max_tokens=3, max_length=3, max_states=40)


def _compare(op):
    lim = sj.zero_temperature_limit(op)
    ref = zero_temperature_reference(op.logits, op.successors, op.space.num_full, op.procedure.top_k)
    assert [c.tolist() for c in lim.classes] == ref["classes"]
    assert lim.attractor.tolist() == ref["attractor"]
    assert lim.basin.tolist() == ref["basin"]
    np.testing.assert_allclose(lim.resistance, ref["resistance"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lim.escape, ref["escape"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lim.potential, ref["potential"], rtol=1e-9, atol=1e-9)
    assert lim.stable.tolist() == [i for i, p in enumerate(ref["potential"]) if p == 0.0]
    # every closed class of the t > 0 chain holds at least one stable class
    for a in set(ref["attractor"]) - {-1}:
        assert any(ref["attractor"][i] == a for i in lim.stable)
    return lim


@given(operators(kind="any", spaces_strategy=_SMALL, procedure_strategy=_procs))
def test_matches_brute_force(op):
    _compare(op)


@given(operators(kind="multi", spaces_strategy=spaces(min_tokens=2, max_tokens=3, max_length=3, max_states=40),
                 procedure_strategy=_procs))
def test_matches_brute_force_several_attractors(op):
    _compare(op)


@st.composite
def _grid_ops(draw, t=0.02, step=0.5):
    """Logits on the grid {0, step, ..., 8 step} (many ties; with step 0.5 every transition at t = 0.02 is
    >= e^-200 ~ 1e-87, with step 2.5 they go down to e^-1000, below float64's range)."""
    space = draw(spaces(min_tokens=2, max_tokens=3, max_length=3, max_states=40))
    table = draw(hnp.arrays(np.float64, (space.num_states, space.n_tokens), elements=st.integers(0, 8)))
    if draw(st.booleans()):  # sticky: repeating the newest token earns a bonus, so several classes compete
        newest = np.concatenate([np.arange(n_s) % space.n_tokens for _, n_s in
                                 ((k, space.n_tokens**k) for k in space.lengths)])  # [S] last token of s
        table[np.arange(space.num_states), newest] += draw(st.integers(2, 8))
    table = table * step
    proc = draw(_procs(space.n_tokens).map(lambda p: compose(temperature(t), top_k(p.top_k)) if p.top_k
                                           else temperature(t)))
    return sj.Operator(space, probabilities_reference(proc, table), proc, logits=table)


@given(_grid_ops())
def test_grid_models_match_brute_force(op):
    _compare(op)


@settings(max_examples=40)
@given(_grid_ops(t=0.02))
def test_stable_classes_carry_the_stationary_mass_at_low_temperature(op):
    lim = sj.zero_temperature_limit(op)
    res = sj.stationary_result(op)  # exact pi at t = 0.02 (GTH on each closed class)
    assert len(res) == len({int(a) for a in lim.attractor if a >= 0})
    for i, (sup, vals) in enumerate(zip(res.supports, res.values)):
        idx = [j for j, c in enumerate(lim.classes) if np.isin(c[0], sup)]
        assert idx and all(lim.attractor[j] == lim.attractor[idx[0]] for j in idx)
        others = [lim.potential[j] for j in idx if lim.potential[j] > 0]
        if others and min(others) <= 0.5:
            continue
        pi = res.distribution(i)
        stable_mass = sum(pi[lim.classes[j]].sum() for j in idx if lim.potential[j] == 0.0)
        assert stable_mass > 0.99, (stable_mass, lim.summary())


@settings(max_examples=15)
@given(_grid_ops(t=0.02, step=2.5))
def test_stable_classes_carry_the_mass_below_the_float64_range(op):
    # transitions down to e^-1000: the exact support from the logits and the log-domain stationary law
    lim = sj.zero_temperature_limit(op)
    res = sj.stationary_result(op)
    for sup, logv in zip(res.supports, res.log_values):
        idx = [j for j, c in enumerate(lim.classes) if np.isin(c[0], sup)]
        others = [lim.potential[j] for j in idx if lim.potential[j] > 0]
        if others and min(others) <= 0.5:
            continue
        stable = np.isin(sup, np.concatenate([lim.classes[j] for j in idx if lim.potential[j] == 0.0]))
        log_out = np.logaddexp.reduce(logv[~stable]) if (~stable).any() else -np.inf
        assert log_out < math.log(0.01) + np.logaddexp.reduce(logv), lim.summary()


@given(operators(kind="any", spaces_strategy=_SMALL, procedure_strategy=_procs))
def test_allowed_tokens_are_the_operators_support(op):
    # the engine's JAX path decides the support independently (log space, exact decimals near ties)
    jax_op = op.with_procedure(op.procedure)
    np.testing.assert_array_equal(allowed_tokens(op.logits, op.procedure.top_k), jax_op.support)


@given(operators(kind="any", spaces_strategy=_SMALL, procedure_strategy=_procs))
def test_unique_maxima_give_the_greedy_cycles(op):
    nf = op.space.num_full
    z = np.where(np.isfinite(op.logits[:nf]), op.logits[:nf], -np.inf)
    top2 = np.sort(z, axis=1)[:, -2:] if z.shape[1] > 1 else None
    assume(top2 is None or (top2[:, 1] > top2[:, 0]).all())  # every maximum unique: P0 is the greedy map
    lim = sj.zero_temperature_limit(op)
    g = sj.greedy_dynamics(op)  # cycles by pointer doubling on the argmax map (an independent algorithm)
    full_cycles = [c for c in g.cycles if c.max() < nf]
    assert [c.tolist() for c in lim.cycles] == [c.tolist() for c in full_cycles]
    assert lim.is_cycle.all()
    ids = {int(c[0]): i for i, c in enumerate(lim.classes)}
    expect = np.array([ids[int(np.min(full_cycles[k]))] for k in g.cycle_of[:nf]])
    np.testing.assert_array_equal(lim.basin, expect)


def test_two_state_chain_by_hand():
    # L = 1, N = 2: leaving state 0 costs a = 3, leaving state 1 costs b = 1
    space = sj.StateSpace(2, 1, prefixes=False)
    logits = np.array([[0.0, -3.0], [-1.0, 0.0]])
    op = sj.Operator(space, probabilities_reference(temperature(0.3), logits), temperature(0.3), logits=logits)
    lim = sj.zero_temperature_limit(op)
    assert [c.tolist() for c in lim.classes] == [[0], [1]]
    np.testing.assert_array_equal(lim.resistance, [[0.0, 3.0], [1.0, 0.0]])
    np.testing.assert_array_equal(lim.potential, [0.0, 2.0])  # gamma_0 = r(1 -> 0) = 1, gamma_1 = 3
    np.testing.assert_array_equal(lim.escape, [3.0, 1.0])
    assert lim.stable.tolist() == [0]
    # exact: pi(1) / pi(0) = q(0 -> 1) / q(1 -> 0), so t log of it -> -2
    for t in (0.05, 0.02):
        q01 = math.exp(-3 / t) / (1 + math.exp(-3 / t))
        q10 = math.exp(-1 / t) / (1 + math.exp(-1 / t))
        assert abs(t * math.log(q01 / q10) + lim.potential[1]) < 2 * t * math.log(2)
    np.testing.assert_allclose(lim.predicted_escape_times(), np.exp(np.array([3.0, 1.0]) / 0.3))


def test_ties_in_the_argmax_make_one_class():
    # L = 1, N = 3: from 0 tokens 0 and 1 tie (P0 is uniform over them), from 1 token 0 is best
    space = sj.StateSpace(3, 1, prefixes=False)
    logits = np.array([[1.0, 1.0, -2.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    op = sj.Operator(space, probabilities_reference(temperature(1.0), logits), temperature(1.0), logits=logits)
    lim = sj.zero_temperature_limit(op)
    assert [c.tolist() for c in lim.classes] == [[0, 1], [2]]
    np.testing.assert_array_equal(lim.cycles[0], [0, 1])  # not a cycle of a map: the sorted class
    np.testing.assert_array_equal(lim.resistance, [[0.0, 2.0], [1.0, 0.0]])
    np.testing.assert_array_equal(lim.potential, [0.0, 1.0])
    # top_k=2 drops the tied token 1 after state 0 (ties to the lowest id) and token 1/2 as ordered
    op2 = op.with_procedure(compose(temperature(1.0), top_k(2)))
    np.testing.assert_array_equal(allowed_tokens(logits, 2), [[1, 1, 0], [1, 1, 0], [1, 0, 1]])
    lim2 = sj.zero_temperature_limit(op2)
    assert [c.tolist() for c in lim2.classes] == [[0, 1], [2]]
    assert lim2.resistance[0, 1] == math.inf  # 2 is no longer reachable from {0, 1}
    assert lim2.attractor.tolist() == [0, -1] and lim2.potential[1] == math.inf


@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 5), st.just(1)).map(lambda s: (s[0], s[0])),
                  elements=st.one_of(st.integers(0, 6).map(float), st.just(math.inf))),
       st.integers(0, 4))
def test_min_in_tree_matches_enumeration(w, root):
    root = root % w.shape[0]
    assert min_in_tree(w, root) == min_in_tree_reference(w, root)


@given(hnp.arrays(np.float64, (5, 5), elements=st.floats(0.0, 10.0, allow_subnormal=False)))
def test_min_in_tree_real_weights(w):
    for root in range(5):
        assert math.isclose(min_in_tree(w, root), min_in_tree_reference(w, root), rel_tol=1e-12, abs_tol=1e-12)


@settings(max_examples=20)
@given(_grid_ops(t=0.5))
def test_log_escape_time_matches_a_dense_solve(op):
    lim = sj.zero_temperature_limit(op)
    nf = op.space.num_full
    for i, c in enumerate(lim.classes):
        target = lim.basin != i
        if not target.any():
            continue
        ref = hitting_times_reference(op.probs[:nf], op.successors[:nf], target)[c[0]]  # numpy.linalg.solve
        got = log_escape_time(op, int(c[0]), target)
        if np.isinf(ref):
            assert got == np.inf
        else:
            assert math.isclose(got, math.log(ref), rel_tol=1e-9, abs_tol=1e-9), (got, math.log(ref))
        assert lim.log_escape_times(op)[i] == (got if np.isfinite(lim.escape[i]) else np.inf)


def test_log_escape_time_below_the_float64_range():
    # L = 1, N = 2, from state 1 token 0 (the exit) costs 1 logit: E = 1 / q(0 | 1) = 1 + e^(1/t)
    space = sj.StateSpace(2, 1, prefixes=False)
    logits = np.array([[0.0, -3.0], [-1.0, 0.0]])
    for t in (0.1, 0.001):  # at t = 0.001 the exit has probability e^-1000, below float64's range
        op = sj.Operator(space, probabilities_reference(temperature(1.0), logits), temperature(1.0),
                         logits=logits).with_procedure(temperature(t))
        expect = 1 / t + math.log1p(math.exp(-1 / t))
        assert math.isclose(log_escape_time(op, 1, np.array([True, False])), expect, rel_tol=1e-12)
        lim = sj.zero_temperature_limit(op)
        np.testing.assert_allclose(lim.log_escape_times(op), [3 / t + math.log1p(math.exp(-3 / t)), expect],
                                   rtol=1e-12)


def test_escape_time_matches_its_rate(ngram3):
    # t log E[escape] approaches R as t decreases (the exact expected time by the hitting-time solver)
    op1 = sj.build_operator(ngram3, sj.StateSpace(3, 2), "temperature=1")
    lim = sj.zero_temperature_limit(op1)
    i = int(np.argmax(np.where(np.isfinite(lim.escape), lim.escape, -1)))
    assert np.isfinite(lim.escape[i])
    errs = []
    for t in (0.2, 0.1, 0.05):
        e = lim.exact_escape_times(op1.with_procedure(f"temperature={t}"))[i]
        errs.append(abs(t * math.log(e) - lim.escape[i]))
    assert errs[2] < errs[0] and errs[2] < 0.1 * lim.escape[i]


@pytest.mark.parametrize("proc", [greedy(), top_k(1), compose(temperature(0.5), top_p(0.9)),
                                  compose(temperature(0.5), min_p(0.1))])
def test_refuses_procedures_without_a_temperature_limit(proc):
    space = sj.StateSpace(2, 2)
    logits = np.zeros((space.num_states, 2))
    op = sj.Operator(space, probabilities_reference(proc, logits), proc, logits=logits)
    with pytest.raises(sj.InvalidProcedureError):
        sj.zero_temperature_limit(op)


def test_refuses_operators_without_logits_or_procedure():
    space = sj.StateSpace(2, 2)
    probs = np.full((space.num_states, 2), 0.5)
    with pytest.raises(sj.LogitsError, match="logits"):
        sj.zero_temperature_limit(sj.Operator(space, probs, temperature(1.0)))
    with pytest.raises(sj.InvalidProcedureError, match="procedure"):
        sj.zero_temperature_limit(sj.Operator(space, probs, None, logits=np.zeros_like(probs)))
    bad = np.zeros_like(probs)
    bad[1, 0] = np.nan
    with pytest.raises(sj.NonFiniteLogitsError):
        sj.zero_temperature_limit(sj.Operator(space, probs, temperature(1.0), logits=bad))
