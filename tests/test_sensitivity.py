"""Sensitivity of futures to one-token perturbations of the prompt (semio_jax.analysis.sensitivity)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import semio_jax as sj
from semio_jax.testing import references
from semio_jax.agreement import check_sensitivity
from semio_jax.analysis import mixing as mx
from semio_jax.analysis import sensitivity as se


@pytest.fixture(scope="module")
def ngram():
    rng = np.random.default_rng(20240611)
    return sj.NGramModel(rng.normal(scale=1.5, size=(3, 3, 3)), name="ngram3")


@pytest.fixture(scope="module")
def op(ngram):
    return sj.build_operator(ngram, sj.StateSpace(3, 4))


def test_perturbations_enumerate_one_token_changes(op):
    s = op.space.index([0, 1, 2, 0])
    states, pos, new = se.perturbations(op.space, s)
    assert states.size == 4 * 2
    for x, p, y in zip(states, pos, new):
        t0, t1 = op.space.tokens(s), op.space.tokens(int(x))
        assert (t0 != t1).sum() == 1 and t1[p] == y and t0[p] != y
    prefix = op.space.index([2, 1])
    assert se.perturbations(op.space, prefix)[0].size == 2 * 2
    assert se.perturbations(op.space, s, positions=[3])[1].tolist() == [3, 3]


def test_state_tv_matches_dense_reference(op):
    r = se.prompt_sensitivity(op, [0, 1, 2, 0], n=30)
    for i, b in enumerate(r.perturbed):
        ref = references.sensitivity_reference(op.probs, op.successors, r.prompt, int(b), 30)
        np.testing.assert_allclose(r.state_tv[i], ref, atol=1e-13)
    assert (r.token_tv <= r.state_tv + 1e-13).all()
    assert (np.diff(r.state_tv, axis=1) <= 1e-13).all()  # D_tok need not be monotone
    s_tv, t_tv = se.future_tv(op, r.prompt, int(r.perturbed[3]), 30)
    np.testing.assert_allclose(s_tv, r.state_tv[3], atol=0)
    np.testing.assert_allclose(t_tv, r.token_tv[3], atol=0)


def test_token_tv_by_brute_force(op):
    a, b = op.space.index([1, 1]), op.space.index([1, 2])  # prefix states
    _, tok = se.future_tv(op, a, b, 5)
    n, space = op.n_tokens, op.space

    def token_law(start, t):  # enumerate every string of t tokens
        law = np.zeros(n)
        for ys in np.ndindex(*(n,) * t):
            s, p = start, 1.0
            for y in ys:
                p *= op.probs[s, y]
                s = space.successor(s, y)
            law[ys[-1]] += p
        return law

    for t in range(1, 6):
        assert tok[t - 1] == pytest.approx(0.5 * np.abs(token_law(a, t) - token_law(b, t)).sum(), abs=1e-13)


def test_ngram_forgets_tokens_outside_its_order(op):
    """Order-2 model, L=4: a token at position p < L-2 is never seen again once outside the window."""
    r = se.prompt_sensitivity(op, [0, 1, 2, 0], n=12)
    for i, p in enumerate(r.positions):
        d = r.state_tv[i]
        np.testing.assert_allclose(d[:p], 1.0, atol=1e-13)  # still inside the window: the states differ surely
        if p < 2:
            assert np.all(d[p:] == 0.0) and r.rates[i] == float("-inf")
            assert r.fit_windows[i] == (p + 1, p + 1)
        else:
            assert d[-1] > 0


def test_rate_against_log_slem(op):
    r = se.prompt_sensitivity(op, [0, 1, 2, 0], n=120)
    slem = mx.spectral_gap(op).classes[0].slem
    assert r.log_slem == pytest.approx(np.log(slem))
    assert r.log_rate_bound == pytest.approx(r.log_slem)  # no transient full states here
    assert r.asymptotic.all()  # D stays above the floor over the whole tail here
    finite = r.rates[np.isfinite(r.rates)]
    assert finite.size > 0
    assert (finite <= r.log_slem + 0.02).all()
    assert r.max_rate == pytest.approx(r.log_slem, abs=0.02)  # a generic perturbation excites lambda_2
    assert (r.limit_tv == 0).all()


def test_different_attractors_give_rate_zero():
    rng = np.random.default_rng(7)
    table = rng.normal(size=(4, 4))
    table[:2, 2:] = -np.inf
    table[2:, :2] = -np.inf
    o = sj.build_operator(sj.NGramModel(table), sj.StateSpace(4, 2))
    r = se.prompt_sensitivity(o, [0, 1], n=40, positions=[1])
    far = r.tokens >= 2  # the last token moved to the other block: another attractor
    assert np.allclose(r.limit_tv[far], 1.0) and np.allclose(r.limit_tv[~far], 0.0)
    assert np.allclose(r.state_tv[far], 1.0)
    assert np.all(np.abs(r.rates[far]) < 1e-9)


def test_lyapunov_rate_fit():
    t = np.arange(1, 41)
    rate, (t0, t1) = se.lyapunov_rate(3.0 * np.exp(-0.2 * t))
    assert rate == pytest.approx(-0.2, abs=1e-12) and (t0, t1) == (21, 40)
    d = np.exp(-3.0 * t)  # falls below the floor after 9 steps: the last points above it are used
    rate, _ = se.lyapunov_rate(d)
    assert rate == pytest.approx(-3.0, abs=1e-9)
    assert se.lyapunov_rate(np.array([0.5, 0.0, 0.0]))[0] == float("-inf")


# ------------------------------------------------------------------ properties
@pytest.mark.property
@given(n=st.integers(2, 3), length=st.integers(2, 3), seed=st.integers(0, 2**31 - 1),
       scale=st.sampled_from([0.5, 1.5, 3.0]))
def test_property_rate_below_log_slem(n, length, seed, scale):
    rng = np.random.default_rng(seed)
    p = np.exp(scale * rng.normal(size=(n, n)))  # order-1 positive chain: ergodic, aperiodic
    p /= p.sum(axis=1, keepdims=True)
    space = sj.StateSpace(n, length)
    probs = p[se.last_tokens(space)]  # the next token depends on the last one only
    o = sj.Operator(space, probs)
    s = int(rng.integers(space.num_full))
    r = se.prompt_sensitivity(o, s, n=80)
    assert (np.diff(r.state_tv, axis=1) <= 1e-13).all()
    assert (r.token_tv <= r.state_tv + 1e-13).all()
    assert r.log_rate_bound is not None
    for rate, asym in zip(r.rates, r.asymptotic):
        if asym:  # the spectral relation is asymptotic (see the module docstring)
            assert rate <= r.log_rate_bound + 0.05


# ------------------------------------------------------------------ agreement
def test_check_sensitivity_passes_for_the_right_operator_and_fails_for_a_wrong_one(op, ngram):
    prompt = [0, 1, 2, 1]
    good = check_sensitivity(op, ngram, prompt, t_values=(1, 2, 4), n_chains=2000, seed=0)
    assert good.passed, good.table()
    r = se.prompt_sensitivity(op, prompt, n=4)
    b = good.settings["perturbed"]
    i = int(np.flatnonzero(r.perturbed == b)[0])
    assert good.rows[-1].exact == pytest.approx(r.state_tv[i, 3])
    assert r.state_tv[i, 3] == pytest.approx(r.state_tv[:, 3].max())  # the default: the most sensitive one
    wrong = check_sensitivity(op.with_procedure("temperature=1.3"), ngram, prompt, perturbed=b, t_values=(1, 2, 4),
                              n_chains=2000, seed=0, procedure="temperature=1")
    assert wrong.failed, wrong.table()
