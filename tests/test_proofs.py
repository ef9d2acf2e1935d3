"""The propositions of proofs/ in reduced form: every observed status equals its recorded status.

Runs the runner's API with the ``--quick`` budget once per session (about 40 s on
2 cores), then replays every saved counterexample. Nothing is written to the
repository (the full ``semio proofs`` run writes proofs/results.* and the
counterexamples).
"""

from __future__ import annotations

import json

import pytest

import semio_jax  # noqa: F401  (x64 before anything builds arrays)
from semio_proofs import runner


@pytest.fixture(scope="module")
def quick_rows():
    from semio_jax._util.compile_cache import enable_compilation_cache

    enable_compilation_cache()  # as `semio proofs` does: compiled procedures and models are reused across runs
    return runner.run_all(quick=True, seed=0, write_dir=None, log=lambda s: None)


def test_every_proposition_has_statement_validation_and_status():
    base = runner.proofs_dir()
    for name in runner.PROPOSITIONS:
        assert (base / f"{name}.md").is_file(), name
        assert (base / f"{name}.py").is_file(), name
        status, line = runner.recorded_status(name)
        assert status in ("holds", "false"), (name, line)
    assert sum(runner.recorded_status(n)[0] == "false" for n in runner.PROPOSITIONS) >= 2


def test_quick_run_matches_recorded_statuses(quick_rows):
    assert [r.name for r in quick_rows] == runner.PROPOSITIONS
    bad = [(r.name, r.recorded, r.observed, r.error) for r in quick_rows if not r.agrees]
    assert not bad, bad
    for r in quick_rows:
        assert r.cases > 0, r.name
        if r.recorded == "false":  # a false proposition comes with its counterexample
            assert r.counterexample is not None, r.name


def test_saved_counterexamples_replay():
    """Every proposition recorded as false has a saved counterexample that still violates it."""
    base = runner.proofs_dir()
    for name in runner.PROPOSITIONS:
        if runner.recorded_status(name)[0] != "false":
            continue
        path = runner.counterexample_path(base, name)
        assert path.is_file(), f"missing {path}: run `semio proofs`"
        saved = json.loads(path.read_text())
        assert saved["proposition"] == name
        res, _ = runner.replay(name)
        assert res.violated, (name, res.message)


def test_cli_replay_and_list(capsys):
    from semio_jax.app.cli import main

    assert main(["proofs", "--list"]) == 0
    out = capsys.readouterr().out
    assert "f01_stationary_equals_source" in out and "false as stated" in out
    assert main(["proofs", "--replay", "f03"]) == 0
    assert "VIOLATION REPRODUCED" in capsys.readouterr().out


def test_mismatch_is_reported(tmp_path, monkeypatch):
    """A proposition whose observed status differs from its .md makes the run fail (exit 1)."""
    real = runner.recorded_status

    def flipped(name):
        status, line = real(name)
        return ("holds", "holds (flipped for the test)") if name == "f03_map_starts_greedy" else (status, line)

    monkeypatch.setattr(runner, "recorded_status", flipped)
    from semio_jax.app.cli import main

    assert main(["proofs", "--quick", "--only", "f03", "--no-write"]) == 1
