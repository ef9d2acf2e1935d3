"""Stationary laws are stored per attractor; dense views are derived and refused when too big."""

from __future__ import annotations

import numpy as np
import pytest

import semio_jax as sj
from semio_jax.testing import references

from helpers import exact_absorption
from hypothesis import given
from semio_jax.testing import operators
from semio_jax.analysis import stationary as stationary_mod


def _copy_operator(n: int, length: int) -> sj.Operator:
    """Deterministic "copy the oldest token" chain: every full state lies on a rotation cycle (a necklace)."""
    space = sj.StateSpace(n, length)
    probs = np.zeros((space.num_states, n))
    nf = space.num_full
    probs[np.arange(nf), np.arange(nf) // n ** (length - 1)] = 1.0  # oldest token = most significant digit
    probs[nf:, 0] = 1.0
    return sj.Operator(space, probs)


def _necklaces(n: int, length: int) -> int:
    """Number of binary/n-ary necklaces of the given length (Burnside over rotations)."""
    from math import gcd
    return sum(n ** gcd(k, length) for k in range(length)) // length


def test_many_attractors_are_stored_sparsely():
    op = _copy_operator(2, 10)
    st = sj.stationary_result(op)
    cs = sj.class_structure(op)
    assert len(st) == len(cs.attractors) == _necklaces(2, 10)
    # storage: one number per state on a cycle, not n_attractors x |S|
    assert sum(v.size for v in st.values) == op.space.num_full
    dense = st.distributions
    assert dense.shape == (len(st), op.num_states)
    for i, members in enumerate(cs.attractors):
        row = st.distribution(i)
        np.testing.assert_array_equal(row, dense[i])
        np.testing.assert_allclose(row[members], 1.0 / members.size, rtol=1e-12)  # uniform on a rotation cycle
        assert row.sum() == pytest.approx(1.0, abs=1e-14)
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.ones(len(st)))
    f = rng.normal(size=op.num_states)
    np.testing.assert_allclose(st.mixture(w), w @ dense, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(st.expectations(f), dense @ f, rtol=1e-12, atol=1e-15)
    uniform = np.zeros((len(st), op.num_states))  # independent: the law of a rotation cycle is uniform
    for i, members in enumerate(cs.attractors):
        uniform[i, members] = 1.0 / members.size
    np.testing.assert_allclose(st.sparse().toarray(), uniform, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="one per attractor"):
        st.mixture(w[:-1])


def test_dense_view_refused_with_the_numbers(monkeypatch):
    op = _copy_operator(2, 8)
    st = sj.stationary_result(op)
    import semio_jax._util.memory as operator_mod
    monkeypatch.setattr(operator_mod, "available_memory", lambda: 2 * 8 * op.num_states)  # one row fits
    with pytest.raises(sj.StateSpaceTooLargeError, match=r"\[36, 510\].*distribution\(i\)"):
        st.distributions
    assert st.distribution(0).shape == (op.num_states,)  # the per-attractor view still works


def test_limit_distribution_uses_the_sparse_store():
    op = _copy_operator(2, 6)
    space = op.space
    # a prefix state walks (token 0 forever) into the all-zero window, a fixed point
    lim = sj.limit_distribution(op, space.num_full)
    np.testing.assert_array_equal(lim, np.eye(op.num_states)[0])
    # half on two full states on different rotation cycles: the law is half of each cycle's uniform law
    a, b = space.index([0, 0, 0, 0, 0, 1]), space.index([0, 1, 0, 1, 0, 1])
    start = np.zeros(op.num_states)
    start[[a, b]] = 0.5
    lim = sj.limit_distribution(op, start)
    expect = np.zeros(op.num_states)
    cyc_a = [space.index(np.roll([0, 0, 0, 0, 0, 1], k)) for k in range(6)]
    cyc_b = [space.index(np.roll([0, 1, 0, 1, 0, 1], k)) for k in range(2)]
    expect[cyc_a] += 0.5 / 6
    expect[cyc_b] += 0.5 / 2
    np.testing.assert_allclose(lim, expect, rtol=1e-12, atol=1e-15)


def test_basins_of_many_attractors_are_compact(monkeypatch):
    op = _copy_operator(2, 8)  # deterministic: 36 attractors over 510 states, no split state
    import semio_jax._util.memory as operator_mod
    monkeypatch.setattr(operator_mod, "available_memory", lambda: 2 * 9 * 510 * 10)  # room for 10 dense columns
    b = sj.basins_result(op)  # compact: fine within the budget
    assert b.split.size == 0 and b.split_probabilities.shape == (0, 36)
    with pytest.raises(sj.StateSpaceTooLargeError, match=r"510 states and 36 attractors.*rows\(states\)"):
        b.probabilities
    with pytest.raises(sj.StateSpaceTooLargeError):
        b.reachable
    cycle_of = sj.greedy_dynamics(op).cycle_of
    rows = b.rows(np.arange(op.num_states))
    np.testing.assert_array_equal(rows, np.eye(36)[cycle_of])
    np.testing.assert_array_equal(b.rows(5), np.eye(36)[cycle_of[5]])
    mu = np.random.default_rng(1).dirichlet(np.ones(op.num_states))
    np.testing.assert_allclose(b.absorption(mu), np.bincount(cycle_of, mu, minlength=36), rtol=1e-12)


def test_split_rows_refused_before_the_solve(monkeypatch):
    """A random chain whose transient states can reach several attractors: U x m is checked first."""
    space = sj.StateSpace(2, 6)
    probs = np.full((space.num_states, 2), 0.5)
    nf = space.num_full
    fixed = [space.index([y] * 6) for y in (0, 1)]  # 000000 -> 0 and 111111 -> 1 forever: 2 attractors
    for y, s in enumerate(fixed):
        probs[s] = np.eye(2)[y]
    op = sj.Operator(space, probs)
    b = sj.basins_result(op)
    assert b.n_attractors == 2 and b.split.size == space.num_states - 2
    exact, _ = exact_absorption(op, sj.attractors(op))  # exact rationals, independent of the solver
    np.testing.assert_allclose(b.sparse().toarray(), exact, rtol=0, atol=b.error_bound + 1e-16)
    import semio_jax._util.memory as operator_mod
    op2 = sj.Operator(space, probs)
    monkeypatch.setattr(operator_mod, "available_memory", lambda: 2 * 9 * 2 * 100)  # room for 100 split rows
    with pytest.raises(sj.StateSpaceTooLargeError, match=r"rows for the 124 states that can reach two or more"):
        sj.basins_result(op2)
    assert nf == 64


@pytest.mark.property
@given(operators())
def test_compact_basin_views_agree_with_the_dense_tables(op):
    b = sj.basins_result(op)
    h, reach = b.probabilities, b.reachable
    assert h.shape == reach.shape == (op.num_states, len(sj.attractors(op)))
    exact, _ = exact_absorption(op, sj.attractors(op))  # exact rationals, independent of the solver
    np.testing.assert_allclose(b.sparse().toarray(), exact, rtol=0, atol=b.error_bound + 1e-16)
    np.testing.assert_array_equal(reach, exact > 0)
    states = np.arange(op.num_states)[::-1]
    np.testing.assert_array_equal(b.rows(states), h[states])
    np.testing.assert_array_equal(b.reachable_rows(states), reach[states])
    mu = np.linspace(1.0, 2.0, op.num_states)
    np.testing.assert_allclose(b.absorption(mu), mu @ h, rtol=1e-12, atol=1e-15)
    # owner/split partition the states; a state ends in one attractor exactly when it reaches only one
    assert np.array_equal(b.owner < 0, reach.sum(axis=1) >= 2)
    np.testing.assert_array_equal(b.split, np.flatnonzero(b.owner < 0))
    st = sj.stationary_result(op)
    for i, members in enumerate(sj.attractors(op)):  # against the dense least-squares eigenvector
        ref = references.stationary_reference(op.probs, op.successors, members)
        np.testing.assert_allclose(st.sparse().toarray()[i], ref, rtol=0, atol=1e-9)


def test_reachability_needs_no_absorption_solve():
    space = sj.StateSpace(2, 5)
    probs = np.full((space.num_states, 2), 0.5)
    for y in (0, 1):
        probs[space.index([y] * 5)] = np.eye(2)[y]
    op = sj.Operator(space, probs)
    from semio_jax.analysis import reachable_attractors

    reach = reachable_attractors(op)
    assert not any(key[0] == "basins" for key in op.__dict__.get("_analysis_cache", {}))  # no solve ran
    exact, _ = exact_absorption(op, sj.attractors(op))  # reachability from exact rationals
    np.testing.assert_array_equal(reach, exact > 0)
    assert reach.sum(axis=1).min() == 1 and reach.all(axis=1).sum() == space.num_states - 2
