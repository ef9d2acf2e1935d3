"""Sampling procedures: the JAX map equals the loop reference; ties, order, specs, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import semio_jax as sj
from semio_jax.testing import references
from semio_jax import sampling as S
from semio_jax.core.procedure import exact_log_probabilities
from semio_jax.testing import logit_rows, procedures



# --------------------------------------------------------------- the oracle
@pytest.mark.property
@given(st.data())
def test_probabilities_equal_reference(data):
    """The operator's path (exact support decisions) equals the decimal oracle on every drawn case,
    near-boundary and tied ones included: nothing is filtered out."""
    logits = data.draw(logit_rows(min_batch=4, max_batch=4))  # one batch size: fewer JAX compilations
    proc = data.draw(procedures(logits.shape[1]))
    got = np.exp(exact_log_probabilities(proc, logits))
    ref = references.probabilities_reference(proc, logits)
    assert got.dtype == np.float64 and got.shape == logits.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    assert (got[np.isneginf(logits)] == 0).all(), "-inf logits must have probability 0"
    # the support is the same (not just close): truncation decisions agree
    np.testing.assert_array_equal(got > 0, ref > 0)


@pytest.mark.property
@given(st.data())
def test_jitted_map_agrees_with_the_exact_path_wherever_float64_can_decide(data):
    """The jitted map (the sampler's) decides in float64; where its own margin says the decision is
    safe it must equal the exact path, and rows it flags are the only ones that may differ."""
    logits = data.draw(logit_rows(n_tokens=4, min_batch=4, max_batch=4))
    proc = data.draw(procedures(logits.shape[1]))
    cube = logits.reshape(2, 2, -1)  # [..., N] with two batch axes
    np.testing.assert_allclose(np.asarray(proc.probabilities(cube)).reshape(4, -1),
                               np.asarray(proc.probabilities(logits)), rtol=0, atol=1e-15)
    _, margin = proc.keep_mask(logits)
    safe = np.asarray(margin > S.AMBIGUOUS).all(axis=-1)
    exact = np.exp(exact_log_probabilities(proc, logits))
    np.testing.assert_allclose(np.asarray(proc.probabilities(logits))[safe], exact[safe], rtol=0, atol=1e-14)


@st.composite
def tie_heavy_boundary_cases(draw):
    """Rows from a few repeated logit values (many ties, some -inf) with top-p / min-p set exactly at a
    boundary: p = the float64 mass of the first j tokens, or the ratio of two tokens' probabilities."""
    n = draw(st.integers(2, 5))
    values = draw(st.lists(st.sampled_from([0.0, 0.0, 1.0, 2.0, -3.0, 40.0, -np.inf]), min_size=n, max_size=n))
    if all(v == -np.inf for v in values):
        values[0] = 0.0
    z = np.array(values)
    t = draw(st.sampled_from([1.0, 0.5, 0.1, 2.0]))
    q = references.probabilities_reference(S.temperature(t), z[None])[0]
    order = sorted(range(n), key=lambda y: (-z[y], y))
    j = draw(st.integers(1, n))
    mass = float(sum(q[y] for y in order[:j]))
    kind = draw(st.sampled_from(["top_p", "min_p"]))
    if kind == "top_p":
        p = min(1.0, max(mass, 1e-300))
        proc = S.temperature(t) | S.top_p(p) if t != 1.0 else S.top_p(p)
    else:
        y = order[min(j, n) - 1]
        ratio = float(q[y] / q[order[0]]) if q[order[0]] > 0 else 1.0
        proc = S.temperature(t) | S.min_p(min(1.0, max(ratio, 1e-300))) if t != 1.0 else S.min_p(
            min(1.0, max(ratio, 1e-300)))
    return proc, z[None]


@pytest.mark.property
@given(tie_heavy_boundary_cases())
def test_exact_support_on_ties_and_boundaries(case):
    proc, logits = case
    got = exact_log_probabilities(proc, logits)
    ref = references.probabilities_reference(proc, logits)
    np.testing.assert_array_equal(np.isfinite(got), ref > 0)
    np.testing.assert_allclose(np.exp(got), ref, rtol=0, atol=1e-12)


@pytest.mark.property
@given(logit_rows(min_batch=4, max_batch=4, scale=200.0))
def test_top_p_one_is_the_identity(logits):
    """top_p(1) keeps every possible token, however small its probability (float64 sums used to drop
    everything below ~1e-16)."""
    np.testing.assert_array_equal(exact_log_probabilities(S.top_p(1.0), logits),
                                  exact_log_probabilities(S.temperature(1.0), logits))
    np.testing.assert_array_equal(np.isfinite(exact_log_probabilities(S.top_p(1.0), logits)), np.isfinite(logits))


def test_bigram_with_logits_40_apart_is_irreducible_at_top_p_one():
    model = sj.NGramModel(np.array([[40.0, 0.0], [0.0, 40.0]]))
    for spec in ("top_p=1", "temperature=1"):
        op = sj.build_operator(model, sj.StateSpace(2, 2), spec)
        assert len(sj.attractors(op)) == 1, spec


def test_tiny_temperature_never_overflows_into_a_wrong_support():
    z = np.array([[1e4, 0.0, -1.0]])
    with pytest.raises(sj.InvalidProcedureError, match="too small"):
        exact_log_probabilities(S.temperature(1e-305), z)
    lp = exact_log_probabilities(S.temperature(1e-3), z)  # shifted by the max: no +inf, the top token wins
    assert lp[0, 0] == 0.0 and np.isfinite(lp[0, 1:]).all()
    np.testing.assert_array_equal(np.asarray(S.temperature(1e-305).probabilities(z)), [[1.0, 0.0, 0.0]])


def test_float32_logits_are_promoted():
    z32 = np.array([[0.1, 0.2, 0.3]], dtype=np.float32)
    got = np.asarray(S.temperature(0.7).probabilities(z32))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, references.probabilities_reference(S.temperature(0.7), z32.astype(np.float64)),
                               rtol=0, atol=1e-15)


# ------------------------------------------------------------------- ties
def test_greedy_ties_go_to_lowest_id():
    z = np.array([[1.0, 3.0, 3.0, -np.inf], [2.0, 2.0, 2.0, 2.0], [-np.inf, -np.inf, 0.0, 0.0]])
    got = np.asarray(S.greedy().probabilities(z))
    np.testing.assert_array_equal(got, np.eye(4)[[1, 0, 2]])
    np.testing.assert_array_equal(references.probabilities_reference(S.greedy(), z), got)


def test_top_k_ties_go_to_lowest_id():
    z = np.array([[0.0, 5.0, 1.0, 5.0, 1.0]])
    np.testing.assert_array_equal(np.asarray(S.top_k(1).probabilities(z)), [[0, 1, 0, 0, 0]])
    p2 = np.asarray(S.top_k(2).probabilities(z))
    np.testing.assert_allclose(p2, [[0, 0.5, 0, 0.5, 0]], atol=1e-15)
    p3 = np.asarray(S.top_k(3).probabilities(z))  # the tie at logit 1.0: token 2 (lower id) is kept
    assert p3[0, 2] > 0 and p3[0, 4] == 0 and p3[0, 0] == 0
    np.testing.assert_allclose(p3, references.probabilities_reference(S.top_k(3), z), atol=1e-15)


def test_top_k_never_keeps_neg_inf():
    z = np.array([[0.0, -np.inf, -np.inf]])
    np.testing.assert_array_equal(np.asarray(S.top_k(3).probabilities(z)), [[1.0, 0.0, 0.0]])


def test_top_p_exact_boundary():
    # probabilities 0.5, 0.25, 0.25 (exact in binary). p = 0.5: token 0 alone reaches it.
    z = np.log(np.array([[0.5, 0.25, 0.25]]))
    np.testing.assert_allclose(np.asarray(S.top_p(0.5).probabilities(z)), [[1, 0, 0]], atol=1e-15)
    # p = 0.75: mass before token 1 is 0.5 < 0.75 -> kept; before token 2 is 0.75, not < 0.75 -> dropped
    np.testing.assert_allclose(np.asarray(S.top_p(0.75).probabilities(z)), [[2 / 3, 1 / 3, 0]], atol=1e-15)
    np.testing.assert_allclose(np.asarray(S.top_p(1.0).probabilities(z)), [[0.5, 0.25, 0.25]], atol=1e-15)
    # tie between tokens 1 and 2 at the boundary: the lower id is kept
    np.testing.assert_allclose(np.asarray(S.top_p(0.6).probabilities(z)), [[2 / 3, 1 / 3, 0]], atol=1e-15)


def test_min_p_keeps_ties_with_the_maximum():
    z = np.array([[1.0, 1.0, 0.0]])
    np.testing.assert_allclose(np.asarray(S.min_p(1.0).probabilities(z)), [[0.5, 0.5, 0]], atol=1e-15)


# ---------------------------------------------------------- composition
def test_composition_order_is_fixed():
    a = S.temperature(0.5) | S.top_k(2) | S.top_p(0.9) | S.min_p(0.1)
    b = S.min_p(0.1) | S.top_p(0.9) | S.top_k(2) | S.temperature(0.5)
    assert a == b == S.compose(S.top_k(2), S.min_p(0.1), S.temperature(0.5), S.top_p(0.9))
    assert hash(a) == hash(b)
    assert a.spec == "temperature=0.5,top_k=2,top_p=0.9,min_p=0.1"


def test_temperature_applies_before_top_p():
    # temperature changes the top-p set: at t=1 the top token has mass 0.73 < 0.8, so two tokens
    # are kept; at t=0.25 it has mass 0.98 >= 0.8, so it is kept alone.
    z = np.array([[1.0, 0.0, -np.inf]])
    assert (np.asarray((S.top_p(0.8)).probabilities(z)) > 0).sum() == 2
    assert (np.asarray((S.temperature(0.25) | S.top_p(0.8)).probabilities(z)) > 0).sum() == 1


def test_top_k_applies_before_top_p_and_min_p():
    z = np.log(np.array([[0.4, 0.3, 0.2, 0.1]]))
    # top_k=2 renormalises to (4/7, 3/7); top_p=0.5 then keeps token 0 only
    np.testing.assert_allclose(np.asarray((S.top_k(2) | S.top_p(0.5)).probabilities(z)), [[1, 0, 0, 0]],
                               atol=1e-15)
    # without top_k, top_p=0.5 keeps tokens 0 and 1 (mass before token 1 is 0.4 < 0.5)
    np.testing.assert_allclose(np.asarray(S.top_p(0.5).probabilities(z)), [[4 / 7, 3 / 7, 0, 0]], atol=1e-15)
    # min_p after top_p: top_p=0.95 keeps 0,1,2 (renormalised 4/9, 3/9, 2/9); min_p=0.6 keeps q >= 0.6 * 4/9
    got = np.asarray((S.top_p(0.95) | S.min_p(0.6)).probabilities(z))
    np.testing.assert_allclose(got, [[4 / 7, 3 / 7, 0, 0]], atol=1e-15)


def test_greedy_ignores_other_stages():
    z = np.array([[0.0, 2.0, 1.0]])
    p = S.greedy() | S.temperature(3.0) | S.top_p(0.5)
    np.testing.assert_array_equal(np.asarray(p.probabilities(z)), [[0, 1, 0]])
    assert p.is_deterministic and S.top_k(1).is_deterministic and not S.top_k(2).is_deterministic


def test_compose_rejects_conflicts():
    with pytest.raises(sj.InvalidProcedureError, match="set twice"):
        S.compose(S.top_k(2), S.top_k(3))
    with pytest.raises(sj.InvalidProcedureError):
        S.compose(S.top_k(2), "top_p=0.5")
    assert S.compose(S.top_k(2), S.top_k(2)) == S.top_k(2)


def test_log_probabilities():
    z = np.array([[0.0, 1.0, -np.inf]])
    lp = np.asarray((S.top_k(2) | S.temperature(2.0)).log_probabilities(z))
    assert np.isneginf(lp[0, 2])
    np.testing.assert_allclose(np.exp(lp), references.probabilities_reference(S.top_k(2) | S.temperature(2.0), z),
                               atol=1e-15)


# ------------------------------------------------------------------ specs
@pytest.mark.property
@given(procedures(5))
def test_spec_round_trip(proc):
    back = S.parse(proc.spec)
    assert back.spec == proc.spec
    if not proc.greedy:
        assert back == proc  # exact, also for floats that :g would round
    z = np.array([[0.3, -1.0, 2.0, 2.0, -np.inf]])
    np.testing.assert_array_equal(np.asarray(back.probabilities(z)), np.asarray(proc.probabilities(z)))
    assert S.parse(proc) is proc
    assert str(proc) == proc.spec
    assert S.Procedure(**proc.to_dict()) == proc


def test_spec_examples():
    assert S.parse("temperature=0.8,top_k=3").spec == "temperature=0.8,top_k=3"
    assert S.parse("t=0.8, k=3") == S.temperature(0.8) | S.top_k(3)
    assert S.parse("greedy") == S.greedy()
    assert S.parse("top_p=0.9").top_p == 0.9
    assert S.parse("minp=0.05").min_p == 0.05
    assert S.parse("k=2.0").top_k == 2
    assert S.Procedure().spec == "temperature=1"
    assert S.temperature(2.0).spec == "temperature=2"
    assert S.temperature(1 / 3).spec == f"temperature={1 / 3!r}"  # :g would lose digits


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("make", [
    lambda: S.temperature(0.0),
    lambda: S.temperature(-1.0),
    lambda: S.temperature(math.inf),
    lambda: S.temperature(math.nan),
    lambda: S.top_k(0),
    lambda: S.top_k(-2),
    lambda: S.top_k(2.5),
    lambda: S.top_k(True),
    lambda: S.top_p(0.0),
    lambda: S.top_p(1.5),
    lambda: S.top_p(-0.1),
    lambda: S.top_p(math.nan),
    lambda: S.min_p(0.0),
    lambda: S.min_p(1.01),
    lambda: S.Procedure(top_k=1.5),
    lambda: S.Procedure(temperature=0),
    # wrong types name the parameter instead of leaking a bare TypeError/ValueError from float()
    lambda: S.temperature(None),
    lambda: S.temperature("hot"),
    lambda: S.top_p("abc"),
    lambda: S.min_p([0.1]),
    lambda: S.top_p(True),
])
def test_invalid_parameters(make):
    with pytest.raises(sj.InvalidProcedureError):
        make()


def test_top_k_larger_than_alphabet():
    with pytest.raises(sj.InvalidProcedureError, match="exceeds the alphabet size"):
        S.top_k(4).validate_for(3)
    assert S.top_k(3).validate_for(3) == S.top_k(3)
    with pytest.raises(sj.InvalidProcedureError):
        sj.build_operator(sj.NGramModel(np.zeros((3, 3))), sj.StateSpace(3, 1), "top_k=4")


@pytest.mark.parametrize("spec", [
    "", "   ", "temperature", "temperature=abc", "top_k=2.5", "top_k=x", "foo=1", "greedy=1",
    "temperature=0", "top_p=0", "top_p=2", "min_p=-1", "top_k=0", "t=0.5,t=0.7", "=3", None, 3,
    "greedy,temperature=0.5", "top_p=0.5,greedy",  # greedy would ignore the rest: refused
])
def test_bad_specs(spec):
    with pytest.raises(sj.InvalidProcedureError):
        S.parse(spec)


def test_errors_are_value_errors():
    assert issubclass(sj.InvalidProcedureError, ValueError) and issubclass(sj.InvalidProcedureError, sj.SemioError)
