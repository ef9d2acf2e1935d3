"""The semio command end to end: exit codes, report folder contents, named errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semio_jax.app.cli import main


def test_zoo_lists_the_shipped_models(capsys):
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    for name in ("coin", "markov2", "dyck"):
        assert name in out


def test_analyze_writes_a_complete_report(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["analyze", "coin", "-p", "temperature=1", "-p", "greedy", "--no-sample",
                 "--analyses", "entropy,hitting", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert {"coin_temperature1", "coin_greedy", "provenance"} <= set(results)
    prov = results["provenance"]
    assert prov["x64"] is True and prov["versions"]["jax"]
    tk = results["coin_temperature1"]["toolkit"]
    assert abs(tk["entropy_rate"][0]["entropy_rate_bits"] - 1.0) < 1e-3  # a fair-coin model: about one bit per token
    arrays = np.load(out / "arrays.npz")
    probs = arrays["coin_temperature1/probs"]
    assert probs.shape == (510, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert arrays["coin_greedy/stationary"].shape == (1, 510)
    md = (out / "report.md").read_text()
    assert "## coin — temperature=1" in md and "Provenance" in md
    assert any(p.suffix == ".png" for p in out.iterdir())
    assert "entropy rate" in capsys.readouterr().out


def test_named_errors_exit_2_without_a_traceback(tmp_path, capsys):
    assert main(["analyze", "no-such-model", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "UnknownModelError" in err and "coin" in err and "Traceback" not in err
    assert main(["analyze", "coin", "-p", "top_k=0", "--no-sample", "--out", str(tmp_path / "y")]) == 2
    assert "InvalidProcedureError" in capsys.readouterr().err
    assert main(["analyze", "coin", "--analyses", "entropy,nonsense", "--no-sample", "--out", str(tmp_path / "z")]) == 2


def test_check_exits_0_when_the_checks_pass(tmp_path):
    assert main(["check", "coin", "-p", "temperature=1", "--chains", "16", "--steps", "300",
                 "--out", str(tmp_path / "c")]) == 0
    results = json.loads((tmp_path / "c" / "results.json").read_text())
    assert results["coin_temperature1"]["all_checks_passed"] is True


def test_sample_prints_reproducible_continuations(capsys):
    assert main(["sample", "coin", "--prompt", "0,1", "--steps", "12", "--chains", "2", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main(["sample", "coin", "--prompt", "0,1", "--steps", "12", "--chains", "2", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first


def test_check_with_a_budget_that_supports_no_test_is_inconclusive_exit_3(tmp_path, capsys):
    """Issue 13: `semio check markov2 --chains 2 --steps 10` printed "PASS: 0 tests" and exited 0."""
    assert main(["check", "markov2", "--chains", "2", "--steps", "10", "--out", str(tmp_path / "m")]) == 3
    out = capsys.readouterr().out
    assert "INCONCLUSIVE" in out and "PASS: 0 tests" not in out and "supports no test" in out
    results = json.loads((tmp_path / "m" / "results.json").read_text())
    assert results["markov2_temperature1"]["verdict"] == "INCONCLUSIVE"


def test_check_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0 PASS" in text and "1 FAIL" in text and "3 INCONCLUSIVE" in text
