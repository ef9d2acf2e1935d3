"""Hitting times and committors vs dense references; infinite times decided combinatorially; sampled check."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import semio_jax as sj
from semio_jax.agreement import check_hitting
from semio_jax.analysis.hitting import committor, committor_result, hitting_times, hitting_times_result, state_set
from semio_jax.testing.references import committor_reference, hitting_times_reference
from semio_jax.testing import operators


@pytest.fixture(scope="module")
def op3(ngram3):
    return sj.build_operator(ngram3, sj.StateSpace(3, 3), "temperature=1")


def _close(a, b, tol):
    a, b = np.asarray(a), np.asarray(b)
    assert (np.isinf(a) == np.isinf(b)).all(), (a, b)
    fin = np.isfinite(a)
    np.testing.assert_allclose(a[fin], b[fin], rtol=tol, atol=tol)


@pytest.mark.parametrize("target", [[[2, 2, 2]], [[0, 1, 0], [1, 2, 1]], [[1, 1, 1], [0, 0, 0], [2]]])
def test_hitting_times_match_dense_solve(op3, target):
    idx = [op3.space.index(t) for t in target]
    res = hitting_times_result(op3, idx)
    mask = state_set(op3, idx)
    ref = hitting_times_reference(op3.probs, op3.successors, mask)
    _close(res.times, ref, 1e-10)
    assert (res.times[idx] == 0).all()
    assert res.error_bound is not None
    fin = np.isfinite(ref) & ~mask
    assert np.max(np.abs(res.times[fin] - ref[fin])) <= res.error_bound + 1e-9 * ref[fin].max()
    np.testing.assert_array_equal(hitting_times(op3, mask), res.times)  # a mask and indices agree


def test_unreachable_target_is_infinite(op3):
    # after "00" token 2 is impossible (ngram3), so the full state 002 is never entered from elsewhere
    t = op3.space.index([0, 0, 2])
    k = hitting_times(op3, [t])
    assert k[t] == 0 and np.isinf(np.delete(k, t)).all()


def test_other_attractor_makes_times_infinite(split_ngram):
    op = sj.build_operator(split_ngram, sj.StateSpace(4, 2), "temperature=1")
    target = [op.space.index([0, 1])]
    k = hitting_times(op, target)
    ref = hitting_times_reference(op.probs, op.successors, state_set(op, target))
    _close(k, ref, 1e-10)
    assert np.isinf(k[op.space.index([2])]) and np.isinf(k[op.space.index([3, 2])])
    assert np.isfinite(k[op.space.index([1])]) and np.isfinite(k[op.space.index([1, 1])])
    # committor between the two attractors is the basin probability
    a_set, b_set = sj.attractors(op)
    c = committor(op, a_set, b_set)
    np.testing.assert_allclose(c, sj.basins(op)[:, 1], atol=1e-14)


def test_kac_return_time(op3):
    pi = sj.stationary(op3)[0]
    for j in (0, 13, 26):
        k = hitting_times(op3, [j])
        ret = 1.0 + op3.probs[j] @ k[op3.successors[j]]
        assert ret == pytest.approx(1.0 / pi[j], rel=1e-11)


def test_committor_matches_reference_and_identities(op3):
    a = [op3.space.index([0, 0, 0]), op3.space.index([1, 1, 1])]
    b = [op3.space.index([2, 2, 2])]
    res = committor_result(op3, a, b)
    ref = committor_reference(op3.probs, op3.successors, state_set(op3, a), state_set(op3, b))
    np.testing.assert_allclose(res.probabilities, ref, atol=1e-13)
    assert (res.probabilities[a] == 0).all() and (res.probabilities[b] == 1).all()
    assert res.error_bound is not None and res.error_bound < 1e-10
    # the chain is ergodic, so A u B is hit with probability 1: the two committors add to 1
    np.testing.assert_allclose(res.probabilities + committor(op3, b, a), 1.0, atol=1e-13)
    # harmonic off A u B
    free = ~(state_set(op3, a) | state_set(op3, b))
    np.testing.assert_allclose(op3.pull(res.probabilities)[free], res.probabilities[free], atol=1e-13)
    # A empty: probability of ever hitting B (= 1 on an ergodic chain)
    np.testing.assert_allclose(committor(op3, [], b), 1.0, atol=1e-13)


def test_errors(op3):
    with pytest.raises(ValueError, match="empty"):
        hitting_times(op3, [])
    with pytest.raises(ValueError, match="disjoint"):
        committor(op3, [0, 1], [1])
    with pytest.raises(IndexError):
        hitting_times(op3, [op3.num_states])
    with pytest.raises(ValueError):
        hitting_times(op3, np.zeros(3, dtype=bool))


@pytest.mark.property
@given(op=operators(kind="any"), data=st.data())
def test_property_hitting_and_committor(op, data):
    s = op.num_states
    target = np.array(data.draw(st.lists(st.booleans(), min_size=s, max_size=s)))
    if not target.any():
        target[data.draw(st.integers(0, s - 1))] = True
    res = hitting_times_result(op, target)
    ref = hitting_times_reference(op.probs, op.successors, target)
    assert (np.isinf(res.times) == np.isinf(ref)).all()
    fin = np.isfinite(ref)
    scale = max(1.0, float(ref[fin].max()))
    assert np.max(np.abs(res.times[fin] - ref[fin])) <= 1e-8 * scale**2
    a = np.array(data.draw(st.lists(st.booleans(), min_size=s, max_size=s))) & ~target
    c = committor_result(op, a, target)
    cref = committor_reference(op.probs, op.successors, a, target)
    assert np.max(np.abs(c.probabilities - cref)) <= 1e-8 * max(1.0, c.max_time or 1.0)
    assert ((c.probabilities >= 0) & (c.probabilities <= 1)).all()
    assert (c.probabilities[c.zero] == 0).all() and (c.probabilities[c.one] == 1).all()


@pytest.mark.property
@given(op=operators(kind="multi"))
def test_property_infinite_exactly_where_another_attractor_is_reachable(op):
    # target = one attractor: the time is finite iff no other attractor can be reached
    attractors = sj.attractors(op)
    reach = sj.basins_result(op).reachable
    k = hitting_times(op, attractors[0])
    finite = reach[:, 0] & (reach.sum(axis=1) == 1)
    np.testing.assert_array_equal(np.isfinite(k), finite)


def test_check_hitting_passes_for_the_right_operator(op3, ngram3):
    target = [op3.space.index([1, 2, 1])]
    rep = check_hitting(op3, ngram3, target, [1], n_chains=1000, seed=0)
    assert rep.passed, rep.table()
    assert rep.settings["horizon"] > 1000 and rep.n_tests >= 3


def test_check_hitting_fails_for_a_perturbed_operator(op3, ngram3):
    wrong = op3.with_procedure("temperature=1.3")
    target = [op3.space.index([1, 2, 1])]
    rep = check_hitting(wrong, ngram3, target, [1], procedure="temperature=1", n_chains=1000, seed=0)
    assert rep.failed, rep.table()


@pytest.mark.slow
def test_zoo_markov2_hitting_times_match_dense_solve():
    from semio_models.checkpoint import load

    model = load("markov2")
    op = sj.build_operator(model, sj.StateSpace(4, 4), "top_k=2")  # L=4 < the model's 5: a shorter window
    target = state_set(op, [op.space.index([3, 3, 3, 3]), op.space.index([0, 1, 2, 3])])
    res = hitting_times_result(op, target)
    _close(res.times, hitting_times_reference(op.probs, op.successors, target), 1e-9)


def test_stream_state_path_follows_the_space_encoding(op3, ngram3):
    from semio_jax.montecarlo import Sampler
    from semio_jax.montecarlo.estimators import stream_state_path

    space = op3.space
    sampler = Sampler(ngram3, "temperature=1", space.length, space.n_tokens)
    prompts = np.tile([2], (5, 1))
    ys = sampler.sample(prompts, 9, seed=1)
    got = np.concatenate([idx for _, idx in stream_state_path(sampler, space, prompts, 9, seed=1, chunk=4)], axis=1)
    for c in range(5):
        hist = [2] + ys[c].tolist()
        want = [space.index(hist[max(0, t + 1 - space.length): t + 1]) for t in range(1, 10)]
        assert got[c].tolist() == want


def test_check_hitting_mean_row_needs_enough_chains_for_its_skewness(op3, ngram3):
    """The mean row uses the exact variance and is run only when skewness / sqrt(C) <= 0.2; with 10 chains the
    report is INCONCLUSIVE (the binomial rows, exact at any C, stay) and names the chains needed."""
    target = [op3.space.index([1, 2, 1])]
    few = check_hitting(op3, ngram3, target, [1], n_chains=10, seed=0)
    assert not any("E[min" in r.quantity for r in few.rows) and few.n_tests >= 1
    assert few.inconclusive and any("needs C >=" in r for r in few.reasons())
    need = int(few.reasons()[0].split("C >= ")[1].split(" ")[0])
    enough = check_hitting(op3, ngram3, target, [1], n_chains=need, seed=0)
    assert any("E[min" in r.quantity for r in enough.rows) and not enough.inconclusive, enough.table()


def test_small_solves_in_a_big_space_never_build_the_whole_matrix(split_ngram):
    """Hitting times, committors and basins by sparse LU take the unknown states' rows (op.rows), not
    slices of op.csr, which would build and cache the whole operator's matrix (three tables)."""
    op = sj.build_operator(split_ngram, sj.StateSpace(4, 4), "temperature=1")
    members = sj.attractors(op)
    target = members[0][:3]
    h = hitting_times(op, target)
    c = committor(op, members[0][:2], members[1][:2])
    assert "csr" not in op.__dict__
    # two absorbing windows (0000, 1111) and a token 2 that can lead to either: basins has states to solve
    table = np.random.default_rng(3).normal(size=(3, 3))
    table[0, 1:] = -np.inf
    table[1, [0, 2]] = -np.inf
    bop = sj.build_operator(sj.NGramModel(table, context_length=4), sj.StateSpace(3, 4), "temperature=1")
    b = sj.basins_result(bop)
    assert b.n_solved > 0 and "csr" not in bop.__dict__
    from helpers import exact_absorption

    exact = exact_absorption(bop, sj.attractors(bop))[0]
    assert np.max(np.abs(b.probabilities - exact)) <= b.error_bound
    succ = op.successors
    np.testing.assert_allclose(h, hitting_times_reference(op.probs, succ, state_set(op, target)), rtol=1e-10)
    ref = committor_reference(op.probs, succ, state_set(op, members[0][:2]), state_set(op, members[1][:2]))
    np.testing.assert_allclose(c, ref, atol=1e-12)
