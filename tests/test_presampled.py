"""Pre-drawn samples (check_stationary / check_basins with sample=): one sampling run, several exact operators.

This is what benchmarks/calibration.py relies on: the sample drawn from the true model is compared with
the right operator and with each wrong one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import semio_jax as sj
from semio_jax.agreement import (
    check_basins,
    check_stationary,
    draw_absorption_samples,
    draw_stationary_samples,
)


@pytest.fixture(scope="module")
def hub():
    t = np.full((5, 5), -np.inf)
    t[0, :2], t[1, :2], t[2, 2:4], t[3, 2:4] = [0.3, -0.2], [-0.5, 0.4], [0.1, 0.0], [0.6, -0.3]
    t[4] = [1.0, -0.5, 0.8, 0.2, 0.5]  # top 3: {0, 2, 4}; top 4 adds token 3
    return sj.NGramModel(t, context_length=3, name="hub")


def test_presampled_stationary_equals_the_default_path(ngram3):
    op = sj.build_operator(ngram3, sj.StateSpace(3, 3), "temperature=1")
    direct = check_stationary(op, ngram3, n_chains=16, n_steps=300, seed=4)
    samples = draw_stationary_samples(op, ngram3, n_chains=16, n_steps=300, seed=4)
    via = check_stationary(op, None, sample=samples)
    assert [dataclasses.astuple(r) for r in via.rows] == [dataclasses.astuple(r) for r in direct.rows]
    single = check_stationary(op, None, sample=samples[0])  # a bare OccupationSample works too
    assert single.min_p == direct.min_p
    wrong = op.with_procedure("temperature=1.5")  # the same chains against a wrong operator
    assert check_stationary(wrong, None, sample=samples).failed
    with pytest.raises(ValueError, match="no pre-drawn sample for attractor 3"):
        check_stationary(op, None, sample=samples, attractors=[3])


def test_presampled_basins_equal_the_default_path_and_can_be_rejudged(hub):
    space = sj.StateSpace(5, 3)
    op = sj.build_operator(hub, space, "top_k=3")
    starts = [space.index([4, 4, 4]), space.index([4])]
    direct = check_basins(op, hub, starts=starts, horizon=40, n_chains=500, seed=1)
    samples = draw_absorption_samples(op, hub, starts=starts, horizon=40, n_chains=500, seed=1)
    assert all(s.path.shape == (500, 40) for s in samples)
    via = check_basins(op, None, sample=samples, horizon=40)
    assert [dataclasses.astuple(r) for r in via.rows] == [dataclasses.astuple(r) for r in direct.rows]
    assert via.passed
    # the exact side built with top_k=4 (off by one), re-judged on the same chains: caught
    wrong = op.with_procedure("top_k=4")
    rep = check_basins(wrong, None, sample=samples)
    assert rep.failed and rep.min_p < 1e-6
    # relabel by the same attractors gives back the original outcomes
    cs = sj.class_structure(op)
    for s in samples:
        np.testing.assert_array_equal(s.relabel(cs.attractor_of).outcome, s.outcome)
