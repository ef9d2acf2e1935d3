"""The propositions of proofs/ in reduced form: every observed status equals its recorded status.

Runs the runner's API with the ``--quick`` budget once per module, then replays
every shipped counterexample. A run writes only to its report folder (a tmp
folder here): the source tree, including proofs/counterexamples/, is left as it
was. The validations' own checks are shown to fail on deliberately wrong inputs.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

import semio_jax as sj  # x64 before anything builds arrays
from semio_jax._util.compile_cache import enable_compilation_cache
from semio_jax.app.cli import main as cli_main
from semio_jax.core.procedure import temperature
from semio_proofs import _lib, runner
from semio_proofs import p01_uniqueness as p01
from semio_proofs import p03_trajectory_decay as p03
from semio_proofs import p06_truncation_attractors as p06
from semio_proofs import p07_next_token_vs_continuation as p07
from semio_proofs import p08_large_deviations as p08
from semio_proofs import p09_coin_flip as p09

ROOT = Path(__file__).resolve().parents[1]


def _tree_snapshot() -> dict:
    """sha256 of every file under the checkout, skipping caches, .git and ignored output folders."""
    skip = {".git", "__pycache__", ".pytest_cache", ".hypothesis", ".venv", "reports", "build", "dist"}
    out = {}
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if any(part in skip or part.endswith(".egg-info") for part in rel.parts) or not path.is_file():
            continue
        out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _git_status() -> str | None:
    try:
        r = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`semio proofs --quick --out <tmp>` through the CLI, with the tree recorded before and after."""
    enable_compilation_cache()  # as `semio proofs` does: compiled procedures and models are reused across runs
    out = tmp_path_factory.mktemp("proofs_report")
    before, git_before = _tree_snapshot(), _git_status()
    rc = cli_main(["proofs", "--quick", "--out", str(out)])
    return {"rc": rc, "out": out, "before": before, "after": _tree_snapshot(), "git_before": git_before,
            "git_after": _git_status()}


@pytest.fixture(scope="module")
def quick_rows(quick_run):
    data = json.loads((quick_run["out"] / "results.json").read_text())
    return data["propositions"]


def test_every_proposition_has_statement_validation_and_status():
    base = runner.proofs_dir()
    for name in runner.PROPOSITIONS:
        assert (base / f"{name}.md").is_file(), name
        assert (base / f"{name}.py").is_file(), name
        status, line = runner.recorded_status(name)
        assert status in ("holds", "false"), (name, line)
    assert sum(runner.recorded_status(n)[0] == "false" for n in runner.PROPOSITIONS) >= 2


def test_quick_run_matches_recorded_statuses(quick_run, quick_rows):
    assert quick_run["rc"] == 0
    assert [r["name"] for r in quick_rows] == runner.PROPOSITIONS
    bad = [(r["name"], r["recorded"], r["observed"], r["error"]) for r in quick_rows if not r["agrees"]]
    assert not bad, bad
    for r in quick_rows:
        assert r["cases"] > 0, r["name"]
        if r["recorded"] == "false":  # a false proposition comes with its counterexample, written to the report
            assert r["counterexample"] is not None, r["name"]
            assert (quick_run["out"] / r["counterexample_file"]).is_file(), r["name"]


def test_a_run_leaves_the_source_tree_unchanged(quick_run):
    assert (quick_run["out"] / "results.md").is_file()
    changed = {k for k in quick_run["before"].keys() | quick_run["after"].keys()
               if quick_run["before"].get(k) != quick_run["after"].get(k)}
    assert changed == set()
    assert quick_run["git_before"] == quick_run["git_after"]  # None == None where git is unavailable
    assert not (runner.proofs_dir() / "results.md").exists()


def test_default_report_folder_is_reports_proofs_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["proofs", "--quick", "--only", "f03"]) == 0
    assert (tmp_path / "reports" / "proofs" / "results.json").is_file()
    assert (tmp_path / "reports" / "proofs" / "counterexamples" / "f03_map_starts_greedy.json").is_file()
    # and its counterexample replays from there
    assert cli_main(["proofs", "--replay", "f03", "--out", str(tmp_path / "reports" / "proofs")]) == 0


def test_a_report_folder_inside_the_package_is_refused(capsys):
    inside = runner.proofs_dir() / "counterexamples"
    assert cli_main(["proofs", "--quick", "--only", "f03", "--out", str(inside)]) == 2
    assert "inside the package folder" in capsys.readouterr().err
    with pytest.raises(runner.OutputInSourceTreeError):
        runner.report_dir(runner.proofs_dir())


def test_saved_counterexamples_replay():
    """Every proposition recorded as false has a shipped counterexample that still violates it."""
    for name in runner.PROPOSITIONS:
        if runner.recorded_status(name)[0] != "false":
            continue
        path = runner.shipped_counterexamples() / f"{name}.json"
        assert path.is_file(), f"missing {path}"
        saved = json.loads(path.read_text())
        assert saved["proposition"] == name
        res, _ = runner.replay(name)
        assert res.violated, (name, res.message)


def test_cli_replay_and_list(capsys):
    assert cli_main(["proofs", "--list"]) == 0
    out = capsys.readouterr().out
    assert "f01_stationary_equals_source" in out and "false as stated" in out
    assert cli_main(["proofs", "--replay", "f03"]) == 0
    assert "VIOLATION REPRODUCED" in capsys.readouterr().out


def test_mismatch_is_reported(monkeypatch):
    """A proposition whose observed status differs from its .md makes the run fail (exit 1)."""
    real = runner.recorded_status

    def flipped(name):
        status, line = real(name)
        return ("holds", "holds (flipped for the test)") if name == "f03_map_starts_greedy" else (status, line)

    monkeypatch.setattr(runner, "recorded_status", flipped)
    assert cli_main(["proofs", "--quick", "--only", "f03", "--no-write"]) == 1


# --------------------------------------------------------------------------- _lib
def test_a_nan_slack_is_a_violation():
    tr = _lib.Tracker()
    assert tr.add("fine", 0.5) is False
    assert tr.add("nan", float("nan"), {"why": "nan"}) is True
    res = tr.result()
    assert res.violated and res.counterexample["case"] == "nan" and math.isnan(res.worst_slack)
    assert _lib.is_violation(float("nan")) and _lib.is_violation(-1.0, 0.5) and not _lib.is_violation(-0.1, 0.5)


def _search(check, tr):
    return _lib.search(st.integers(0, 50), check, tracker=tr, label=str, to_json=lambda x: {"x": x},
                       size=float, max_examples=30, seed=0)


def test_search_finds_nan_and_shrinks():
    tr = _lib.Tracker()
    found = _search(lambda x: float("nan") if x >= 7 else 1.0, tr)
    assert found == 7 and tr.result().violated


def test_an_exception_inside_a_search_is_an_error_not_no_violation():
    def check(x):
        if x >= 3:
            raise FloatingPointError("broken check")
        return 1.0

    with pytest.raises(_lib.SearchError, match="broken check"):
        _search(check, _lib.Tracker())
    assert _search(lambda x: 1.0, _lib.Tracker()) is None  # a check that never fails finds nothing


def test_a_validation_that_raises_is_reported_as_an_error(monkeypatch):
    def boom(ctx):
        raise _lib.SearchError("check raised on a generated example 3")

    monkeypatch.setattr(p09, "validate", boom)
    row = runner.run_one("p09_coin_flip", _lib.Context(quick=True))
    assert row.observed == "error" and not row.agrees and "SearchError" in row.error


# --------------------------------------------------------------------------- validations that can fail
def _wrong_temperature(logits, length, t_table):
    """An n-gram operator whose table is the model's at temperature ``t_table`` while its logits and
    procedure say temperature 1: the engine's operator is then not the model's chain."""
    good = _lib.ngram_op(logits, length)
    table = _lib.ngram_op(logits, length, f"temperature={t_table}").probs
    return good, sj.Operator(good.space, table, temperature(1.0), logits=good.logits)


def test_p01_dobrushin_comparison_fails_on_a_table_that_is_not_the_models():
    lg = 0.1 * np.random.default_rng(0).normal(size=(3, 3))  # nearly uniform: N^L eps close to 1
    good, bad = _wrong_temperature(lg, 3, 0.05)
    slack, f = p01.check(good)
    assert slack > 0 and f["dobrushin_ok"] and f["max_rel_diff_PL"] <= p01.REL
    slack, f = p01.check(bad)
    assert slack == -1.0 and not f["dobrushin_ok"] and f["overlap_minus_NL_eps"] < -0.1
    # the product formula itself, against the engine's pushes, on a model that is not near-uniform
    op = _lib.ngram_op(np.random.default_rng(1).normal(size=(2, 2, 2)), 3)
    np.testing.assert_allclose(_lib.window_powers(_lib.reference_probs(op)[:8], 2, 3), _lib.full_powers(op, 3),
                               rtol=1e-12, atol=0)


def test_p03_decay_fails_on_a_table_that_is_not_the_models():
    lg = 2.0 * np.random.default_rng(0).normal(size=(3, 3))
    good, bad = _wrong_temperature(lg, 3, 0.3)
    assert abs(p03.decay_slack(good, 12)[0]) <= p03.TOL_A
    assert p03.decay_slack(bad, 12)[0] < -0.1


def test_p07_ratio_fails_on_a_table_that_is_not_the_models():
    lg = 2.0 * np.random.default_rng(0).normal(size=(3, 3))
    good, bad = _wrong_temperature(lg, 3, 0.3)
    assert p07.ratio_slack(good)[0] > 0
    assert p07.ratio_slack(bad)[0] < -0.1


def _m_sequence(Q, t_max):
    m, v = [], np.ones(Q.shape[0])
    for _ in range(t_max + 1):
        m.append(v.max())
        v = Q @ v
    return np.array(m)


def test_p06_rate_check_fails_on_a_wrong_rho_or_a_wrong_support():
    Q = np.array([[0.5, 0.3], [0.2, 0.4]])  # a cyclic substochastic block
    m, rho = _m_sequence(Q, 80), float(np.max(np.abs(np.linalg.eigvals(Q))))
    assert p06.has_cycle(Q)
    assert p06.rate_check(m, rho, L=1, n_transient=2, cyclic=True)["rate_ok"]
    assert not p06.rate_check(m, 1.2 * rho, L=1, n_transient=2, cyclic=True)["rate_ok"]
    assert not p06.rate_check(m, 0.8 * rho, L=1, n_transient=2, cyclic=True)["rate_ok"]
    assert not p06.rate_check(m, 0.0, L=1, n_transient=2, cyclic=True)["rate_ok"]
    N = np.array([[0.0, 0.5], [0.0, 0.0]])  # nilpotent: m reaches 0 at t = 2
    mn = _m_sequence(N, 10)
    assert not p06.has_cycle(N)
    assert p06.rate_check(mn, 0.0, L=1, n_transient=2, cyclic=False)["rate_ok"]
    assert not p06.rate_check(mn, 0.0, L=1, n_transient=2, cyclic=True)["rate_ok"]
    assert not p06.rate_check(m, rho, L=1, n_transient=2, cyclic=False)["rate_ok"]


def test_p08_limit_is_independent_of_the_dp_and_the_sticky_coin_violates():
    fair = _lib.ngram_op([0.0, 0.0], 3)
    for a in (0.6, 0.9):  # the closed form for the fair coin: H(a)
        assert abs(p08.limit_rates(fair, a)["gap"] - p08.binary_entropy(a)) < 1e-9
    sticky = _lib.ngram_op(np.log([[0.99, 0.01], [0.01, 0.99]]).tolist(), 1)
    lim = p08.limit_rates(sticky, 0.6)["gap"]
    assert 0.009 < lim < 0.011 and p08.LIMIT_TOL - lim < 0  # the claim fails on the sticky coin
    r = p08.table(sticky, sticky.space.index([0]), (800,), (0.6,))[0]
    assert abs(r["gap"] - lim) <= p08.dp_tolerance(800)
    # the DP of one model against the limit of another (a deliberately wrong pairing) is caught
    r_fair = p08.table(fair, fair.space.index([0]), (64,), (0.6,))[0]
    assert abs(r_fair["gap"] - lim) > p08.dp_tolerance(64)


def test_p09_statement_3_is_checked_for_every_k():
    # the smallest bound sits at k ~ 150: checking k <= 4 only would pass, every k fails
    tv, e, L, delta = 0.005, 1e-8, 8, 0.99
    only_4 = min(math.sqrt(k * L * e / 2) / (1 - delta**k) for k in range(1, 5)) - tv
    slack, b, k, k_max = p09.stationary_slack(tv, e, L, delta)
    assert only_4 > 0 and slack < 0 and k > 4 and k_max >= k
    assert p09.stationary_slack(0.0045, 8.08e-6, 8, 0.001)[0] > 0
    assert math.isnan(p09.stationary_slack(0.0045, 8.08e-6, 8, 1.0)[0])  # delta = 1: outside, a NaN slack


def test_p01_beyond_float64_check_can_fail():
    lg = np.random.default_rng(2).normal(size=(3, 3))
    assert p01.beyond_float64(_lib.ngram_op(lg, 2, "temperature=0.5"))["ok"]
    truncated = p01.beyond_float64(_lib.ngram_op(lg, 2, "top_k=1"))  # a map: support not full, several cycles
    assert not truncated["ok"] and not truncated["engine support full"]


def test_least_keeps_a_nan_whatever_the_order():
    nan = float("nan")
    assert min(1.0, nan) == 1.0  # why it exists: Python's min drops this NaN
    assert math.isnan(_lib.least(1.0, nan)) and math.isnan(_lib.least(nan, 1.0)) and _lib.least(2.0, -1.0) == -1.0
