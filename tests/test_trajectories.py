"""Trajectory probabilities and decoders (MAP by dynamic programming, greedy, beam) vs brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import semio_jax as sj
from semio_jax.agreement import check_trajectories
from semio_jax.analysis.evolution import string_distribution
from semio_jax.analysis.trajectories import beam_search, compare_decoders, greedy_trajectory, map_trajectory, trajectory_probability
from semio_jax.testing.references import map_reference
from semio_jax.errors import PromptError, UnknownTokenError
from semio_jax.testing import operators


@pytest.fixture(scope="module")
def op3(ngram3):
    return sj.build_operator(ngram3, sj.StateSpace(3, 3), "temperature=1")


@pytest.mark.parametrize("start", [[1], [0, 0], [2, 1, 0], [0, 0, 0]])
def test_map_matches_brute_force(op3, start):
    s0 = op3.space.index(start)
    for n in range(0, 7):
        got = map_trajectory(op3, start, n)
        tokens, lp = map_reference(op3.probs, op3.successors, s0, n)
        np.testing.assert_array_equal(got.tokens, tokens)
        assert got.log_prob == lp and got.start == s0 and got.decoder == "map"
        if n <= 5:
            assert got.prob == pytest.approx(string_distribution(op3, start, n).max(), rel=1e-12)


def test_trajectory_probability_matches_string_distribution(op3):
    sd = string_distribution(op3, [2], 4)
    for idx in (0, 17, 40, 80):
        word = np.unravel_index(idx, (3,) * 4)
        tr = trajectory_probability(op3, [2], word)
        assert tr.prob == pytest.approx(sd[idx], rel=1e-12, abs=1e-300)
        assert tr.log2_prob == pytest.approx(tr.log_prob / math.log(2))
    # impossible string: token 2 after "00"
    assert trajectory_probability(op3, [0, 0], [2]).log_prob == -math.inf
    assert trajectory_probability(op3, [0, 0], [2]).prob == 0.0
    # a distribution start mixes the string probabilities
    d = np.zeros(op3.num_states)
    d[[op3.space.index([1]), op3.space.index([2])]] = 0.5
    want = 0.5 * (trajectory_probability(op3, [1], [0, 1]).prob + trajectory_probability(op3, [2], [0, 1]).prob)
    assert trajectory_probability(op3, d, [0, 1]).prob == pytest.approx(want, rel=1e-14)


def test_decoder_ordering_and_special_widths(op3):
    for start in ([1], [2, 2], [0, 1, 2]):
        for n in (1, 4, 7):
            best = map_trajectory(op3, start, n)
            greedy = greedy_trajectory(op3, start, n)
            assert best.log_prob >= greedy.log_prob - 1e-12
            for width in (1, 2, 3, 5):
                beam = beam_search(op3, start, n, width)
                assert best.log_prob >= beam.log_prob - 1e-12
            b1 = beam_search(op3, start, n, 1)
            np.testing.assert_array_equal(b1.tokens, greedy.tokens)
            assert b1.log_prob == pytest.approx(greedy.log_prob, abs=1e-12)
            full = beam_search(op3, start, n, 3 ** max(n - 1, 0))  # exhaustive
            assert full.log_prob == pytest.approx(best.log_prob, abs=1e-12)


def test_greedy_and_narrow_beams_can_miss_the_map_string():
    # after 2: token 1 is likelier (0.55) but leads to a coin flip; token 0 (0.45) is followed by 0 surely
    with np.errstate(divide="ignore"):
        table = np.log(np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.45, 0.55, 0.0]]))
    op = sj.build_operator(sj.NGramModel(table), sj.StateSpace(3, 1), "temperature=1")
    cmp = compare_decoders(op, [2], 2, width=1)
    assert cmp.greedy.tokens.tolist() == [1, 0] and cmp.greedy.prob == pytest.approx(0.275, rel=1e-6)
    assert cmp.beam.tokens.tolist() == [1, 0]
    assert cmp.map.tokens.tolist() == [0, 0] and cmp.map.prob == pytest.approx(0.45, rel=1e-6)
    assert beam_search(op, [2], 2, 2).tokens.tolist() == [0, 0]
    summary = cmp.summary()
    assert not summary["greedy_is_map"] and not summary["beam_is_map"]
    assert "map" in cmp.table() and "greedy" in cmp.table()


def test_ties_go_to_the_lowest_token_id():
    op = sj.build_operator(sj.NGramModel(np.zeros((3, 3))), sj.StateSpace(3, 2), "temperature=1")
    for fn in (lambda: map_trajectory(op, [2], 5), lambda: greedy_trajectory(op, [2], 5),
               lambda: beam_search(op, [2], 5, 4)):
        tr = fn()
        assert tr.tokens.tolist() == [0] * 5
        assert tr.log_prob == pytest.approx(5 * math.log(1 / 3), rel=1e-14)
    beams = beam_search(op, [2], 2, 4, return_all=True)
    assert [b.tokens.tolist() for b in beams] == [[0, 0], [0, 1], [0, 2], [1, 0]]


def test_errors(op3):
    with pytest.raises(PromptError):
        map_trajectory(op3, sj.stationary(op3)[0], 3)
    with pytest.raises(UnknownTokenError):
        trajectory_probability(op3, [1], [3])
    with pytest.raises(ValueError):
        beam_search(op3, [1], 3, 0)


@pytest.mark.property
@given(op=operators(), data=st.data())
def test_property_decoders(op, data):
    start = data.draw(st.integers(0, op.num_states - 1))
    n = data.draw(st.integers(0, 4 if op.n_tokens <= 2 else 3))
    best = map_trajectory(op, start, n)
    _, lp = map_reference(op.probs, op.successors, start, n)
    assert best.log_prob == lp  # same float operations, so exactly equal
    assert trajectory_probability(op, start, best.tokens).log_prob == pytest.approx(lp, abs=1e-12)
    greedy = greedy_trajectory(op, start, n)
    assert best.log_prob >= greedy.log_prob - 1e-12
    width = data.draw(st.integers(1, 5))
    beam = beam_search(op, start, n, width)
    assert best.log_prob >= beam.log_prob - 1e-12
    assert trajectory_probability(op, start, beam.tokens).log_prob == pytest.approx(beam.log_prob, abs=1e-12)
    b1 = beam_search(op, start, n, 1)
    np.testing.assert_array_equal(b1.tokens, greedy.tokens)


def test_check_trajectories_passes_for_the_right_operator(op3, ngram3):
    rep = check_trajectories(op3, ngram3, [1], 5, n_chains=2000, seed=0)
    assert rep.passed, rep.table()
    assert rep.rows[0].note == "map" and rep.settings["map_tokens"] == map_trajectory(op3, [1], 5).tokens.tolist()


def test_check_trajectories_fails_for_a_perturbed_operator(op3, ngram3):
    wrong = op3.with_procedure("temperature=1.3")
    rep = check_trajectories(wrong, ngram3, [1], 5, procedure="temperature=1", n_chains=2000, seed=0)
    assert rep.failed, rep.table()


@pytest.mark.slow
def test_zoo_dyck_map_matches_brute_force():
    from semio_models.checkpoint import load

    model = load("dyck")
    op = sj.build_operator(model, sj.StateSpace(3, 6), "temperature=1")
    s0 = op.space.index([0])
    for n in (1, 3, 6):
        best = map_trajectory(op, s0, n)
        tokens, lp = map_reference(op.probs, op.successors, s0, n)
        np.testing.assert_array_equal(best.tokens, tokens)
        assert best.log_prob == lp
    assert check_trajectories(op, model, [0], 6, n_chains=2000, seed=0).passed


@pytest.mark.parametrize("prompt", [[1], [2, 0, 1]])
def test_sequence_log_probs_rescore_sampled_paths_with_the_model(op3, ngram3, prompt):
    from semio_jax.montecarlo import Sampler
    from semio_jax.montecarlo.estimators import sequence_log_probs

    prompts = np.tile(prompt, (16, 1))
    ys = Sampler(ngram3, "temperature=1", 3, 3).sample(prompts, 7, seed=3)
    lp = sequence_log_probs(ngram3, "temperature=1", 3, prompts, ys, batch_size=10)  # ragged batches on purpose
    for c in range(16):
        want = trajectory_probability(op3, prompt, ys[c]).log_prob
        assert lp[c].sum() == pytest.approx(want, abs=1e-12)


def test_check_trajectories_t_row_needs_enough_chains(op3, ngram3):
    few = check_trajectories(op3, ngram3, [1], 5, n_chains=50, seed=0)
    assert few.inconclusive and all("E[log P" not in r.quantity for r in few.rows)
    assert few.rows[0].note == "map" and any("at least 100 chains" in r for r in few.reasons())
