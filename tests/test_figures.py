"""app/figures.py: what each figure plots (its data, not its look)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import PathCollection

import semio_jax as sj
from semio_jax.agreement import check_basins, check_stationary
from semio_jax.app import figures


# two closed worlds, {0, 1} and {2, 3}, once top_p=0.9 cuts the rare crossings; token 4 is split between them
ROWS = np.array([[0.5, 0.45, 0.03, 0.02, 0.0], [0.6, 0.35, 0.02, 0.03, 0.0], [0.02, 0.03, 0.5, 0.45, 0.0],
                 [0.03, 0.02, 0.6, 0.35, 0.0], [0.4, 0.0, 0.4, 0.0, 0.2]])


@pytest.fixture(scope="module")
def dyck_checks():
    with np.errstate(divide="ignore"):
        model = sj.NGramModel(np.log(ROWS))
    model.context_length = 3
    op = sj.build_operator(model, sj.StateSpace(5, 3), "top_p=0.9")
    assert len(sj.class_structure(op).attractors) == 2
    return op, [check_stationary(op, model, n_chains=8, n_steps=300, seed=0),
                check_basins(op, model, n_chains=200, seed=0)]


def test_agreement_figure_plots_probabilities_against_probabilities(dyck_checks):
    _op, checks = dyck_checks
    rows = [r for c in checks for r in c.rows]
    stats = [r for r in rows if not figures.is_probability_row(r)]
    probs = [r for r in rows if figures.is_probability_row(r)]
    assert any("chi2" in r.quantity for r in stats) and any("log-prob" in r.quantity for r in stats)
    assert any("->" in r.quantity for r in probs) and any("pi(" in r.quantity or "P(" in r.quantity for r in probs)
    fig = figures.agreement_figure(checks, title="t")
    left, right = fig.axes[:2]
    xs = np.concatenate([ln.get_xdata() for ln in left.lines if ln.get_linestyle() == "None"])
    ys = np.concatenate([ln.get_ydata() for ln in left.lines if ln.get_linestyle() == "None"])
    assert xs.size == len(probs)  # every probability, and nothing else, on the probability panel
    np.testing.assert_allclose(np.sort(xs), np.sort([r.exact for r in probs]))
    np.testing.assert_allclose(np.sort(ys), np.sort([r.estimate for r in probs]))
    assert 0 <= xs.min() and xs.max() <= 1
    pvals = np.concatenate([c.get_offsets()[:, 1] for c in right.collections if isinstance(c, PathCollection)])
    np.testing.assert_allclose(np.sort(pvals), np.sort([max(r.p_value, 1e-300) for r in rows]))  # every test's p
    assert right.get_yscale() == "log"
    for ax in (left, right):
        assert ax.get_xlabel() and ax.get_ylabel()
    labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert labels == [f"{i}: {c.title}" for i, c in enumerate(checks)]  # full titles, not cut


def test_basins_figure_says_why_its_states_were_chosen(dyck_checks):
    op, _ = dyck_checks
    bs = sj.basins_result(op)
    states = [op.space.index([t]) for t in range(5)] + [int(s) for s in bs.split[:4]]
    fig = figures.basins_figure(op.space, bs.rows(states), states, n_prompts=5, prompt_reason="one-token prompts")
    ax = fig.axes[0]
    assert "one-token prompts" in ax.get_xlabel() and "uncertain" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == [op.space.label(s) for s in states]
    assert ax.get_ylabel()
