"""The toolkit's zero-temperature section: decoded cycles, escape resistances and times against hand values."""

from __future__ import annotations

import math

import numpy as np

import semio_jax as sj
from semio_jax.app.zero_temperature_section import decode_class, zero_temperature_section
from semio_jax.core.procedure import greedy, temperature
from semio_jax.testing.references import hitting_times_reference, probabilities_reference


def _sticky(t: float):
    """L = 2, N = 2: repeat the newest token (gap 2 after a 0, gap 1 after a 1); 01 and 10 tie-free."""
    space = sj.StateSpace(2, 2, prefixes=False)
    newest = np.arange(4) % 2
    logits = np.where(np.arange(2)[None, :] == newest[:, None], 0.0, np.where(newest[:, None] == 0, -2.0, -1.0))
    proc = temperature(t)
    return sj.Operator(space, probabilities_reference(proc, logits), proc, logits=logits)


def test_section_on_a_sticky_chain():
    op = _sticky(0.25)
    summary, lines = zero_temperature_section(op)
    rows = {r["decoded"]: r for r in summary["classes_shown"]}
    assert set(rows) == {"00 -> (0)*", "11 -> (1)*"}
    # greedy: 00 -> 00, 01 -> 11, 10 -> 00, 11 -> 11; basins {00, 10} and {01, 11}
    # leaving 00 costs 2 (token 1 reaches 01, in the basin of 11); leaving 11 costs 1 (token 0 reaches 10)
    assert rows["00 -> (0)*"]["escape_resistance"] == 2.0 and rows["11 -> (1)*"]["escape_resistance"] == 1.0
    assert rows["00 -> (0)*"]["stable"] and rows["11 -> (1)*"]["potential"] == 1.0
    assert math.isclose(rows["11 -> (1)*"]["predicted_escape_time"], math.exp(1.0 / 0.25))
    # exact escape time: a dense solve to the complement of the basin (states 00, 10 for class 11)
    target = np.zeros(4, dtype=bool)
    target[[0, 2]] = True
    ref = hitting_times_reference(op.probs, op.successors, target)[3]
    assert math.isclose(rows["11 -> (1)*"]["hitting_times_escape"], ref, rel_tol=1e-9)
    assert math.isclose(rows["11 -> (1)*"]["log_exact_escape_time"], math.log(ref), rel_tol=1e-9)
    assert any("potential" in line for line in lines)


def test_section_refuses_greedy_with_a_note():
    space = sj.StateSpace(2, 2, prefixes=False)
    logits = np.zeros((4, 2))
    op = sj.Operator(space, probabilities_reference(greedy(), logits), greedy(), logits=logits)
    summary, lines = zero_temperature_section(op)
    assert summary["applicable"] is False and "not applicable" in lines[0]


def test_decode_class():
    space = sj.StateSpace(3, 3)
    cyc = np.array([space.index([0, 1, 2]), space.index([1, 2, 0]), space.index([2, 0, 1])])
    assert decode_class(space, cyc, True) == "012 -> (012)*"
    assert decode_class(space, cyc, False) == "{012, 120, 201}"


def test_toolkit_runs_the_section():
    from semio_jax.app.toolkit import SECTIONS, run_toolkit

    assert "zero_temperature" in SECTIONS
    model = sj.NGramModel(np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.1, 0.4]])))
    model.context_length = 2
    op = sj.build_operator(model, sj.StateSpace(3, 2), "temperature=0.5")
    lines = []
    out = run_toolkit(op, model, model_name="bigram", sample=True, echo=lines.append, sections=("zero_temperature",))
    zt = out["zero_temperature"]
    assert zt["applicable"] and out["checks"] == []
    # bigram argmax: 0 -> 0 and 2 -> 0, 1 -> 2: one greedy cycle, the repeated token 0, stable, never left
    assert [r["decoded"] for r in zt["classes_shown"]] == ["00 -> (0)*"]
    assert zt["classes_shown"][0]["stable"] and zt["escape_resistance"] == [math.inf]
    assert "zero-temperature limit: 1 recurrent classes" in "\n".join(lines)
