"""Transient evolution: state laws, token / n-gram marginals and string distributions vs brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import semio_jax as sj
from semio_jax.agreement import check_evolution
from semio_jax.analysis.evolution import evolve, initial_distribution, ngram_marginals, string_distribution, string_label, token_marginals
from semio_jax.testing.references import evolve_reference, strings_reference
from semio_jax.errors import NotStochasticError, PromptError, StateSpaceTooLargeError
from semio_jax.testing import operators


@pytest.fixture(scope="module")
def op3(ngram3):
    return sj.build_operator(ngram3, sj.StateSpace(3, 3), "temperature=1")


def _blocks(strings: np.ndarray, n_tokens: int, n: int, order: int) -> np.ndarray:
    """Marginals of every length-`order` block of the string law (brute force)."""
    full = strings.reshape((n_tokens,) * n) if n else strings
    out = []
    for i in range(n - order + 1):
        axes = tuple(a for a in range(n) if not i <= a < i + order)
        out.append(full.sum(axis=axes).ravel())
    return np.array(out)


@pytest.mark.parametrize("start", [[1], [2, 0], [0, 1, 2], 5])
def test_evolve_matches_dense_powers(op3, start):
    d0 = initial_distribution(op3, start)
    got = evolve(op3, start, 7)
    ref = evolve_reference(op3.probs, op3.successors, d0, 7)
    assert got.shape == (8, op3.num_states)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-14)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-13)


def test_start_forms_agree(op3):
    idx = op3.space.index([2, 1])
    d = np.zeros(op3.num_states)
    d[idx] = 1.0
    a = evolve(op3, idx, 4)
    np.testing.assert_array_equal(a, evolve(op3, [2, 1], 4))
    np.testing.assert_array_equal(a, evolve(op3, np.array([2, 1]), 4))
    np.testing.assert_array_equal(a, evolve(op3, d, 4))
    mix = np.zeros(op3.num_states)
    mix[[0, 5, 30]] = [0.5, 0.25, 0.25]
    want = sum(w * evolve(op3, int(s), 4) for s, w in zip([0, 5, 30], [0.5, 0.25, 0.25]))
    np.testing.assert_allclose(evolve(op3, mix, 4), want, atol=1e-15)


def test_strings_marginals_and_ngrams_match_brute_force(op3):
    n = 5
    for start in ([1], [0, 0], [2, 2, 1]):
        d0 = initial_distribution(op3, start)
        ref = strings_reference(op3.probs, op3.successors, d0, n)
        got = string_distribution(op3, start, n)
        np.testing.assert_allclose(got, ref, atol=1e-15)
        assert abs(got.sum() - 1.0) < 1e-13
        np.testing.assert_allclose(token_marginals(op3, start, n), _blocks(ref, 3, n, 1), atol=1e-14)
        for order in range(1, n + 1):  # orders <= L use the state marginal, > L the augmented push
            np.testing.assert_allclose(ngram_marginals(op3, start, n, order), _blocks(ref, 3, n, order),
                                       atol=1e-14, err_msg=f"order {order}")


def test_impossible_transition_has_zero_mass(op3):
    # ngram3 forbids token 2 after "00": from the prompt 00 the first token is never 2
    tm = token_marginals(op3, [0, 0], 3)
    assert tm[0, 2] == 0.0
    sd = string_distribution(op3, [0, 0], 2)
    assert sd[[2 * 3 + 0, 2 * 3 + 1, 2 * 3 + 2]].sum() == 0.0
    assert string_label(7, 3, 2) == "21"


def test_errors(op3):
    with pytest.raises(StateSpaceTooLargeError, match="2\\*\\*20"):
        string_distribution(op3, [1], 13)  # 3**13 > 2**20
    with pytest.raises(NotStochasticError):
        evolve(op3, np.full(op3.num_states, 0.5), 2)
    with pytest.raises(PromptError):
        evolve(op3, [0, 1, 2, 0], 2)  # longer than L=3
    with pytest.raises(PromptError):
        evolve(op3, [], 2)
    with pytest.raises(IndexError):
        evolve(op3, op3.num_states, 2)
    with pytest.raises(ValueError):
        ngram_marginals(op3, [1], 2, 3)


@pytest.mark.property
@given(op=operators(), data=st.data())
def test_property_evolution_matches_references(op, data):
    start = data.draw(st.integers(0, op.num_states - 1))
    n = data.draw(st.integers(0, 4 if op.n_tokens <= 2 else 3))
    d0 = initial_distribution(op, start)
    dists = evolve(op, start, n)
    np.testing.assert_allclose(dists, evolve_reference(op.probs, op.successors, d0, n), atol=1e-13)
    sd = string_distribution(op, start, n)
    np.testing.assert_allclose(sd, strings_reference(op.probs, op.successors, d0, n), atol=1e-14)
    if n:
        np.testing.assert_allclose(token_marginals(op, start, n), _blocks(sd, op.n_tokens, n, 1), atol=1e-13)
        order = data.draw(st.integers(1, n))
        np.testing.assert_allclose(ngram_marginals(op, start, n, order), _blocks(sd, op.n_tokens, n, order),
                                   atol=1e-13)


def test_check_evolution_passes_for_the_right_operator(op3, ngram3):
    rep = check_evolution(op3, ngram3, [1], 6, n_chains=2000, seed=0)
    assert rep.passed, rep.table()
    assert rep.n_tests >= 12 and rep.settings["seed"] == 0


def test_check_evolution_fails_for_a_perturbed_operator(op3, ngram3):
    wrong = op3.with_procedure("temperature=1.3")
    rep = check_evolution(wrong, ngram3, [1], 6, procedure="temperature=1", n_chains=2000, seed=0)
    assert rep.failed, rep.table()


@pytest.mark.slow
def test_zoo_dyck_marginals_and_check():
    from semio_models.checkpoint import load

    model = load("dyck")
    op = sj.build_operator(model, sj.StateSpace(3, 6), "temperature=1")
    start = [0]
    d0 = initial_distribution(op, start)
    sd = string_distribution(op, start, 4)
    np.testing.assert_allclose(sd, strings_reference(op.probs, op.successors, d0, 4), atol=1e-14)
    assert check_evolution(op, model, start, 8, n_chains=2000, seed=0).passed
