"""app/pipeline.py and the report folder: results.json agrees with arrays.npz; prompts, targets, refusal to overwrite."""

from __future__ import annotations

import json

import numpy as np
import pytest

import semio_jax as sj
from semio_jax.app.cli import main
from semio_jax.app.pipeline import MEMBERS_INLINE, analyze, prompt_state, target_states
from semio_jax.app.report import Report


@pytest.fixture(scope="module")
def dyck_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "dyck"
    assert main(["analyze", "dyck", "-p", "top_p=0.5", "-p", "temperature=1", "--prompt", "0", "--prompt", "2,1",
                 "--prompt", "000111", "--target", "01", "--no-sample", "--out", str(out)]) == 0
    return out, json.loads((out / "results.json").read_text()), dict(np.load(out / "arrays.npz"))


def _stationary_row(arrays, tag, a, num_states):
    if f"{tag}/stationary" in arrays:
        return arrays[f"{tag}/stationary"][a]
    off = arrays[f"{tag}/stationary_offsets"]
    row = np.zeros(num_states)
    row[arrays[f"{tag}/stationary_states"][off[a]:off[a + 1]]] = arrays[f"{tag}/stationary_values"][off[a]:off[a + 1]]
    return row


@pytest.mark.parametrize("spec", ["top_p=0.5", "temperature=1"])
def test_results_json_fields_agree_with_the_npz(dyck_report, spec):
    _out, results, arrays = dyck_report
    res = results[f"dyck_{spec.replace('=', '')}"]
    tag = res["npz_prefix"]
    space = sj.StateSpace(res["n_tokens"], res["context_length"], prefixes=res["prefixes"])
    probs = arrays[f"{tag}/probs"]
    assert probs.shape == (space.num_states, space.n_tokens)
    attractor_of = arrays[f"{tag}/attractor_of"]
    members_all = arrays[f"{tag}/attractor_members"]
    assert len(res["attractors"]) == attractor_of.max() + 1
    succ = space.successor_table()
    for a, entry in enumerate(res["attractors"]):
        members = np.flatnonzero(attractor_of == a)
        assert entry["size"] == members.size
        lo, hi = entry["members_npz"]["slice"]
        assert entry["members_npz"]["key"] == f"{tag}/attractor_members"
        np.testing.assert_array_equal(np.sort(members_all[lo:hi]), members)
        if members.size <= MEMBERS_INLINE:
            assert sorted(entry["members"]) == members.tolist()
            assert entry["member_labels"] == [space.label(s) for s in entry["members"]]
        # closed under the npz operator, and the period from the npz: gcd of cycle lengths via BFS levels
        reach = succ[members][probs[members] > 0]
        assert np.isin(reach, members).all()
        level = {int(members[0]): 0}
        frontier = [int(members[0])]
        g = 0
        while frontier:
            nxt = []
            for s in frontier:
                for t in succ[s][probs[s] > 0]:
                    t = int(t)
                    if t in level:
                        g = np.gcd(g, level[s] + 1 - level[t])
                    else:
                        level[t] = level[s] + 1
                        nxt.append(t)
            frontier = nxt
        assert entry["period"] == g
        # stationary top states: the largest entries of the npz law, with its values
        pi = _stationary_row(arrays, tag, a, space.num_states)
        top = res["stationary_top_states"][a]
        assert [t["pi"] for t in top] == pytest.approx(np.sort(pi)[::-1][:len(top)].tolist(), abs=1e-15)
        for t in top:
            assert pi[t["state"]] == t["pi"] and t["label"] == space.label(t["state"])
        # certificate: the reported residual ||pi P - pi||_1 is that of the npz law under the npz operator
        push = np.zeros(space.num_states)
        np.add.at(push, succ.ravel(), (pi[:, None] * probs).ravel())
        cert = res["certificates"]["stationary"][a]
        assert abs(np.abs(push - pi).sum() - cert["residual_l1"]) <= 1e-13
        assert cert == {k: res["stationary"][a][k] for k in ("attractor", "method", "residual_l1", "error_bound_l1")}
    # the basin table from the prompts: rows of the npz basins at the prompts' states
    rows = res["basins_from_prompts"]["rows"]
    assert [r["label"] for r in rows] == ["0", "21", "000111"]
    basins = arrays[f"{tag}/basins"]
    for r, toks in zip(rows, ([0], [2, 1], [0, 0, 0, 1, 1, 1])):
        assert r["state"] == space.index(toks)
        np.testing.assert_array_equal(basins[r["state"]], r["P"])
    # hitting times of the target "01" from each prompt: one-step equation on the npz operator
    hit = res["hitting_target"]
    tgt = target_states(space, [0, 1])
    assert hit["n_target_states"] == tgt.size
    for r in hit["from"]:
        s = r["state"]
        if s in set(tgt.tolist()):
            assert r["expected_steps"] == 0.0
    # greedy cycles: walking the npz greedy map from a cycle's first state writes its cycles_text
    gmap = arrays[f"{tag}/greedy_map"]
    for states, text in zip(res["greedy"]["cycles_preview"], res["greedy"]["cycles_text"]):
        s = space.index([int(c) for c in states[0]])
        written = ""
        for _ in range(len(states)):
            written += str(space.tokens(s)[-1])
            s = int(gmap[s])
        assert written == text and s == space.index([int(c) for c in states[0]])
    assert res["certificates"]["operator_max_row_error"] == pytest.approx(np.abs(probs.sum(axis=1) - 1).max(), abs=1e-15)


def test_target_states_are_the_states_ending_with_the_target():
    space = sj.StateSpace(3, 3)
    got = target_states(space, [2, 0])
    want = [s for s in range(space.num_states) if list(space.tokens(s)[-2:]) == [2, 0]]
    assert got.tolist() == want
    assert target_states(space, [1, 2, 0]).tolist() == [space.index([1, 2, 0])]
    assert prompt_state(space, [0, 1, 2, 0]) == space.index([1, 2, 0])  # the window sees the last L tokens
    with pytest.raises(sj.PromptError):
        target_states(space, [0, 0, 0, 0])
    with pytest.raises(sj.PromptError):
        prompt_state(sj.StateSpace(3, 3, prefixes=False), [1])


def test_hitting_time_from_prompt_solves_the_first_step_equation(dyck_report):
    """E[tau | s] = 0 on the target, 1 + sum_y P(s, y) E[tau | succ(s, y)] elsewhere, from the npz alone."""
    _out, results, arrays = dyck_report
    res = results["dyck_top_p0.5"]
    space = sj.StateSpace(3, 6)
    probs, succ = arrays["dyck_top_p0.5/probs"], space.successor_table()
    tgt = np.zeros(space.num_states, bool)
    tgt[target_states(space, [0, 1])] = True
    free = np.flatnonzero(~tgt)
    idx = {int(s): i for i, s in enumerate(free)}
    a = np.eye(free.size)
    for i, s in enumerate(free):
        for y in range(3):
            t = int(succ[s, y])
            if not tgt[t] and probs[s, y] > 0:
                a[i, idx[t]] -= probs[s, y]
    times = np.linalg.solve(a, np.ones(free.size))
    for r in res["hitting_target"]["from"]:
        want = 0.0 if tgt[r["state"]] else times[idx[r["state"]]]
        assert r["expected_steps"] == pytest.approx(want, rel=1e-9)


def test_a_report_folder_is_never_silently_overwritten(tmp_path):
    out = tmp_path / "r"
    assert main(["analyze", "dyck", "-p", "top_p=0.5", "--no-sample", "--out", str(out)]) == 0
    first = (out / "results.json").read_text()
    stale = out / "dyck_top_p0.5_basins.png"
    assert stale.exists()
    (out / "notes.txt").write_text("mine")
    assert main(["analyze", "dyck", "-p", "greedy", "--no-sample", "--out", str(out)]) == 2  # refused
    assert (out / "results.json").read_text() == first
    assert main(["analyze", "dyck", "-p", "greedy", "--no-sample", "--out", str(out), "--force"]) == 0
    assert not stale.exists()  # no figure of the earlier run survives
    assert (out / "notes.txt").read_text() == "mine"  # files that are not the report's are left alone
    assert set(json.loads((out / "results.json").read_text())) == {"dyck_greedy", "provenance"}
    with pytest.raises(sj.ReportWriteError):
        Report(out, "t")


def test_progress_announces_long_steps_on_stderr_only_when_asked(capsys):
    model = sj.NGramModel(np.log(np.array([[0.9, 0.1], [0.2, 0.8]])))
    model.context_length = 3
    analyze(model, "temperature=1", sample=False, echo=lambda s: None)
    assert capsys.readouterr().err == ""
    analyze(model, "temperature=1", sample=False, echo=lambda s: None, progress=True)
    err = capsys.readouterr().err
    assert "stationary laws" in err and "done in" in err
