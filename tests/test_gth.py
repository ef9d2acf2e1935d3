"""semio_jax.linalg.gth: the enclosures contain the exact stationary vector (checked in exact rationals),
and the log-domain GTH agrees with exact rationals where float64 cannot represent the entries."""

from __future__ import annotations

from fractions import Fraction

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semio_jax.linalg.gth import gth_enclosure, gth_log, gth_log_enclosure
from semio_jax.testing.references import gth_rational


def _random_chain(seed: int, n: int, stiff: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.random((n, n)) ** 3 * (rng.random((n, n)) < 0.6)
    p[np.arange(n), (np.arange(n) + 1) % n] += 0.1  # a cycle through every state: irreducible
    p[:, 0] *= stiff  # a nearly absorbing structure: moves into state 0 are rare
    return p / p.sum(axis=1, keepdims=True)


def _exact(p: np.ndarray) -> list[Fraction]:
    return gth_rational([[Fraction(float(x)) for x in row] for row in p])


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10**6), st.integers(2, 24), st.sampled_from([1.0, 1e-6, 1e-40]))
def test_float_enclosure_contains_the_exact_vector(seed, n, stiff):
    p = _random_chain(seed, n, stiff)
    lo, hi = gth_enclosure(p, p)
    exact = _exact(p)
    for j in range(n):  # exact rational comparisons: no slack
        assert Fraction(float(lo[j])) <= exact[j] <= Fraction(float(hi[j]))
    assert np.max(hi / lo - 1.0) < 1e-9 * n  # and the enclosure is tight


def _log(x: Fraction) -> mpmath.mpf:
    with mpmath.workdps(60):
        return mpmath.log(mpmath.mpf(x.numerator) / mpmath.mpf(x.denominator))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10**6), st.integers(2, 16), st.sampled_from([1.0, 1e-40, 1e-200]))
def test_log_enclosure_contains_the_exact_vector(seed, n, stiff):
    p = _random_chain(seed, n, stiff)
    with np.errstate(divide="ignore"):
        lp = np.log(p)
    lo, hi = gth_log_enclosure(lp, lp)
    exact = _exact(p)
    for j in range(n):  # the exact log, to 60 digits, lies inside the float bounds
        assert mpmath.mpf(float(lo[j])) <= _log(exact[j]) <= mpmath.mpf(float(hi[j]))
    mid = gth_log(lp)
    assert np.all(lo <= mid) and np.all(mid <= hi)
    assert np.max(hi - lo) < 1e-8 * n


def test_log_gth_below_the_float64_range():
    """A three-state chain whose stationary entry is ~1e-400: exact in rationals, finite in log form."""
    eps = Fraction(1, 10**400)
    a = [[Fraction(1, 2), Fraction(1, 2), Fraction(0)],
         [1 - eps, Fraction(0), eps],
         [Fraction(1), Fraction(0), Fraction(0)]]
    exact = gth_rational(a)
    lp = np.full((3, 3), -np.inf)
    lp[0, 0] = lp[0, 1] = np.log(0.5)
    lp[1, 0], lp[1, 2] = 0.0, -400 * np.log(10)
    lp[2, 0] = 0.0
    got = gth_log(lp)
    for j in range(3):
        assert abs(got[j] - float(_log(exact[j]))) < 1e-12 * max(1.0, abs(got[j]))
    assert got[2] < -900


def test_reducible_block_is_an_error():
    with np.errstate(divide="ignore"):  # log 0 = -inf: an impossible move, on purpose
        lp = np.log(np.array([[1.0, 0.0], [0.5, 0.5]]))
    with pytest.raises(Exception, match="no remaining exit"):
        gth_log(lp[::-1, ::-1])


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10**6), st.integers(2, 20))
def test_float_enclosure_holds_for_every_chain_in_the_interval(seed, n):
    """Bounds lo = P (1 - 3d), hi = P (1 + 3d) must enclose the stationary vector of any chain in between,
    here P itself and a randomly perturbed, renormalised P' (each entry within 2d of P's, relatively)."""
    p = _random_chain(seed, n, 1e-3)
    d = 1e-6
    lo, hi = gth_enclosure(p * (1 - 3 * d), p * (1 + 3 * d))
    u = np.random.default_rng(seed + 1).uniform(-1.0, 1.0, p.shape)
    q = p * (1.0 + d * u)
    q /= q.sum(axis=1, keepdims=True)
    for chain in (p, q):
        exact = _exact(chain)
        for j in range(n):
            assert Fraction(float(lo[j])) <= exact[j] <= Fraction(float(hi[j]))
    assert np.max(hi / lo - 1.0) < 1e3 * d * n  # wide by the data (amplified by the elimination), not unbounded
