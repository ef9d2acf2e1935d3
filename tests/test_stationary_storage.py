"""Stationary laws are stored per attractor; dense views are derived and refused when too big."""

from __future__ import annotations

import numpy as np
import pytest

import semio_jax as sj
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
    np.testing.assert_allclose(st.sparse().toarray(), dense, rtol=0, atol=0)
    with pytest.raises(ValueError, match="one per attractor"):
        st.mixture(w[:-1])


def test_dense_view_refused_with_the_numbers(monkeypatch):
    op = _copy_operator(2, 8)
    st = sj.stationary_result(op)
    import semio_jax.operator as operator_mod
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


def test_basins_refused_up_front_with_the_numbers(monkeypatch):
    op = _copy_operator(2, 8)  # 36 attractors over 510 states
    import semio_jax.operator as operator_mod
    monkeypatch.setattr(operator_mod, "available_memory", lambda: 2 * 9 * 510 * 10)  # room for 10 columns
    with pytest.raises(sj.StateSpaceTooLargeError, match=r"510 states and 36 attractors"):
        sj.basins_result(op)
    monkeypatch.setattr(operator_mod, "available_memory", lambda: 2 * 9 * 510 * 36)  # exactly enough
    h = sj.basins_result(op).probabilities
    assert h.shape == (510, 36)
