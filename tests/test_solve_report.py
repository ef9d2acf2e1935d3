"""The bookkeeping of benchmarks/bench_solve.py and benchmarks/solve_report.py: the numerical reference (and
its fall-back through REF_TOLS), the 'within 1e-10' verdict, the per-chain summary of Storm's fastest
setting, and the worker environment (the benchmark itself is not a test)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import semio_jax as sj
from semio_jax.testing.references import gth_rational

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    if str(_BENCH) not in sys.path:
        sys.path.insert(0, str(_BENCH))
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", _BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def rep():
    return _load("solve_report")


@pytest.fixture(scope="module")
def bench():
    return _load("bench_solve")


def _op(seed: int = 5):
    probs = np.random.default_rng(seed).dirichlet([1.0, 1.0], size=2**5)  # [32, 2]
    return sj.Operator(sj.StateSpace(2, 5, prefixes=False), probs)


def test_reference_agrees_with_exact_gth(bench):
    op = _op()
    ref = bench.numerical_reference(op)
    assert ref["tol"] == bench.REF_TOLS[0]
    # independent: GTH in exact rationals on the dense matrix built from the table
    from fractions import Fraction

    s, n = op.probs.shape
    p = [[Fraction(0)] * s for _ in range(s)]
    for i in range(s):
        for y in range(n):
            p[i][(i % 2**4) * 2 + y] += Fraction(float(op.probs[i, y]))
    exact = np.array([float(x) for x in gth_rational(p)])
    assert np.abs(ref["pi"] - exact).sum() < 1e-13
    assert ref["residual"] == pytest.approx(np.abs(op.push(ref["pi"]) - ref["pi"]).sum())


def test_reference_falls_back_to_a_looser_tolerance(bench, monkeypatch):
    real = sj.stationary_result
    tried = []

    def flaky(op, method="auto", tol=1e-12, **kw):
        tried.append(tol)
        if tol < 1e-14:
            raise sj.errors.ConvergenceError("no convergence at this tolerance")
        return real(op, method=method, tol=tol, **kw)

    monkeypatch.setattr(sj, "stationary_result", flaky)
    ref = bench.numerical_reference(_op())
    assert tried == [1e-15, 3e-15, 1e-14] and ref["tol"] == 1e-14
    monkeypatch.setattr(sj, "stationary_result", lambda *a, **k: (_ for _ in ()).throw(
        sj.errors.ConvergenceError("never")))
    assert "never" in bench.numerical_reference(_op())["error"]


def test_within_prefers_the_exact_error(rep):
    assert rep.within({"error": 5e-11, "dist_ref": 1e-6}) is True
    assert rep.within({"error": 2e-10, "dist_ref": 1e-14}) is False
    assert rep.within({"error": None, "dist_ref": 9e-11}) is True
    assert rep.within({"dist_ref": 1.1e-10}) is False
    assert rep.within({}) is None


def _rec(peer, cpu, within, chain="c", status="ok", dist=1e-12):
    return {"problem": "pi", "chain": chain, "L": 20, "peer": peer, "status": status, "solve_cpu_s": cpu,
            "within": within, "dist_ref": dist, "error": None}


def test_summary_takes_the_fastest_storm_setting_within(rep):
    records = [_rec("semio-auto", 2.0, True), _rec("storm-evt", 1.0, False), _rec("storm-evt-gmm8", 3.0, True),
               _rec("storm-evt-gmm12", 5.0, True), _rec("storm-iter", 0.5, None, status="DNF"),
               _rec("semio-auto", 1.0, True, chain="d"), _rec("storm-evt", 1.0, False, chain="d")]
    lines = rep.summary(records).splitlines()
    assert lines[1].startswith("- c 2^20: storm-evt-gmm8 3 CPU s") and "speed-up 1.50x" in lines[1]
    assert lines[2].startswith("- d 2^20: no Storm setting within")


def test_worker_environment_sets_the_thread_counts(bench, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    env = bench.worker_env(1)
    assert all(env[v] == "1" for v in bench.THREAD_VARS)
    assert bench.worker_env(0)["OMP_NUM_THREADS"] == "7"


def test_median_run_picks_the_middle_run_and_never_hides_a_failure():
    report = _load("solve_report")
    runs = [{"status": "ok", "solve_cpu_s": 0.9, "tag": "a"}, {"status": "DNF", "solve_cpu_s": None, "tag": "b"},
            {"status": "ok", "solve_cpu_s": 0.5, "tag": "c"}, {"status": "ok", "solve_cpu_s": 0.7, "tag": "d"}]
    assert report.median_run([runs[0], runs[2], runs[3]])["tag"] == "d"  # 0.5, 0.7, 0.9
    assert report.median_run([runs[0], runs[2]])["tag"] == "c"  # two runs: the lower middle
    assert report.median_run(runs)["tag"] == "b"  # a failure in any round is the row's verdict
    with pytest.raises(ValueError):
        report.median_run([])
