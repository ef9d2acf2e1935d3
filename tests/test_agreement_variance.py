"""Exact variance of time averages (semio_jax.agreement.variance) against brute-force path enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import semio_jax as sj
from semio_jax.agreement.variance import (
    chains_needed,
    class_matrix,
    effective_draws,
    surprisal_variance,
    time_average_variance,
)


@pytest.fixture(scope="module")
def chain():
    """N = 3, L = 2, order 2: a random ergodic chain on 9 full states (with prefix states left out by the class)."""
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(3) * 0.7, size=(3, 3))
    model = sj.NGramModel(np.log(probs), context_length=2, name="r")
    op = sj.build_operator(model, sj.StateSpace(3, 2), "temperature=1")
    members = sj.attractors(op)[0]
    pi = sj.stationary(op)[0][members]
    return op, members, pi / pi.sum()


def _paths(op, members, pi, n):
    """Every path X_0..X_n of the class with its probability (independent of the code under test)."""
    succ, probs = op.successors, op.probs
    for x0 in members:
        for ys in itertools.product(range(op.n_tokens), repeat=n):
            p, x, xs, ls = pi[list(members).index(x0)], int(x0), [], []
            for y in ys:
                q = probs[x, y]
                p *= q
                if p == 0:
                    break
                ls.append(-np.log(q))
                x = int(succ[x, y])
                xs.append(x)
            if p > 0:
                yield p, xs, ls


@pytest.mark.parametrize("n", [1, 2, 5])
def test_time_average_variance_matches_enumeration(chain, n):
    op, members, pi = chain
    g = np.stack([members % 3 == 1, members == members[4]], axis=1).astype(float)  # a 1-gram and a state
    col = {int(s): i for i, s in enumerate(members)}
    m1, m2 = np.zeros(2), np.zeros(2)
    for p, xs, _ in _paths(op, members, pi, n):
        avg = np.mean([g[col[x]] for x in xs], axis=0)
        m1 += p * avg
        m2 += p * avg**2
    want = m2 - m1**2
    got = time_average_variance(class_matrix(op, members), pi, g, n)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(m1, pi @ g, rtol=1e-9)  # unbiased at every n from pi


@pytest.mark.parametrize("n", [1, 2, 5])
def test_surprisal_variance_matches_enumeration(chain, n):
    op, members, pi = chain
    m1 = m2 = 0.0
    for p, _, ls in _paths(op, members, pi, n):
        avg = float(np.mean(ls))
        m1 += p * avg
        m2 += p * avg**2
    h, var = surprisal_variance(op, members, pi, n)
    assert h == pytest.approx(m1, rel=1e-9)
    assert h == pytest.approx(float(sj.entropy_rate(op).nats[0]), rel=1e-9)
    assert var == pytest.approx(m2 - m1**2, rel=1e-8)


def test_long_runs_stop_early_without_changing_the_answer(chain):
    """The certified early stop gives the full sum (no early stop at rtol=0) to ~rtol."""
    op, members, pi = chain
    g = (members % 3 == 0).astype(float)[:, None]
    fast = time_average_variance(class_matrix(op, members), pi, g, 5000)
    full = time_average_variance(class_matrix(op, members), pi, g, 5000, rtol=0.0)
    np.testing.assert_allclose(fast, full, rtol=1e-8)
    h1, v1 = surprisal_variance(op, members, pi, 3000)
    h2, v2 = surprisal_variance(op, members, pi, 3000, rtol=0.0)
    assert v1 == pytest.approx(v2, rel=1e-8)


def test_effective_draws_and_chains_needed():
    # i.i.d. Bernoulli(0.1) draws: Var of the mean of 1000 is 0.09 / 1000, so n_eff = 1000 and the rarer side
    # has 100 effective draws; reaching 50 needs half the chains, reaching 400 four times as many.
    n_eff = effective_draws(np.array([0.1]), np.array([0.09 / 1000]))
    assert n_eff[0] == pytest.approx(1000.0)
    assert chains_needed(64, np.array([0.1]), n_eff, 50.0)[0] == pytest.approx(32.0)
    assert chains_needed(64, np.array([0.1]), n_eff, 400.0)[0] == pytest.approx(256.0)
    assert np.isinf(effective_draws(np.array([0.5]), np.array([0.0]))[0])
