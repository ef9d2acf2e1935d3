"""The semio command end to end: exit codes, report folder contents, named errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import semio_jax as sj
from semio_jax.app.cli import load_model, main


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


def test_sample_reads_prompts_as_it_prints_them(capsys):
    assert main(["sample", "coin", "--prompt", "01", "--steps", "6", "--chains", "2", "--seed", "1"]) == 0
    digits = capsys.readouterr().out
    assert main(["sample", "coin", "--prompt", "0,1", "--steps", "6", "--chains", "2", "--seed", "1"]) == 0
    assert capsys.readouterr().out == digits  # `01` is the two tokens 0, 1, as printed
    assert "prompt 01," in digits and "  chain 0: 01 | " in digits


NUMPY_MODEL = '''
import numpy as np
import semio_jax as sj

TABLE = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]))


def bigram(contexts):  # plain numpy: np.asarray of a jax tracer would fail under jit
    c = np.asarray(contexts)
    return TABLE[c[:, -1]]


def window(contexts):  # reads position 2: only full-length (L = 3) contexts work
    c = np.asarray(contexts)
    return TABLE[(c[:, 0] + c[:, 2]) % 3]


model = sj.FunctionModel(bigram, n_tokens=3, context_length=3)
full_only = sj.FunctionModel(window, n_tokens=3, context_length=3)
'''


def test_a_numpy_model_file_runs_without_flags(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "mymodel.py").write_text(NUMPY_MODEL)
    out = tmp_path / "rep"
    assert main(["analyze", f"{src / 'mymodel.py'}", "-p", "temperature=1", "--chains", "8", "--steps", "200",
                 "--basin-chains", "50", "--out", str(out)]) == 0
    probs = np.load(out / "arrays.npz")["mymodel_temperature1/probs"]
    space_tokens = [[t] for t in range(3)]  # one-token prefix states sit after the 27 full states
    want = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    np.testing.assert_allclose(probs[:27], np.tile(want, (9, 1)), rtol=1e-6)  # full state s ends with token s % 3
    np.testing.assert_allclose(probs[27:30], want[[t[0] for t in space_tokens]], rtol=1e-6)
    assert sorted(p.name for p in src.iterdir()) == ["mymodel.py"]  # nothing written beside the user's file
    capsys.readouterr()
    assert main(["analyze", f"{src / 'mymodel.py'}:full_only", "--no-sample", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "PrefixContextError" in err and "--no-prefixes" in err and "Traceback" not in err
    assert main(["analyze", f"{src / 'mymodel.py'}:full_only", "--no-prefixes", "--no-sample",
                 "--out", str(tmp_path / "b")]) == 0
    probs = np.load(tmp_path / "b" / "arrays.npz")["mymodel_temperature1/probs"]
    assert probs.shape == (27, 3)
    s = 5  # tokens 0, 1, 2: row (0 + 2) % 3 = 2
    np.testing.assert_allclose(probs[s], want[2], rtol=1e-6)


def test_sweep_matches_separate_builds(tmp_path, capsys):
    out = tmp_path / "sw"
    assert main(["sweep", "dyck", "--param", "top_p=0.3,0.9", "--out", str(out)]) == 0
    points = json.loads((out / "results.json").read_text())["sweep"]["points"]
    model = load_model("dyck")
    space = sj.StateSpace(3, 6)
    for point, spec in zip(points, ("top_p=0.3", "top_p=0.9")):
        cs = sj.class_structure(sj.build_operator(model, space, spec))
        assert point["n_attractors"] == len(cs.attractors)
        assert sorted(point["attractor_sizes"]) == sorted(int(a.size) for a in cs.attractors)
    assert "top_p" in capsys.readouterr().out
    assert main(["sweep", "dyck", "--param", "top_p=0,0.5"]) == 2
    assert main(["sweep", "dyck", "--param", "beam=2"]) == 2


def test_several_procedures_are_compared_side_by_side(tmp_path, capsys):
    assert main(["analyze", "coin", "-p", "temperature=1", "-p", "greedy", "--no-sample",
                 "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    table = out[out.index("procedures side by side"):]
    assert "temperature=1" in table and "greedy" in table
    assert "Procedures side by side" in (tmp_path / "c" / "report.md").read_text()


# the child is started through fork + exec, with only SIGINT's disposition reset in between (preexec_fn):
# nothing runs in the forked copy of this multithreaded process, so JAX's warning does not apply
@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")
def test_ctrl_c_exits_130_in_one_line_and_keeps_finished_procedures(tmp_path):
    out = tmp_path / "int"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "semio_jax.app.cli", "analyze", "markov2", "-p", "greedy", "-p", "temperature=1",
           "-p", "temperature=0.5", "-p", "temperature=2", "-p", "top_k=2", "-p", "top_k=3",
           "--out", str(out)]  # each sampled procedure after the first takes many seconds: time to interrupt
    # the child starts with SIGINT's default disposition even where this test runs with it ignored
    # (a background job): the CLI, like Python, leaves an ignored SIGINT ignored
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    results = out / "results.json"
    for _ in range(1200):  # until the first procedure is written (at most 10 minutes)
        if results.exists() or proc.poll() is not None:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("semio: interrupted")
    assert len([ln for ln in stderr.splitlines() if "interrupted" in ln]) == 1
    kept = json.loads(results.read_text())
    assert "markov2_greedy" in kept and kept["provenance"]["finished"][0] == "greedy"
    assert len(kept) - 1 == len(kept["provenance"]["finished"]) < 6
    assert (out / "report.md").exists() and np.load(out / "arrays.npz")["markov2_greedy/probs"].shape == (1364, 4)


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


def test_a_swallowed_ctrl_c_still_stops_at_the_next_procedure(tmp_path, monkeypatch, capsys):
    # A KeyboardInterrupt raised inside a finalizer is dropped by Python; the SIGINT handler's flag
    # stops the run after the procedure in progress all the same (exit 130, finished ones kept).
    import semio_jax.app.cli as cli
    import semio_jax.app.pipeline as pipeline

    real = pipeline.analyze

    def analyze_then_swallowed_ctrl_c(*a, **k):
        out = real(*a, **k)
        cli._CTRL_C.append(2)  # what the handler records before its KeyboardInterrupt was lost
        return out

    monkeypatch.setattr(pipeline, "analyze", analyze_then_swallowed_ctrl_c)
    before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "sw"
    code = main(["analyze", "coin", "-p", "greedy", "-p", "temperature=1", "--no-sample", "--out", str(out)])
    assert code == 130
    kept = json.loads((out / "results.json").read_text())
    assert kept["provenance"]["finished"] == ["greedy"]
    assert "semio: interrupted; 1 finished procedure(s) kept" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) == before  # the previous handler is put back


def test_ctrl_c_inside_a_finalizer_prints_nothing_and_still_interrupts(capsys):
    """A Ctrl-C whose KeyboardInterrupt is raised inside a finalizer (here a __del__; in a run, JAX's
    garbage-collection callback) cannot propagate: Python would print "Exception ignored in" and a
    traceback, and go on. The CLI's hook prints nothing and delivers the interrupt again."""
    from semio_jax.app import cli

    class Finalized:
        def __del__(self):
            raise KeyboardInterrupt

    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = cli._quiet_ctrl_c(previous_hook)
    try:
        with pytest.raises(KeyboardInterrupt):
            obj = Finalized()
            del obj
            for _ in range(2000):  # the interrupt delivered again lands here, in ordinary code
                time.sleep(0.001)
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGINT, previous_handler)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Exception ignored" not in err


def test_a_ctrl_c_dropped_in_a_finalizer_is_not_delivered_again_after_main_returns(monkeypatch, capsys):
    """The hook's re-delivery must not outlive the run: when the handler's flag stops the run first (the
    dropped Ctrl-C came just before a check between procedures), main returns 130 and no KeyboardInterrupt
    reaches its caller afterwards (at exit it printed "Exception ignored in: <module 'threading'>" and a
    traceback)."""
    from semio_jax.app import cli

    class Finalized:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)  # a Ctrl-C whose KeyboardInterrupt lands in this finalizer
            for _ in range(100):
                pass

    def run_then_check():
        obj = Finalized()
        del obj
        cli._stop_if_interrupted()  # the check between procedures: the handler's flag is set
        return 0

    monkeypatch.setattr(cli, "_run_zoo", run_then_check)
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stray = False
    try:
        assert main(["zoo"]) == 130
        try:
            for _ in range(200):
                time.sleep(0.001)
        except KeyboardInterrupt:
            stray = True
    finally:
        signal.signal(signal.SIGINT, before)
    assert not stray, "a KeyboardInterrupt arrived after main() had returned"
    assert "Traceback" not in capsys.readouterr().err
