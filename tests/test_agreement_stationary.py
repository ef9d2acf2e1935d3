"""Exact-vs-sampled agreement of stationary laws (semio_jax.agreement.stationary): the check passes for the
right operator and fails for a wrong one; its false-alarm rate is calibrated."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

import semio_jax as sj
from semio_jax.agreement import (
    AgreementReport,
    CheckRow,
    check_stationary,
    draw_stationary_samples,
)


# ------------------------------------------------------------------ stationary
def test_check_stationary_passes_for_the_right_operator(ngram3):
    op = sj.build_operator(ngram3, sj.StateSpace(3, 3), "temperature=1")
    rep = check_stationary(op, ngram3, n_chains=64, n_steps=1000, seed=0)
    assert isinstance(rep, AgreementReport)
    assert rep.passed, rep.table()
    assert rep.n_tests == len(rep.rows) > 5 and rep.threshold == pytest.approx(0.01 / rep.n_tests)
    assert all(isinstance(r, CheckRow) for r in rep.rows)
    d = rep.to_dict()
    assert d["passed"] and d["settings"]["seed"] == 0 and d["settings"]["procedure"] == "temperature=1"
    assert "PASS" in rep.table()


def test_check_stationary_fails_for_a_wrong_temperature(ngram3):
    """The exact operator at temperature 1.2, the chains sampled at 1.0: the check must fail."""
    op = sj.build_operator(ngram3, sj.StateSpace(3, 3), "temperature=1.2")
    rep = check_stationary(op, ngram3, procedure="temperature=1.0", n_chains=64, n_steps=1000, seed=0)
    assert not rep.passed, rep.table()
    assert rep.failures() and rep.min_p < 1e-6
    assert "FAIL" in rep.table()


@pytest.fixture(scope="module")
def oldest_token_model() -> sj.NGramModel:
    """N = 2, L = 3, order 3: p(1 | a b c) = 0.5 + 0.2 (2a - 1)(2c - 1), oldest token a.

    Averaged over a every row is a fair coin, so the stationary law is uniform on the 8 windows; the
    model shown only the last L - 1 tokens (the calibration's "window L-1" mistake; NGramModel
    averages over a missing oldest token) is a fair coin, whose stationary law is uniform too. Every
    n-gram frequency and state probability is the same for both: only the transitions differ (row TV 0.2).
    """
    a, _, c = np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij")
    p1 = 0.5 + 0.2 * (2 * a - 1) * (2 * c - 1)
    return sj.NGramModel(np.log(np.stack([1 - p1, p1], axis=-1)), context_length=3, name="oldest-token")


def _window_minus_one(model) -> sj.FunctionModel:
    def fn(contexts):
        return model(contexts if contexts.shape[1] < 3 else contexts[:, 1:])

    return sj.FunctionModel(fn, model.n_tokens, 3, jittable=True, name="window-L-1")


def test_transition_rows_catch_a_mistake_invisible_to_pi(oldest_token_model):
    """The pi-based rows pass the 'window L-1' operator (its pi is exactly right); the transition rows fail it.
    The right operator passes on the same chains, for each of a few seeds."""
    space = sj.StateSpace(2, 3)
    right = sj.build_operator(oldest_token_model, space, "temperature=1")
    wrong = sj.build_operator(_window_minus_one(oldest_token_model), space, "temperature=1")
    np.testing.assert_allclose(sj.stationary(wrong), sj.stationary(right), atol=1e-6)  # same pi: uniform
    assert np.abs(wrong.probs[:8] - right.probs[:8]).max() == pytest.approx(0.2, abs=1e-6)
    for seed in range(3):
        sample = draw_stationary_samples(right, oldest_token_model, n_chains=16, n_steps=300, seed=seed)
        good = check_stationary(right, None, sample=sample)
        assert good.passed, good.table()
        assert sum("transitions" in r.quantity for r in good.rows) == 3
        old_rows = check_stationary(wrong, None, sample=sample, transitions=False)
        assert old_rows.passed, old_rows.table()  # what the check saw before the transition rows
        bad = check_stationary(wrong, None, sample=sample)
        assert not bad.passed, bad.table()
        failed = {r.quantity for r in bad.failures()}
        assert "A0: transitions per visited state (chi2)" in failed and all("transitions" in q for q in failed)
        assert bad.min_p < 1e-10


def test_transition_rows_fail_on_a_forbidden_transition(ngram3):
    """A sampled transition the exact operator forbids is an immediate failure of its own row."""
    space = sj.StateSpace(3, 3)
    op = sj.build_operator(ngram3, space, "temperature=1")
    sample = draw_stationary_samples(op, ngram3, n_chains=8, n_steps=200, seed=1)
    probs = np.array(op.probs)
    visited, counts = sample[0].transitions()
    s, y = visited[0], int(np.argmax(counts[0]))  # a transition the chains made
    probs[s] = 0.0
    probs[s, (y + 1) % 3] = 1.0  # ... now forbidden by the exact side
    bad = sj.Operator(space, probs, op.procedure)
    rep = check_stationary(bad, None, sample=sample)
    forbidden = [r for r in rep.rows if "forbids" in r.quantity]
    assert len(forbidden) == 1 and forbidden[0].p_value == 0.0 and not rep.passed
    assert forbidden[0].estimate == counts[0, y]


def test_transition_rows_need_recorded_transitions(ngram3):
    op = sj.build_operator(ngram3, sj.StateSpace(3, 3), "temperature=1")
    sample = draw_stationary_samples(op, ngram3, n_chains=4, n_steps=100, seed=0)
    bare = dataclasses.replace(sample[0], transition_keys=None, transition_counts=None)
    with pytest.raises(ValueError, match="carry no transitions"):
        check_stationary(op, None, sample=bare)
    rep = check_stationary(op, None, sample=bare, transitions=False)
    assert not any("transitions" in r.quantity for r in rep.rows)


# ----------------------------------------------------------------- calibration
def test_false_alarm_rate_is_calibrated(coin_ngram):  # ~2 s (samplers are shared), so not marked slow
    """20 independent checks of a CORRECT operator at level 0.05: false alarms ~ Binomial(20, <= 0.05).

    P(Binomial(20, 0.05) <= 4) = 0.99743 (scipy.stats.binom.cdf(4, 20, 0.05)), so with a calibrated
    (or conservative, thanks to Bonferroni) check this fails with probability < 0.3%; the seeds are
    fixed, so the outcome is reproducible.
    """
    op = sj.build_operator(coin_ngram, sj.StateSpace(2, 2), "temperature=1")
    alarms = 0
    for seed in range(20):
        rep = check_stationary(op, coin_ngram, n_chains=32, n_steps=300, seed=seed, level=0.05)
        alarms += not rep.passed
    assert stats.binom.cdf(4, 20, 0.05) > 0.997
    assert alarms <= 4, alarms
