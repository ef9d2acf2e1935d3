"""Exact-vs-sampled agreement: the checks pass for the right operator and fail for a wrong one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

import semio_jax as sj
from semio_jax.agreement import (
    AgreementReport,
    CheckRow,
    absorption_by_horizon,
    check_basins,
    check_stationary,
    default_starts,
    draw_stationary_samples,
)

NEG = -np.inf


@pytest.fixture(scope="module")
def hub_model() -> sj.NGramModel:
    """N = 5, order 1. Tokens {0, 1} (group A) are only followed by A, {2, 3} (group B) only by B;
    the hub token 4 may be followed by anything. Two attractors (all-A and all-B windows); every
    window containing a 4 splits between them, and top-k of the hub row changes the split."""
    t = np.full((5, 5), NEG)
    t[0, :2] = [0.3, -0.2]
    t[1, :2] = [-0.5, 0.4]
    t[2, 2:4] = [0.1, 0.0]
    t[3, 2:4] = [0.6, -0.3]
    t[4] = [1.0, -0.5, 0.8, 0.2, 0.5]  # top 3: {0, 2, 4}; top 4 adds token 3
    return sj.NGramModel(t, context_length=3, name="hub")


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


# ---------------------------------------------------------------------- basins
# Full-state starts (no prefix phase) and one explicit horizon keep the rollouts to one compiled
# chunk per start; after the hub the chain stays there with probability ~0.27 per step, so after
# 60 steps the exact unabsorbed mass is ~1e-33.
HUB_STARTS = ([4, 4, 4], [0, 4, 4])


def test_default_starts_split_between_attractors(hub_model):
    op = sj.build_operator(hub_model, sj.StateSpace(5, 3), "top_k=3")
    assert len(sj.attractors(op)) == 2
    starts = default_starts(op, max_starts=3)
    assert len(starts) == 3 and all(sj.basins_result(op).reachable[s].sum() == 2 for s in starts)
    assert starts[0] == op.space.index([4])  # the one-token prompts come first


def test_check_basins_passes_for_the_right_operator(hub_model):
    op = sj.build_operator(hub_model, sj.StateSpace(5, 3), "top_k=3")
    starts = [op.space.index(t) for t in HUB_STARTS]
    rep = check_basins(op, hub_model, starts=starts, horizon=60, n_chains=2000, seed=0)
    assert rep.passed, rep.table()
    assert rep.settings["horizons"] == [60, 60] and rep.n_tests == 4


def test_check_basins_fails_for_top_k_off_by_one(hub_model):
    op = sj.build_operator(hub_model, sj.StateSpace(5, 3), "top_k=3")
    starts = [op.space.index(t) for t in HUB_STARTS]
    rep = check_basins(op, hub_model, starts=starts, procedure="top_k=4", horizon=60, n_chains=2000, seed=0)
    assert not rep.passed, rep.table()
    assert rep.min_p < 1e-6


def test_absorption_by_horizon(hub_model):
    op = sj.build_operator(hub_model, sj.StateSpace(5, 3), "top_k=3")
    s = sj.StateSpace(5, 3).index([4])
    h = sj.basins(op)[s]
    near = absorption_by_horizon(op, s, 400)
    assert near.shape == (3,) and abs(near.sum() - 1) < 1e-12
    np.testing.assert_allclose(near[:2], h, atol=1e-9)
    early = absorption_by_horizon(op, s, 1)  # one token after "4" is not yet a full state
    np.testing.assert_array_equal(early, [0.0, 0.0, 1.0])


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
