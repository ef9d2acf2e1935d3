"""Bad inputs that the rest of the suite did not cover yet (the full catalogue: docs/bad_inputs.md).

Each bad input must raise one of semio_jax's named errors (or, on the command line, end with exit
status 2 and a one-line message without a traceback) and leave no half-written file behind.
"""

from __future__ import annotations

import numpy as np
import pytest

import semio_jax as sj
from semio_jax._util import io as _io
from semio_jax.app.cli import main
from semio_jax.app.report import Report


def _numpy_model(n, fn):
    return sj.FunctionModel(fn, n_tokens=n, jittable=False)


# ------------------------------------------------------------------------- models and tables
def test_ngram_table_errors():
    with pytest.raises(sj.NonFiniteLogitsError, match="use -inf for impossible tokens"):
        sj.NGramModel(np.array([[0.0, np.nan], [0.0, 0.0]]))
    with pytest.raises(sj.NonFiniteLogitsError):
        sj.NGramModel(np.array([[0.0, np.inf], [0.0, 0.0]]))
    with pytest.raises(sj.LogitsShapeError, match=r"\[N\]\*order"):
        sj.NGramModel(np.zeros((2, 3)))


def test_logits_that_are_not_real_numbers():
    space = sj.StateSpace(2, 2)
    for bad in (np.ones((4, 2), dtype=complex), np.ones((4, 2), dtype=bool), np.array([["a", "b"]] * 4)):
        with pytest.raises(sj.LogitsError, match="expected real"):
            sj.build_operator(_numpy_model(2, lambda c, bad=bad: bad[: len(c)]), space)
    with pytest.raises(sj.NotStochasticError, match="complex"):
        sj.Operator(sj.StateSpace(2, 1), np.full((2, 2), 0.5 + 0j))


def test_space_that_does_not_fit_the_model():
    model = sj.NGramModel(np.zeros((2, 2)), context_length=3)
    with pytest.raises(sj.SpaceMismatchError, match="choose L <= 3"):
        sj.build_operator(model, sj.StateSpace(2, 4))
    with pytest.raises(sj.SpaceMismatchError, match="n_tokens=2"):
        sj.build_operator(model, sj.StateSpace(3, 2))
    assert issubclass(sj.SpaceMismatchError, sj.LogitsShapeError)


# ------------------------------------------------------------------------- report folders
def test_report_folder_not_writable(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(sj.ReportWriteError, match="choose another --out"):
        Report(blocker / "rep", title="t")
    assert main(["analyze", "coin", "--no-sample", "--out", str(blocker / "rep")]) == 2
    err = capsys.readouterr().err
    assert "ReportWriteError" in err and "Traceback" not in err
    folder = tmp_path / "read-only"
    folder.mkdir()
    monkeypatch.setattr(_io.os, "access", lambda *a, **k: False)  # as if chmod a-w (root ignores permissions)
    with pytest.raises(sj.ReportWriteError, match="not writable"):
        Report(folder, title="t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "read-only"] and not list(folder.iterdir())


# ------------------------------------------------------------------------- the command line
def test_cli_sample_bad_prompts(capsys):
    cases = [("0,5", "UnknownTokenError"), ("a,b", "PromptError"), (",", "PromptError"),
             ("0,1,0,1,0,1,0,1,0", "PromptError")]  # coin has L = 8
    for prompt, error in cases:
        assert main(["sample", "coin", "--prompt", prompt, "--steps", "2"]) == 2, prompt
        err = capsys.readouterr().err
        assert error in err and "Traceback" not in err, (prompt, err)


@pytest.mark.parametrize("argv, message", [
    (["check", "coin", "--chains", "1"], "at least 2"),
    (["check", "coin", "--steps", "0"], "at least 1"),
    (["check", "coin", "--level", "1.5"], "lies in (0, 1)"),
    (["check", "coin", "--level", "x"], "not a number"),
    (["analyze", "coin", "--length", "0"], "at least 1"),
    (["sample", "coin", "--chains", "-3"], "at least 1"),
    (["analyze", "coin", "--seed", "-1"], "at least 0"),
])
def test_cli_rejects_out_of_range_options(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_cli_length_beyond_the_model(tmp_path, capsys):
    assert main(["analyze", "coin", "--length", "9", "--no-sample", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "SpaceMismatchError" in err and "choose L <= 8" in err


def test_catalogue_names_existing_tests():
    """Every entry of docs/bad_inputs.md names a test function that exists."""
    import ast
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    text = (root / "docs" / "bad_inputs.md").read_text()
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text)
    assert len(named) >= 40
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| bad input")]
    assert all(re.search(r"`tests/[\w/]+\.py::\w+`", ln) for ln in rows), "a catalogue row without a test"
    for path, name in named:
        tree = ast.parse((root / path).read_text())
        functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert name in functions, f"{path}::{name} does not exist"
