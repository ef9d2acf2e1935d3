"""Spectral gaps, exact total-variation curves and mixing times (semio_jax.analysis.mixing)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import semio_jax as sj
from semio_jax.testing import references
from semio_jax.agreement import check_tv
from semio_jax.analysis import mixing as mx


def dense_matrix(op) -> np.ndarray:
    """The full |S| x |S| matrix by loops (independent of Operator.csr / push)."""
    s = op.num_states
    p = np.zeros((s, s))
    for i in range(s):
        for y in range(op.n_tokens):
            p[i, op.space.successor(i, y)] += op.probs[i, y]
    return p


def random_operator(n: int, length: int, seed: int, zeros: float = 0.0, prefixes: bool = True) -> sj.Operator:
    rng = np.random.default_rng(seed)
    space = sj.StateSpace(n, length, prefixes)
    p = rng.random((space.num_states, n)) ** 2 + 1e-3
    if zeros:
        p[rng.random(p.shape) < zeros] = 0.0
        dead = p.sum(axis=1) == 0
        p[dead, 0] = 1.0
    return sj.Operator(space, p / p.sum(axis=1, keepdims=True))


@pytest.fixture(scope="module")
def ngram():
    rng = np.random.default_rng(20240611)
    return sj.NGramModel(rng.normal(scale=1.5, size=(3, 3, 3)), context_length=4, name="ngram3")


@pytest.fixture(scope="module")
def op(ngram):
    return sj.build_operator(ngram, sj.StateSpace(3, 4))


@pytest.fixture(scope="module")
def split_op():
    """N=4, order 1, tokens {0,1} and {2,3} never mix: two aperiodic attractors."""
    rng = np.random.default_rng(7)
    table = rng.normal(size=(4, 4))
    table[:2, 2:] = -np.inf
    table[2:, :2] = -np.inf
    return sj.build_operator(sj.NGramModel(table), sj.StateSpace(4, 3))


@pytest.fixture(scope="module")
def periodic_op():
    """N=4, L=1: tokens {0,1} always lead to {2,3} and back: one attractor of period 2."""
    p = np.array([[0, 0, 0.3, 0.7], [0, 0, 0.6, 0.4], [0.2, 0.8, 0, 0], [0.5, 0.5, 0, 0]])
    return sj.Operator(sj.StateSpace(4, 1), p)


# ------------------------------------------------------------------ spectra
def test_slem_matches_dense_reference(op, split_op):
    for o in (op, split_op):
        res = mx.spectral_gap(o)
        for c, members in zip(res.classes, sj.attractors(o)):
            ref = references.spectral_gap_reference(o.probs, o.successors, members)
            assert c.method == "dense"
            assert c.slem == pytest.approx(ref, abs=1e-12)
            assert c.gap == pytest.approx(1 - ref, abs=1e-12)
            assert c.relaxation_time == pytest.approx(1 / (1 - ref), rel=1e-10)
            assert c.residual < 1e-12
            assert 0.0 <= c.slem <= 1.0


def test_arnoldi_matches_dense(op):
    dense = mx.spectral_gap(op, method="dense").classes[0]
    arn = mx.spectral_gap(op, method="arnoldi").classes[0]
    assert arn.method == "arnoldi"
    assert arn.slem == pytest.approx(dense.slem, abs=1e-10)
    assert arn.residual < 1e-10
    assert abs(arn.eigenvalue - dense.eigenvalue) < 1e-9 or abs(arn.eigenvalue - np.conj(dense.eigenvalue)) < 1e-9


def test_eigenvalue_is_left_eigenvalue_of_the_dense_matrix(op):
    c = mx.spectral_gap(op).classes[0]
    vals = np.linalg.eigvals(dense_matrix(op))
    assert np.min(np.abs(vals - c.eigenvalue)) < 1e-9


def test_periodic_class(periodic_op):
    c = mx.spectral_gap(periodic_op).classes[0]
    assert c.period == 2
    assert c.slem == 1.0 and c.gap == 0.0 and c.relaxation_time == float("inf")
    assert c.eigenvalue.real == pytest.approx(-1.0, abs=1e-12)
    assert "period 2" in c.note
    # lazy chain: eigenvalues of (I + P)/2 from the dense matrix
    lazy = (np.eye(4) + periodic_op.probs) / 2
    vals = np.sort(np.abs(np.linalg.eigvals(lazy)))[::-1]
    assert c.lazy_slem == pytest.approx(vals[1], abs=1e-12)
    d = mx.tv_distance(periodic_op, 0, 20)
    assert d[-1] > 0.4  # does not go to 0
    with pytest.raises(ValueError, match="periodic"):
        mx.mixing_time(periodic_op)
    t = mx.mixing_time(periodic_op, lazy=True)
    dl = mx.tv_distance(periodic_op, 0, 40, lazy=True)
    assert t is not None and mx.worst_case_tv(periodic_op, t, lazy=True)[t] <= 0.25 < mx.worst_case_tv(
        periodic_op, t, lazy=True)[t - 1]
    assert dl[-1] < 1e-3


def test_single_state_attractor():
    p = np.array([[1.0, 0.0], [0.5, 0.5]])  # token 0 absorbing
    o = sj.Operator(sj.StateSpace(2, 1), p)
    c = mx.spectral_gap(o).classes[0]
    assert c.method == "trivial" and c.slem == 0.0 and c.gap == 1.0


# ---------------------------------------------------------- total variation
def test_tv_distance_matches_dense_powers(split_op):
    o = split_op
    p = dense_matrix(o)
    big = np.linalg.matrix_power(p, 4000)  # the limit laws, independently of basins/stationary code
    for start in (o.space.index([0]), o.space.index([1, 2]), o.space.index([0, 1, 3]), o.space.index([3, 3, 2])):
        d = mx.tv_distance(o, start, 25)
        ref = references.tv_distance_reference(o.probs, o.successors, start, 25, big[start])
        np.testing.assert_allclose(d, ref, atol=1e-12)
        assert np.all(np.diff(d) <= 1e-14)


def test_tv_distance_from_a_distribution(op):
    mu = np.zeros(op.num_states)
    mu[[3, 17]] = [0.25, 0.75]
    d = mx.tv_distance(op, mu, 10)
    p = dense_matrix(op)
    lim = np.linalg.matrix_power(p, 3000)[0]
    ref = [0.5 * np.abs(mu @ np.linalg.matrix_power(p, t) - lim).sum() for t in range(11)]
    np.testing.assert_allclose(d, ref, atol=1e-12)


def test_worst_case_and_mixing_time(op):
    n = 30
    w = mx.worst_case_tv(op, n)
    brute = np.max([mx.tv_distance(op, s, n) for s in range(op.space.num_full)], axis=0)
    np.testing.assert_allclose(w, brute, atol=1e-14)
    t = mx.mixing_time(op, eps=0.25)
    assert w[t] <= 0.25 < w[t - 1]
    t2 = mx.mixing_time(op, eps=0.01, start=op.space.index([0, 1]))
    d = mx.tv_distance(op, op.space.index([0, 1]), t2)
    assert d[t2] <= 0.01 < d[t2 - 1]


def test_worst_case_refuses_large_spaces():
    space = sj.StateSpace(2, 13, prefixes=False)  # 8192 full states
    o = sj.Operator(space, np.full((space.num_states, 2), 0.5))
    with pytest.raises(sj.StateSpaceTooLargeError, match="full states"):
        mx.worst_case_tv(o, 3)
    # a single start is fine: i.i.d. fair coin forgets everything after L steps
    d = mx.tv_distance(o, 0, 14)
    assert d[13] == pytest.approx(0.0, abs=1e-12) and d[12] > 0


def test_bad_arguments(op):
    with pytest.raises(ValueError):
        mx.mixing_time(op, eps=1.5)
    with pytest.raises(ValueError):
        mx.spectral_gap(op, method="qr")
    with pytest.raises(ValueError):
        mx.tv_distance(op, np.ones(op.num_states), 3)


# ------------------------------------------------------------------ properties
@pytest.mark.property
@given(n=st.integers(2, 3), length=st.integers(1, 3), seed=st.integers(0, 2**31 - 1),
       zeros=st.sampled_from([0.0, 0.3, 0.6]))
def test_property_slem_in_unit_interval_and_tv_monotone(n, length, seed, zeros):
    o = random_operator(n, length, seed, zeros)
    res = mx.spectral_gap(o)
    for c, members in zip(res.classes, sj.attractors(o)):
        assert -1e-12 <= c.slem <= 1.0
        assert c.residual < 1e-8
        if c.period == 1 and members.size > 1:
            assert c.slem == pytest.approx(references.spectral_gap_reference(o.probs, o.successors, members), abs=1e-8)
    for start in (0, o.num_states - 1):
        d = mx.tv_distance(o, start, 12)
        assert np.all(np.diff(d) <= 1e-12)  # P contracts TV and pi_start is invariant
        assert 0.0 <= d.min() and d.max() <= 1.0 + 1e-12


# ------------------------------------------------------------------ agreement
def test_check_tv_passes_for_the_right_operator_and_fails_for_a_wrong_one(op, ngram):
    start = op.space.index([0, 1])
    good = check_tv(op, ngram, start, (1, 2, 4, 8), n_chains=2000, seed=0)
    assert good.passed, good.table()
    wrong = check_tv(op.with_procedure("temperature=1.3"), ngram, start, (1, 2, 4, 8), n_chains=2000, seed=0,
                     procedure="temperature=1")
    assert wrong.failed, wrong.table()
    assert good.rows[0].exact == pytest.approx(mx.tv_distance(op, start, 1)[1])


@pytest.mark.slow
def test_zoo_markov2_dense_and_arnoldi_agree():
    from semio_models.checkpoint import load

    o = sj.build_operator(load("markov2"), sj.StateSpace(4, 5))
    dense = mx.spectral_gap(o, method="dense").classes[0]
    arn = mx.spectral_gap(o, method="arnoldi").classes[0]
    assert arn.slem == pytest.approx(dense.slem, abs=1e-9)
    assert max(dense.residual, arn.residual) < 1e-9
