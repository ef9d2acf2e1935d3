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
    assert rep.failed, rep.table()
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
        assert bad.failed, bad.table()
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
# A check whose true false-alarm rate is at most the level alpha = 0.2 gives alarms ~ Binomial(100, <= 0.2) over
# 100 independent seeds: more than 31 has probability 0.0031 (scipy.stats.binom.sf(31, 100, 0.2)). A check
# whose rate is twice the level, 0.4, gives at most 31 with probability 0.040 (binom.cdf(31, 100, 0.4)): this
# test fails it 96% of the time. (At alpha = 0.05 the same power needs 470 seeds.) The seeds are fixed.
ALARM_SEEDS, ALARM_LEVEL, ALARM_MAX = 100, 0.2, 31


def _alarms(op, model, n_chains, n_steps):
    return sum(check_stationary(op, model, n_chains=n_chains, n_steps=n_steps, seed=seed, level=ALARM_LEVEL).failed
               for seed in range(ALARM_SEEDS))


def test_false_alarm_bound_separates_the_level_from_twice_the_level():
    assert stats.binom.sf(ALARM_MAX, ALARM_SEEDS, ALARM_LEVEL) < 0.005
    assert stats.binom.cdf(ALARM_MAX, ALARM_SEEDS, 2 * ALARM_LEVEL) < 0.05


def test_false_alarm_rate_is_at_most_the_level(coin_ngram):
    """100 checks of a CORRECT operator (a sticky coin, relaxation time ~1.7 steps) at family-wise level 0.2."""
    op = sj.build_operator(coin_ngram, sj.StateSpace(2, 2), "temperature=1")
    alarms = _alarms(op, coin_ngram, 32, 300)
    assert alarms <= ALARM_MAX, alarms


def test_false_alarm_rate_is_at_most_the_level_on_a_slowly_mixing_chain():
    """The same on a chain with a sticky phase (pi(1) = 0.2, relaxation time 100 steps, sojourns of 125 steps):
    runs of 1000 steps are a few relaxation times long, where the replica t test of the frequencies was
    anti-conservative. At this budget the frequency rows sit at the budget rule's edge (about 100 excursions)."""
    p = np.array([[0.998, 0.002], [0.008, 0.992]])
    model = sj.NGramModel(np.log(p), context_length=1, name="sticky-phase")
    op = sj.build_operator(model, sj.StateSpace(2, 1), "temperature=1")
    assert float(sj.spectral_gap(op).relaxation_time[0]) == pytest.approx(100.0, rel=1e-6)
    first = check_stationary(op, model, n_chains=64, n_steps=1000, seed=0, level=ALARM_LEVEL)
    assert any("1-gram" in r.quantity for r in first.rows), first.table()  # the frequencies are tested
    alarms = _alarms(op, model, 64, 1000)
    assert alarms <= ALARM_MAX, alarms


# ------------------------------------------------------------------ budget rule
def test_a_budget_with_no_test_is_inconclusive_with_the_budget_needed(ngram3):
    op = sj.build_operator(ngram3, sj.StateSpace(3, 3), "temperature=1")
    rep = check_stationary(op, ngram3, n_chains=2, n_steps=10, seed=0)
    assert rep.n_tests == 0 and rep.inconclusive and not rep.passed and rep.verdict == "INCONCLUSIVE"
    assert any("supports no test" in r and "chains x 10 steps" in r for r in rep.reasons())
    assert "INCONCLUSIVE" in rep.table()


@pytest.fixture(scope="module")
def rare_phase():
    """Issue 13's chain: P(1|0) = 5e-5, P(0|1) = 2e-3 (relaxation time ~490, pi(1) ~ 0.024)."""
    model = sj.NGramModel(np.log(np.array([[1 - 5e-5, 5e-5], [2e-3, 1 - 2e-3]])), context_length=1, name="rare")
    return model, sj.build_operator(model, sj.StateSpace(2, 1), "temperature=1")


def test_rare_phase_frequencies_wait_for_the_budget_they_need(rare_phase):
    """At the default budget the rare phase is seen in ~8 excursions: its frequency is not tested (the transition
    rows are), and the note names the chains needed; at that many chains (same steps) it is tested."""
    model, op = rare_phase
    sample = draw_stationary_samples(op, model, n_chains=64, n_steps=2000, seed=0)
    rep = check_stationary(op, None, sample=sample)
    assert not any("gram" in r.quantity or "pi(" in r.quantity for r in rep.rows)
    assert rep.n_tests >= 1 and not rep.inconclusive  # the transition rows are valid tests
    need = rep.settings["frequencies"][0]["chains_needed"]
    assert 300 < need < 3000 and f"{need:.3g} chains x 2000 steps" in " ".join(rep.notes)
    # the rule is decided from the exact operator alone: at ceil(need) chains the frequencies are tested
    big = draw_stationary_samples(op, model, n_chains=int(np.ceil(need)), n_steps=2000, seed=0)
    rep_big = check_stationary(op, None, sample=big)
    assert sum("1-gram" in r.quantity for r in rep_big.rows) == 2, rep_big.table()
    assert rep_big.settings["untested_rare"] == 0


def test_exact_variance_rows_fail_a_wrong_pi_on_a_slow_chain(rare_phase):
    """With the frequencies tested, a rare phase whose exact mass is about twice the true one fails on its
    frequency rows (transition rows off, to see the frequency rows alone)."""
    model, op = rare_phase
    p = np.array(op.probs)
    p[0] = [1 - 1e-4, 1e-4]  # the exact side enters the rare phase twice as often: pi(1) 0.048, not 0.024
    wrong = sj.Operator(op.space, p, op.procedure)
    sample = draw_stationary_samples(op, model, n_chains=1024, n_steps=2000, seed=1)
    rep = check_stationary(wrong, None, sample=sample, transitions=False)
    assert rep.failed and any("1-gram" in r.quantity for r in rep.failures()), rep.table()
    assert check_stationary(op, None, sample=sample, transitions=False).passed


def test_common_frequencies_wait_for_the_slow_phase_to_be_seen():
    """Tokens 0, 1 mix fast among themselves; token 2 is a sticky phase of mass 2% entered every ~5e5 steps
    (relaxation time 1e4). The common tokens' frequencies pass the n_eff rule at 64 x 2000, yet they move with the
    one or two excursions into token 2 the run sees: the relaxation-time part of the rule holds every frequency
    back (C n m / t_rel = 0.26 < 100), and the report names the budget that would test them."""
    enter, leave = 0.02 / 1e4, 0.98 / 1e4
    p = np.array([[0.6 * (1 - enter), 0.4 * (1 - enter), enter],
                  [0.3 * (1 - enter), 0.7 * (1 - enter), enter],
                  [0.5 * leave, 0.5 * leave, 1 - leave]])
    model = sj.NGramModel(np.log(p), context_length=1, name="slow-phase")
    op = sj.build_operator(model, sj.StateSpace(3, 1), "temperature=1")
    t_rel = float(sj.spectral_gap(op).relaxation_time[0])
    assert t_rel == pytest.approx(1e4, rel=0.01)
    sample = draw_stationary_samples(op, model, n_chains=64, n_steps=2000, seed=0)
    rep = check_stationary(op, None, sample=sample)
    info = rep.settings["frequencies"][0]
    assert info["excursions"] == pytest.approx(64 * 2000 * 0.02 / t_rel, rel=1e-6)
    assert info["tested"] == 0 and not any("gram" in r.quantity for r in rep.rows)
    assert info["chains_needed"] >= 100 * t_rel / (2000 * 0.02) - 1
    loose = check_stationary(op, None, sample=sample, min_excursions=0)
    assert any("1-gram 0" in r.quantity for r in loose.rows)  # the n_eff rule alone would test token 0
