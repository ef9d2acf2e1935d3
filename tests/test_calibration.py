"""The functions of benchmarks/calibration.py: the slowly mixing test chains, the verdict bookkeeping, the
Clopper-Pearson interval and the table (the study itself is a benchmark, not a test)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import semio_jax as sj
from semio_jax.agreement import AgreementReport, CheckRow

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "calibration.py"


@pytest.fixture(scope="module")
def cal():
    spec = importlib.util.spec_from_file_location("calibration_under_test", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_clopper_pearson_matches_the_binomial_tails(cal):
    lo, hi = cal.clopper_pearson(3, 300)
    # the interval's ends are where the binomial tails are 2.5% each (the definition, computed independently)
    assert stats.binom.sf(2, 300, lo) == pytest.approx(0.025, rel=1e-6)
    assert stats.binom.cdf(3, 300, hi) == pytest.approx(0.025, rel=1e-6)
    assert cal.clopper_pearson(0, 300)[0] == 0.0 and cal.clopper_pearson(300, 300)[1] == 1.0


@pytest.mark.parametrize("mass, tau", [(0.05, 200.0), (0.02, 1000.0)])
def test_sticky_ngram_has_the_stated_mass_and_relaxation_time(cal, mass, tau):
    model, space = cal.sticky_ngram(3, [(mass, tau)], seed=4)
    op = sj.build_operator(model, space, "temperature=1")
    assert np.allclose(op.probs.sum(axis=1), 1.0)
    pi = sj.stationary(op)[0][: space.num_full]
    rare = pi.reshape(-1, space.n_tokens).sum(axis=0)[3]
    assert rare == pytest.approx(mass, rel=1e-6)  # a two-phase chain: enter m / tau, leave (1 - m) / tau
    t_rel = float(sj.spectral_gap(op).relaxation_time[0])
    assert t_rel == pytest.approx(tau, rel=0.01)


def test_verdicts_follow_the_report(cal):
    ok = CheckRow("a", 0.5, 0.5, 0.1, 0.0, 0.3)
    bad = CheckRow("b", 0.5, 0.9, 0.1, 4.0, 0.004)
    for rows, reasons in [([ok], []), ([ok, bad], []), ([ok], ["r"]), ([], []), ([bad], ["r"])]:
        rep = AgreementReport("t", rows, 0.01, "m", inconclusive_reasons=reasons)
        assert cal.verdict_at(cal.outcome(rep), 0.01) == rep.verdict
    out = cal.outcome(AgreementReport("t", [ok, bad], 0.01, "m"))
    assert out == [0.008, 0] and cal.verdict_at(out, 0.005) == "PASS"  # m min p = 0.008


def test_summarize_counts_and_interval(cal):
    outcomes = [[0.001, 0]] * 3 + [[0.5, 1]] * 7 + [[0.5, 0]] * 90
    s = cal.summarize(outcomes, 0.01)
    assert (s["n"], s["fail"], s["inconclusive"], s["pass"]) == (100, 3, 7, 90)
    assert s["cp"] == cal.clopper_pearson(3, 100)


def test_slow_case_run_and_table(cal, tmp_path):
    """One seed of the two-state chain of issue 13 at a small budget, then the table from the raw results."""
    case = cal.SlowCase("two-state", cal._two_state, "temperature=1")
    assert case.relaxation_time == pytest.approx(1 / 2.05e-3, rel=1e-6)
    res = case.run(0, [(8, 200)])
    assert set(res) == {"8 x 200"} and set(res["8 x 200"]) == {"right", *cal.SLOW_MISTAKES}
    raw = {"level": 0.01, "wall_s": 1.0, "results": {"two-state": {
        "procedure": "temperature=1", "relaxation_time": case.relaxation_time,
        "rarest_token_mass": case.rarest_token_mass, "seeds": {"0": res, "1": res}}}}
    path = tmp_path / "slow.md"
    cal.render_slow(raw, path)
    text = path.read_text()
    assert "two-state" in text and "| 8 x 200 |" in text and "488" in text
    json.dumps(raw)  # the raw results are plain JSON
