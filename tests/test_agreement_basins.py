"""Exact-vs-sampled agreement of absorption probabilities (semio_jax.agreement.basins)."""

from __future__ import annotations

import numpy as np
import pytest

import semio_jax as sj
from semio_jax.agreement import absorption_by_horizon, check_basins, default_starts

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
    assert rep.failed, rep.table()
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
