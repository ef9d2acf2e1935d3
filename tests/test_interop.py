"""semio export / semio query (semio_jax.app.interop): every export read back by Storm gives semio_jax's numbers."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import semio_jax as sj
from semio_jax.app import interop
from semio_jax.agreement import absorption_by_horizon
from semio_jax.app.cli import main

TOL = 1e-9


@pytest.fixture(scope="module")
def ops():
    rng = np.random.default_rng(11)
    ergodic = sj.build_operator(sj.NGramModel(rng.normal(scale=1.5, size=(3, 3, 3))), sj.StateSpace(3, 4),
                                "temperature=0.9")
    t = np.full((5, 5), -np.inf)  # {0,1} -> {0,1}, {2,3} -> {2,3}, 4 -> anything: two attractors
    t[0, :2], t[1, :2], t[2, 2:4], t[3, 2:4] = [0.3, -0.2], [-0.5, 0.4], [0.1, 0.0], [0.6, -0.3]
    t[4] = [1.0, -0.5, 0.8, 0.2, 0.5]
    split = sj.build_operator(sj.NGramModel(t), sj.StateSpace(5, 3), "top_k=3")
    assert len(sj.attractors(ergodic)) == 1 and len(sj.attractors(split)) == 2
    return ergodic, split


def test_npz_export_holds_the_exact_chain(tmp_path, ops):
    for op in ops:
        path = tmp_path / "chain.npz"
        assert interop.export_chain(op, path, "npz") == [str(path)]
        z = np.load(path, allow_pickle=False)
        assert np.array_equal(z["probs"], op.probs) and np.array_equal(z["successors"], op.successors)
        csr = op.csr
        assert np.array_equal(z["csr_data"], csr.data) and np.array_equal(z["csr_indices"], csr.indices)
        assert np.array_equal(z["initial"], np.arange(op.space.group(1).start, op.space.group(1).stop))
        for a, members in enumerate(sj.attractors(op)):
            assert set(np.flatnonzero(z["attractor_of"] == a)) == set(members.tolist())
        meta = json.loads(str(z["meta"]))
        assert meta["fingerprint"] == op.fingerprint and meta["procedure"] == op.procedure.spec
        back = sj.Operator(op.space, z["probs"])  # the arrays define the same chain
        np.testing.assert_array_equal(sj.stationary(back), sj.stationary(op))


def test_prism_text_format(ops):
    tra, lab = interop.prism_texts(ops[1], initial=[7])
    assert tra.splitlines()[0] == "dtmc"
    assert len(tra.splitlines()) == 1 + int((ops[1].probs > 0).sum())
    lines = lab.splitlines()
    assert lines[0] == "#DECLARATION" and lines[2] == "#END"
    assert lines[1].split()[0] == "init" and {"attractor_0", "attractor_1", "last_token_4"} <= set(lines[1].split())
    assert "7 init last_token_2" in lines


@pytest.mark.storm
def test_storm_reads_every_export_with_the_same_numbers(tmp_path, ops):
    stormpy = pytest.importorskip("stormpy")
    env = stormpy.Environment()
    env.solver().set_linear_equation_solver_type(stormpy.environments.EquationSolverType.EIGEN)
    env.solver().force_soundness = True  # Eigen SparseLU (see test_storm.py)
    ergodic, split = ops

    def load(op, fmt, initial=None):
        paths = interop.export_chain(op, tmp_path / f"chain_{fmt}", fmt, initial=initial)
        model = (stormpy.build_model_from_drn(paths[0]) if fmt == "drn"
                 else stormpy.build_model_from_explicit(paths[0], paths[1]))
        assert model.nr_states == op.num_states and model.nr_transitions == int((op.probs > 0).sum())
        return model

    for fmt in ("drn", "prism"):
        model = load(ergodic, fmt, initial=[ergodic.space.index([0])])
        pi = np.array(stormpy.analysis.compute_steady_state_distribution(model, environment=env).get_value_vector())
        assert np.abs(pi - sj.stationary(ergodic)[0]).sum() <= TOL
        model = load(split, fmt)
        assert set(model.labeling.get_states("init")) == set(split.space.group(1))
        assert set(model.labeling.get_states("last_token_4")) == {s for s in range(split.num_states)
                                                                  if split.space.tokens(s)[-1] == 4}
        h = sj.basins(split)
        for a in range(2):
            assert set(model.labeling.get_states(f"attractor_{a}")) == set(sj.attractors(split)[a].tolist())
            res = interop.check_property(split, f'P=? [F "attractor_{a}"]', model=model)[0]["values"]
            assert np.abs(res - h[:, a]).max() <= TOL
            bounded = interop.check_property(split, f'P=? [F<=5 "attractor_{a}"]', model=model)[0]["values"]
            for s in split.space.group(1):
                assert abs(bounded[s] - absorption_by_horizon(split, s, 5)[a]) <= TOL


@pytest.mark.storm
def test_cli_export_and_query_on_a_zoo_model(tmp_path, capsys):
    pytest.importorskip("stormpy")
    from semio_models.checkpoint import load

    assert main(["export", "dyck", "-p", "top_p=0.5", "--format", "drn", "--out", str(tmp_path / "d.drn")]) == 0
    assert main(["export", "dyck", "-p", "top_p=0.5", "--format", "prism", "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "1092 states" in out and "3 attractor(s)" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.drn", "d.lab", "d.tra"]
    assert main(["query", "dyck", "-p", "top_p=0.5", 'P=? [F<=20 "attractor_0"]']) == 0
    out = capsys.readouterr().out
    model = load("dyck")
    op = sj.build_operator(model, sj.StateSpace(3, 6), "top_p=0.5")
    rows = [ln.split() for ln in out.splitlines() if ln.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["0", "1", "2"]  # default initial states: the one-token prompts
    for tok, value in rows:
        assert abs(float(value) - absorption_by_horizon(op, op.space.index([int(tok)]), 20)[0]) < 5e-7
    assert main(["query", "dyck", "-p", "top_p=0.5", 'P>=0.5 [F "attractor_2"]; LRA=? ["last_token_1"]',
                 "--state", "2", "--state", "0,1,2"]) == 0
    out = capsys.readouterr().out
    assert "P>=1/2" in out and "LRA=?" in out and "012" in out


@pytest.mark.storm
def test_query_errors(tmp_path, capsys, monkeypatch):
    pytest.importorskip("stormpy")
    small = ["--length", "3"]  # 14 states: quick to build
    assert main(["query", "coin", "P=? [F<=3 ", *small]) == 2
    assert "PropertyError" in capsys.readouterr().err
    assert main(["query", "coin", 'P=? [F "attractor_7"]', *small]) == 2
    err = capsys.readouterr().err
    assert "attractor_7" in err and "attractor_0" in err
    assert main(["query", "coin", 'R=? [F "attractor_0"]', *small]) == 2
    assert "reward" in capsys.readouterr().err
    assert main(["query", "coin", 'P=? [F "attractor_0"]', "--state", "0,9", *small]) == 2
    assert "UnknownTokenError" in capsys.readouterr().err


def test_query_without_stormpy_says_how_to_install_it(monkeypatch, capsys, ops):
    monkeypatch.setitem(sys.modules, "stormpy", None)  # import stormpy now raises ImportError
    with pytest.raises(sj.MissingDependencyError, match="pip install stormpy"):
        interop.check_property(ops[0], 'P=? [F "attractor_0"]')
    assert main(["query", "coin", 'P=? [F "attractor_0"]', "--length", "3"]) == 2
    err = capsys.readouterr().err
    assert "MissingDependencyError" in err and "pip install -e '.[storm]'" in err


def test_export_errors_leave_nothing_behind(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["export", "coin", "--length", "3", "--format", "prism", "--out", str(blocker / "sub" / "chain")]) == 2
    assert "ReportWriteError" in capsys.readouterr().err
    assert main(["export", "coin", "-p", "top_k=3", "--out", str(tmp_path / "c.drn")]) == 2
    assert "InvalidProcedureError" in capsys.readouterr().err
    assert main(["export", "coin", "--length", "9", "--out", str(tmp_path / "c.drn")]) == 2
    assert "SpaceMismatchError" in capsys.readouterr().err
    assert main(["export", "coin", "--state", "0,1,0,1,0,1,0,1,0", "--out", str(tmp_path / "c.drn")]) == 2
    assert "PromptError" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
