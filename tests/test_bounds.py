"""Dobrushin-coefficient bounds on d(n) (semio_jax.analysis.bounds)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import semio_jax as sj
from semio_jax.testing import references
from semio_jax.agreement import check_tv
from semio_jax.analysis import bounds as bd
from semio_jax.analysis import mixing as mx


def random_operator(n: int, length: int, seed: int, zeros: float = 0.0) -> sj.Operator:
    rng = np.random.default_rng(seed)
    space = sj.StateSpace(n, length)
    p = rng.random((space.num_states, n)) ** 2 + 1e-3
    if zeros:
        p[rng.random(p.shape) < zeros] = 0.0
        p[p.sum(axis=1) == 0, 0] = 1.0
    return sj.Operator(space, p / p.sum(axis=1, keepdims=True))


@pytest.fixture(scope="module")
def sticky():
    """N=2, order 1: repeat the last token with probability ~0.8."""
    return sj.NGramModel(np.log(np.array([[0.8, 0.2], [0.2, 0.8]])), name="sticky-coin")


@pytest.fixture(scope="module")
def sticky_op(sticky):
    return sj.build_operator(sticky, sj.StateSpace(2, 5))


@pytest.fixture(scope="module")
def ngram_op():
    rng = np.random.default_rng(20240611)
    return sj.build_operator(sj.NGramModel(rng.normal(scale=1.0, size=(3, 3, 3))), sj.StateSpace(3, 3))


def test_exact_coefficient_matches_reference(sticky_op, ngram_op):
    for o in (sticky_op, ngram_op):
        res = bd.dobrushin(o)
        ref = references.dobrushin_reference(o.probs, o.successors, o.space.num_full, o.space.length)
        assert res.method == "exact" and res.steps == o.space.length
        assert ref - 1e-15 <= res.delta <= ref + 1e-12  # the margin only adds
        i, j = res.pair
        rows = bd._rows_of_power(o, o.space.length)
        assert 0.5 * np.abs(rows[i] - rows[j]).sum() == pytest.approx(ref, abs=1e-13)


def test_sticky_coin_closed_form(sticky_op):
    """For an order-1 chain the future after L steps depends only on the last token: delta = |0.8 - 0.2|^1."""
    res = bd.dobrushin(sticky_op)
    p = sticky_op.probs[0]
    assert res.delta == pytest.approx(abs(p[0] - (1 - p[0])), abs=1e-12)
    two = bd.dobrushin(sticky_op, steps=10)
    assert two.delta <= res.delta**2 + 1e-12  # sub-multiplicative


def test_minorization_bounds_the_exact_coefficient(sticky_op, ngram_op):
    for o in (sticky_op, ngram_op):
        exact = bd.dobrushin(o, method="exact")
        mino = bd.dobrushin(o, method="minorization")
        assert exact.delta <= mino.delta + 1e-12 <= 1.0 + 1e-12
        rows = bd._rows_of_power(o, o.space.length)
        assert mino.minorization_mass <= rows.min(axis=0).sum() + 1e-12  # beta <= sum_y min_x P^L(x, y)


def test_bound_dominates_exact_worst_case(sticky_op, ngram_op):
    for o in (sticky_op, ngram_op):
        for method in ("exact", "minorization"):
            b = bd.tv_bound(o, 60, method=method)
            assert b.value is not None, b.reason
            w = mx.worst_case_tv(o, 60)
            assert (w <= b.value + 1e-12).all()
        t = bd.certified_mixing_time(o, 0.25)
        assert t.value >= mx.mixing_time(o, 0.25)
        assert mx.worst_case_tv(o, t.value)[t.value] <= 0.25


def test_no_useful_bound_cases():
    rng = np.random.default_rng(7)
    table = rng.normal(size=(4, 4))
    table[:2, 2:] = -np.inf
    table[2:, :2] = -np.inf
    two = sj.build_operator(sj.NGramModel(table), sj.StateSpace(4, 2))  # two attractors
    b = bd.tv_bound(two, 10)
    assert b.value is None and "no useful bound" in b.reason
    assert bd.certified_mixing_time(two).value is None
    greedy = two.with_procedure("greedy")
    assert bd.dobrushin(greedy).delta == 1.0 and not bd.dobrushin(greedy).useful
    short = bd.dobrushin(random_operator(2, 3, 0), steps=2)
    assert short.method == "trivial" and short.delta == 1.0 and "disjoint" in short.reason
    mino = bd.dobrushin(two, method="minorization")
    assert not mino.useful and "minorisation" in mino.reason


def test_minorization_on_a_space_too_large_for_exact():
    space = sj.StateSpace(2, 12)  # 4096 full states: exact is refused by auto
    o = sj.Operator(space, np.full((space.num_states, 2), 0.5))
    res = bd.dobrushin(o)
    assert res.method == "minorization"
    assert res.delta == pytest.approx(0.0, abs=1e-10)  # i.i.d. fair coin: forgets everything after L steps
    with pytest.raises(sj.StateSpaceTooLargeError):
        bd.dobrushin(sj.Operator(sj.StateSpace(2, 13), np.full((sj.StateSpace(2, 13).num_states, 2), 0.5)),
                     method="exact")


# ------------------------------------------------------------------ properties
@pytest.mark.property
@given(n=st.integers(2, 3), length=st.integers(1, 3), seed=st.integers(0, 2**31 - 1),
       zeros=st.sampled_from([0.0, 0.2]))
def test_property_bound_at_least_exact(n, length, seed, zeros):
    o = random_operator(n, length, seed, zeros)
    exact = bd.dobrushin(o, method="exact")
    mino = bd.dobrushin(o, method="minorization")
    assert 0.0 <= exact.delta <= mino.delta + 1e-12 <= 1.0 + 1e-12
    ref = references.dobrushin_reference(o.probs, o.successors, o.space.num_full, length)
    assert min(ref, 1.0) - 1e-15 <= exact.delta <= ref + 1e-12
    w = mx.worst_case_tv(o, 4 * length, lazy=False)
    assert (w <= exact.tv_bound(4 * length) + 1e-12).all()


# ------------------------------------------------------------------ agreement
def test_check_tv_pair_on_the_sticky_coin(sticky_op, sticky):
    start = sticky_op.space.index([0, 0, 0, 0, 0])
    bound = bd.tv_bound(sticky_op, 8).value
    good = check_tv(sticky_op, sticky, start, (1, 3, 5, 8), n_chains=3000, seed=1)
    assert good.passed, good.table()
    for row, n in zip(good.rows, (1, 3, 5, 8)):
        assert row.exact <= bound[n] + 1e-12  # the certified bound dominates the tested d(n)
    wrong = check_tv(sticky_op.with_procedure("temperature=1.3"), sticky, start, (1, 3, 5, 8), n_chains=3000,
                     seed=1, procedure="temperature=1")
    assert wrong.failed, wrong.table()
