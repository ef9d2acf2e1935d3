"""Exact where the dynamics matter most: chains whose transitions underflow float64.

Every expectation comes from an independent computation in arbitrary precision
(``semio_jax.testing.references.stationary_highprec``: mpmath softmax from the exact
float logits, textbook GTH at 60 digits) or from plain graph search on the finite
logits, never from the engine's own float64 table.
"""

from __future__ import annotations

import importlib

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import semio_jax as sj
from semio_jax.testing import references

stationary_mod = importlib.import_module("semio_jax.analysis.stationary")


def _true_classes(op) -> list[list[int]]:
    """Closed classes of the graph of every finite logit (temperature-only: every finite logit is possible)."""
    succ = op.successors
    edges = {s: {int(succ[s, y]) for y in range(op.n_tokens) if np.isfinite(op.logits[s, y])}
             for s in range(op.num_states)}
    return references.closed_classes_reference(edges)


def _check_against_highprec(op, t: float):
    res = sj.stationary_result(op)
    classes = _true_classes(op)
    assert [list(map(int, a)) for a in sj.attractors(op)] == classes
    for i, members in enumerate(classes):
        exact = references.stationary_highprec(op.logits, t, op.successors, members)
        order = np.argsort(members)
        got = np.exp(res.log_values[i])  # log form: entries below the float64 range are kept
        l1 = float(mpmath.fsum(abs(mpmath.mpf(float(res.values[i][k])) - exact[order[k]])
                               for k in range(len(members))))
        assert l1 <= 1e-12, l1
        for k in range(len(members)):
            e = exact[order[k]]
            if e > mpmath.mpf("1e-200"):
                log_err = abs(float(res.log_values[i][k] - mpmath.log(e)))
                assert log_err <= 1e-6, (k, float(e), got[k])
        assert res.error_bounds[i] is not None and l1 <= res.error_bounds[i]
    return res


@pytest.mark.parametrize("seed", range(3))
def test_underflowing_ngram_chain_matches_high_precision(seed):
    """An order-2 n-gram with logit gaps up to ~20 at t = 0.02: transitions down to ~1e-400, zero in
    float64. Every finite logit is a possible move, so the chain is one irreducible class."""
    rng = np.random.default_rng(seed)
    table = rng.normal(scale=12.0, size=(3, 3, 3))
    model = sj.NGramModel(table)
    t = 0.02
    op = sj.build_operator(model, sj.StateSpace(3, 3), f"temperature={t}")
    assert op.underflow  # some possible transition is 0.0 in float64
    assert op.support.all()
    res = _check_against_highprec(op, t)
    assert len(res) == 1 and res.methods == ["gth (log domain)"]
    assert min(float(v.min()) for v in res.log_values) < -745  # entries below the float64 range, in log form


def test_two_logits_fifty_apart_at_t_005_form_one_class():
    """The issue's example: a model whose logits differ by 50 at t = 0.05 moves with probability
    ~1e-435; the exact chain is one irreducible class, not the cycles of a deterministic map."""
    model = sj.NGramModel(np.array([[50.0, 0.0], [0.0, 50.0]]))
    op = sj.build_operator(model, sj.StateSpace(2, 3), "temperature=0.05")
    assert not op.is_deterministic and op.underflow
    assert [len(a) for a in sj.attractors(op)] == [8]
    _check_against_highprec(op, 0.05)


def test_chain_leaving_a_state_with_probability_1e_309():
    """Three states (L = 1); state 0 leaves with probability ~1e-309 (a subnormal in float64):
    GTH used to divide by an underflowed rate and return NaN for every entry."""
    logits = np.array([[0.0, np.log(1e-309), -np.inf],
                       [0.0, -np.inf, 0.0],
                       [0.0, 0.0, 0.0]], dtype=np.float32)
    model = sj.NGramModel(logits.astype(np.float64))
    op = sj.build_operator(model, sj.StateSpace(3, 1), "temperature=1")
    res = _check_against_highprec(op, 1.0)
    assert all(np.isfinite(v).all() for v in res.values)


def test_a_nan_from_a_solver_is_never_a_result(monkeypatch):
    """If the float64 elimination returns a non-finite vector, auto moves on to the log domain."""
    model = sj.NGramModel(np.random.default_rng(1).normal(size=(2, 2, 2)))
    op = sj.build_operator(model, sj.StateSpace(2, 3), "temperature=1")
    monkeypatch.setattr(stationary_mod, "gth", lambda block, panel=64: np.full(block.shape[0], np.nan))
    res = sj.stationary_result(op)
    assert res.methods == ["gth (log domain)"]
    assert all(np.isfinite(v).all() for v in res.values)
    _check_against_highprec(op, 1.0)


def test_large_class_with_unrepresentable_transitions_is_flagged(monkeypatch):
    model = sj.NGramModel(np.array([[50.0, 0.0], [0.0, 50.0]]))
    op = sj.build_operator(model, sj.StateSpace(2, 3), "temperature=0.05")
    monkeypatch.setattr(stationary_mod, "GTH_MAX", 4)  # as if the class were beyond the log-domain limit
    with pytest.warns(sj.UnrepresentableWarning, match="not certified"):
        res = stationary_mod.stationary_result.__wrapped__(op)
    assert res.unrepresentable == [True] and res.error_bounds == [None]


def test_dyck_at_t_001_has_every_window_recurrent():
    """The zoo's dyck model at t = 0.01: all 729 windows are recurrent for the model (the float64
    table used to report one attractor of 134 states)."""
    from semio_models.checkpoint import load

    op = sj.build_operator(load("dyck"), sj.StateSpace(3, 6), "temperature=0.01")
    assert [len(a) for a in sj.attractors(op)] == [729]
    assert [sorted(map(int, a)) for a in sj.attractors(op)] == _true_classes(op)


@settings(max_examples=10)
@given(st.integers(0, 2**31 - 1), st.sampled_from([0.05, 0.02]))
def test_random_low_temperature_chains(seed, t):
    rng = np.random.default_rng(seed)
    table = rng.normal(scale=rng.uniform(1.0, 8.0), size=(2, 2, 2))
    table[rng.random(table.shape) < 0.15] = -np.inf
    table[..., 0] = np.where(np.isinf(table).all(axis=-1), 0.0, table[..., 0])
    op = sj.build_operator(sj.NGramModel(table), sj.StateSpace(2, 3), f"temperature={t}")
    _check_against_highprec(op, t)


def test_basins_and_hitting_times_flag_moves_below_the_float64_range():
    """Two absorbing windows reached only through a move of probability ~1e-435 from the split states:
    the float64 solve cannot see it, so the result is flagged and not certified (never silently exact)."""
    table = np.array([[[0.0, -np.inf], [0.0, 50.0]], [[50.0, 0.0], [-np.inf, 0.0]]])  # [x1, x2, y]
    model = sj.NGramModel(table)
    op = sj.build_operator(model, sj.StateSpace(2, 2), "temperature=0.05")
    assert op.tiny_moves(np.arange(op.num_states))
    with pytest.warns(sj.UnrepresentableWarning):
        res = sj.basins_result(op)
    assert res.n_solved == 4 and res.unrepresentable and res.error_bound == 1.0
    assert [list(map(int, a)) for a in sj.attractors(op)] == [[0], [3]]  # 00 and 11 absorb; the rest split
