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
