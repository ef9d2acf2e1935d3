"""Parameter sweeps and the temperature -> 0 limit (semio_jax.analysis.sweeps)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import semio_jax as sj  # noqa: E402
from semio_jax.testing import references  # noqa: E402
from semio_jax.agreement import check_stationary  # noqa: E402
from semio_jax.analysis import mixing as mx  # noqa: E402
from semio_jax.analysis import sweeps as sw  # noqa: E402
from semio_jax.testing.references import stationary_reference  # noqa: E402


@pytest.fixture(scope="module")
def ngram():
    rng = np.random.default_rng(0)
    return sj.NGramModel(rng.normal(size=(3, 3, 3)) * 2, name="ngram3")


@pytest.fixture(scope="module")
def op(ngram):
    return sj.build_operator(ngram, sj.StateSpace(3, 4))


def brute_entropy_rates(o) -> list[float]:
    """sum_s pi(s) H(s) with pi from the dense least-squares reference and H by a loop."""
    out = []
    for members in sj.attractors(o):
        pi = stationary_reference(o.probs, o.successors, members)
        h = 0.0
        for s in members:
            for y in range(o.n_tokens):
                q = o.probs[s, y]
                if q > 0:
                    h -= pi[s] * q * np.log(q)
        out.append(h)
    return out


def test_temperature_sweep_matches_direct_analyses(op):
    values = [0.5, 1.0, 2.0]
    res = sw.sweep(op, "temperature", values)
    assert res.parameter == "temperature" and res.values == values
    for v, pt in zip(values, res.points):
        sub = op.with_procedure(f"temperature={v}")
        assert pt.procedure == sub.procedure.spec
        assert pt.n_attractors == len(sj.attractors(sub))
        np.testing.assert_allclose(pt.entropy_rates, brute_entropy_rates(sub), atol=1e-10)
        np.testing.assert_allclose(pt.entropy_rates, sw.entropy_rates_inline(sub), atol=1e-12)
        for g, members in zip(pt.gaps, sj.attractors(sub)):
            assert g == pytest.approx(1 - references.spectral_gap_reference(sub.probs, sub.successors, members), abs=1e-10)
        pi = sj.stationary(sub)[0]
        top = np.argsort(-pi, kind="stable")[:5]
        assert [lab for lab, _ in pt.top_states] == [sub.space.label(int(s)) for s in top]
        assert pt.top_mass == pytest.approx(pi[top].sum())
    ent = res.column("entropy_rate")
    assert ent[0] < ent[1] < ent[2]  # for this model: hotter is more random
    assert "sweep of temperature" in res.table()


def test_top_k_sweep_and_greedy_cycles(op):
    res = sw.sweep(op, "top_k", [1, 2, 3], analyses=("attractors", "greedy_mass", "spectral_gap"))
    g = sj.greedy_dynamics(op)
    one = res.points[0]
    assert one.n_attractors == len(g.cycles)  # top_k = 1 is the greedy map
    assert one.greedy_mass == pytest.approx(1.0)
    assert sorted(one.attractor_sizes) == sorted(len(c) for c in g.cycles)
    assert res.points[2].procedure == "temperature=1,top_k=3" or res.points[2].procedure.endswith("top_k=3")
    assert all(0 <= p.min_gap <= 1 for p in res.points)


def test_top_p_and_min_p_sweeps_keep_the_other_stages(op):
    base = op.with_procedure("temperature=0.8,top_p=0.9")
    res = sw.sweep(base, "min_p", [0.05, 0.5])
    assert [p.procedure for p in res.points] == ["temperature=0.8,top_p=0.9,min_p=0.05",
                                                 "temperature=0.8,top_p=0.9,min_p=0.5"]
    res2 = sw.sweep(base, "top_p", [0.5, 1.0], analyses=("attractors",))
    assert res2.points[0].entropy_rate is None and res2.points[0].n_attractors >= 1


def test_temperature_limit_concentrates_on_greedy_cycles(op):
    res = sw.temperature_limit(op, temperatures=(1.0, 0.5, 0.2, 0.1, 0.05))
    mass = res.column("greedy_mass")
    assert np.all(np.diff(mass) > 0) and mass[-1] > 0.999
    assert res.points[-1].greedy_cycle_mass.sum() == pytest.approx(mass[-1])
    g = sj.greedy_dynamics(op)
    assert res.greedy_cycles == [[op.space.label(int(s)) for s in c] for c in g.cycles]
    assert res.note == ""  # no ties in these logits
    # the limit selects one cycle here (stochastic stability)
    assert res.points[-1].greedy_cycle_mass.max() > 0.95


def test_ties_are_reported():
    table = np.zeros((2, 2))  # every logit tied
    o = sj.build_operator(sj.NGramModel(table), sj.StateSpace(2, 2))
    res = sw.temperature_limit(o, temperatures=(1.0, 0.1))
    assert "tied" in res.note


def test_sweep_figure(op, tmp_path):
    res = sw.sweep(op, "temperature", [0.25, 0.5, 1.0, 2.0, 8.0],
                   analyses=("attractors", "entropy_rate", "spectral_gap", "top_states", "greedy_mass"))
    fig = sw.sweep_figure(res)
    assert len(fig.axes) == 5
    fig.savefig(tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 1000


def test_sweep_errors(op):
    with pytest.raises(ValueError, match="parameter"):
        sw.sweep(op, "beam", [1])
    with pytest.raises(ValueError, match="analyses"):
        sw.sweep(op, "temperature", [1.0], analyses=("attractors", "lyapunov"))
    with pytest.raises(sj.InvalidProcedureError):
        sw.sweep(op, "top_k", [4])
    with pytest.raises(sj.InvalidProcedureError):
        sw.sweep(op, "temperature", [0.0])
    with pytest.raises(ValueError, match="logits"):
        sw.sweep(sj.Operator(op.space, op.probs), "temperature", [1.0])


# ------------------------------------------------------------------ properties
@pytest.mark.property
@settings(max_examples=6)  # each example re-derives 3 operators; with_procedure compiles its procedure each time
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([0.5, 2.0, 4.0]),
       parameter=st.sampled_from(["temperature", "top_p", "min_p"]))
def test_property_sweep_quantities_in_range(seed, scale, parameter):
    rng = np.random.default_rng(seed)
    space = sj.StateSpace(2, 3)
    logits = rng.normal(scale=scale, size=(space.num_states, 2)).astype(np.float32)  # any table is a model
    proc = sj.sampling.parse("temperature=1")
    o = sj.Operator(space, references.probabilities_reference(proc, logits), proc, logits)
    values = {"temperature": [0.3, 1.0, 3.0], "top_p": [0.2, 0.7, 1.0], "min_p": [0.01, 0.3, 0.9]}[parameter]
    res = sw.sweep(o, parameter, values, analyses=sw.SWEEP_ANALYSES)
    for pt in res.points:
        assert pt.n_attractors >= 1
        assert pt.weights.sum() == pytest.approx(1.0)
        assert (pt.entropy_rates >= -1e-12).all() and (pt.entropy_rates <= np.log(2) + 1e-12).all()
        assert ((pt.gaps >= -1e-12) & (pt.gaps <= 1 + 1e-12)).all()
        assert 0 <= pt.top_mass <= 1 + 1e-12 and 0 <= pt.greedy_mass <= 1 + 1e-12


# ------------------------------------------------------------------ agreement
def test_swept_operator_agrees_with_sampling_at_its_own_temperature(op, ngram):
    """The sweep re-derives operators from stored logits: the one at t=1.3 matches sampling at 1.3, not at 1.0."""
    res = sw.sweep(op, "temperature", [1.3], analyses=("attractors", "top_states"))
    hot = op.with_procedure(res.points[0].procedure)
    good = check_stationary(hot, ngram, n_chains=48, n_steps=1000, seed=0)
    assert good.passed, good.table()
    wrong = check_stationary(hot, ngram, procedure="temperature=1", n_chains=48, n_steps=1000, seed=0)
    assert wrong.failed, wrong.table()
